package relay

import "testing"

// A SEND relayed from A to B, with both 200s, allocates at most 2 times in
// the whole process (the forwarded transaction: its struct and its
// strings), traced or not, with or without wire bytes: the frame path itself allocates nothing.
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
		if n := testing.AllocsPerRun(500, func() { p.one(t) }); n > 2 {
			t.Errorf("frames %v, wire %v: %.2f allocations per relayed SEND, want at most 2", c.frames, c.wire, n)
		}
	}
}
