//go:build !race

package main

import "testing"

// Tracing adds no allocation per relayed frame: with every frame traced
// (the embedded default; HEP over UDP) the process allocates per SEND what
// it does with tracing off, within a small tolerance for background work
// (the metrics, timers).
func TestTracingAllocsPerSEND(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three relays")
	}
	const n = 4000
	off := allocsPerSEND(t, startTraced(t, traceOff), n)
	for _, m := range []struct {
		name string
		mode traceMode
	}{{"default", traceDefault}, {"hep-udp", traceHEPUDP}} {
		got := allocsPerSEND(t, startTraced(t, m.mode), n)
		perFrame := (got - off) / framesPerSEND
		t.Logf("%s: %.3f allocs per SEND, off %.3f: tracing adds %.3f per frame", m.name, got, off, perFrame)
		if perFrame > 0.01 {
			t.Errorf("%s: tracing adds %.3f allocations per frame (%.3f per SEND traced, %.3f off), want 0", m.name, perFrame, got, off)
		}
	}
}
