package relay

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// The Observer is called after the destination's write lock is released
// (forwarded frames and queued ones alike), so its filters and encoding do
// not lengthen the wait of every goroutine writing to that connection.
func TestObserveOutsideWriteLock(t *testing.T) {
	var outs, locked atomic.Int64
	seen := make(chan struct{}, 1<<10)
	p := newBenchPair(t, true, func(r *Relay, e *event.Event) {
		if e.Kind != event.FrameOut {
			return
		}
		defer func() { seen <- struct{}{} }()
		outs.Add(1)
		r.mu.Lock()
		c := r.conns[e.Conn.ID]
		r.mu.Unlock()
		if c == nil {
			t.Errorf("frame out on unknown connection %d", e.Conn.ID)
			return
		}
		if !c.wmu.TryLock() {
			locked.Add(1)
			return
		}
		c.wmu.Unlock()
	})
	const n = 20
	for range n {
		p.one(t)
	}
	// Each SEND: its copy out to B (forwarded) and the 200 out to A
	// (queued). A frame is observed after it was written, so the last 200
	// can reach A before its event: wait for the events, bounded.
	deadline := time.After(20 * time.Second)
	for outs.Load() < 2*n {
		select {
		case <-seen:
		case <-deadline:
			t.Fatalf("%d frame-out events, want at least %d", outs.Load(), 2*n)
		}
	}
	if locked.Load() != 0 {
		t.Fatalf("%d of %d frame-out events observed while the connection's write lock was held", locked.Load(), outs.Load())
	}
}
