//go:build race

package pcapsink

const raceEnabled = true
