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
	p := newBenchPair(t, true, func(r *Relay, e *event.Event) {
		if e.Kind != event.FrameOut {
			return
		}
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
	// (queued; its writer reports it after the write, so A may have read
	// the last one before: wait for the report).
	for deadline := time.Now().Add(10 * time.Second); outs.Load() < 2*n && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // polling a counter, not ordering events
	}
	if outs.Load() < 2*n {
		t.Fatalf("%d frame-out events, want at least %d", outs.Load(), 2*n)
	}
	if locked.Load() != 0 {
		t.Fatalf("%d of %d frame-out events observed while the connection's write lock was held", locked.Load(), outs.Load())
	}
}
