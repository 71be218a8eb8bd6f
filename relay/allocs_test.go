package relay

import (
	"runtime"
	"testing"
)

// A SEND relayed from A to B, with both 200s, allocates nothing in the
// whole process (the forwarded transaction is pooled), traced or not, with
// or without wire bytes, one at a time and 64 in flight.
func TestRelaySENDAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race; run without it")
	}
	for _, c := range []struct{ frames, wire bool }{{false, false}, {true, true}, {true, false}} {
		p := newBenchPair(t, c.frames, nil)
		p.obs.noWire.Store(!c.wire)
		for range 100 { // warm the pools and buffers
			p.one(t)
		}
		if n := testing.AllocsPerRun(500, func() { p.one(t); p.settle() }); n > 0 {
			t.Errorf("frames %v, wire %v: %.2f allocations per relayed SEND, want 0", c.frames, c.wire, n)
		}
		for range 10 {
			p.burst(t, 64)
		}
		// Per burst of 64: AllocsPerRun's integer mean would hide up to 63.
		if n := testing.AllocsPerRun(50, func() { p.burst(t, 64); p.settle() }); n > 0 {
			t.Errorf("frames %v, wire %v, 64 in flight: %.2f allocations per 64 relayed SENDs, want 0", c.frames, c.wire, n)
		}
	}
}

// settle waits until the relay has taken B's 200s in: A's 200 is the
// relay's own (hop by hop) and can come first, and on a busy machine the
// relay's read of B can lag, so without this the transactions pending (and
// recycled objects needed) would grow with the machine's load, not with
// the SENDs in flight. Reading the table's size allocates nothing.
func (p *benchPair) settle() {
	for p.r.txns.len() > 0 {
		runtime.Gosched()
	}
}
