//go:build race

package relay

// raceEnabled: the race detector is on (allocation counts differ; recycled
// transactions are poisoned, txn.release).
const raceEnabled = true
