package metrics

import (
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// The per-frame path must not allocate: each event kind, fed through the
// Observer, allocates nothing (CI runs this without -race: -run Alloc).
func TestObserveAlloc(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(t.Context())
	o := m.Observer()
	c1, c3 := conn(1, "msrp", event.DirIn), conn(3, "msrps", event.DirOut)
	events := map[string][]*event.Event{
		"relayed SEND and its 200": {
			frame(event.FrameIn, c1, 0, "SEND", "s1", "m1", 0, 1000),
			paired(frame(event.FrameOut, c3, time.Millisecond, "SEND", "x1", "m1", 0, 1100), 0, ""),
			paired(frame(event.FrameIn, c3, 2*time.Millisecond, "", "x1", "", 200, 40), time.Millisecond, "SEND"),
			answers(frame(event.FrameOut, c1, 3*time.Millisecond, "", "s1", "", 200, 40), "SEND"),
		},
		"AUTH": {
			frame(event.FrameIn, c1, 0, "AUTH", "a1", "", 0, 200),
			answers(frame(event.FrameOut, c1, time.Millisecond, "", "a1", "", 401, 300), "AUTH"),
		},
		"unknown method": {frame(event.FrameIn, c1, 0, "FOO", "f", "m", 0, 1)},
		"connection life": {
			{Kind: event.Accepted, Conn: c1},
			{Kind: event.TLSHandshake, Conn: c1, TLS: &event.TLSInfo{OK: true}},
			{Kind: event.Closed, Conn: c1, Reason: event.CloseHeaderTimeout},
			{Kind: event.ConnectFailed, Conn: c3},
		},
	}
	for name, evs := range events {
		// Warm up: the SDK creates each attribute set's aggregator once.
		for _, e := range evs {
			o.Observe(e)
		}
		if n := testing.AllocsPerRun(200, func() {
			for _, e := range evs {
				o.Observe(e)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

// BenchmarkObserve is one relayed SEND: its frame in, the forwarded copy
// out, the next hop's 200 in and the 200 out (4 frames per op).
func BenchmarkObserve(b *testing.B) {
	m, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(b.Context())
	o := m.Observer()
	c1, c3 := conn(1, "msrp", event.DirIn), conn(3, "msrp", event.DirOut)
	evs := []*event.Event{
		frame(event.FrameIn, c1, 0, "SEND", "s1", "m1", 0, 1000),
		frame(event.FrameOut, c3, time.Millisecond, "SEND", "x1", "m1", 0, 1100),
		frame(event.FrameIn, c3, 2*time.Millisecond, "", "x1", "", 200, 40),
		frame(event.FrameOut, c1, 3*time.Millisecond, "", "s1", "", 200, 40),
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, e := range evs {
			o.Observe(e)
		}
	}
}
