package hep

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A batch filled while the socket is busy goes to the writer, which sends it
// once the socket is free; batches beyond the queue's bound are dropped and
// counted, never lost silently.
func TestClientUDPBatchHandOffAndBound(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	const queue = 2 * udpBatch // room for two full batches at the writer
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, QueueSize: queue, Linger: time.Hour})
	q := c.uq
	waitFor(t, "the writer's socket", func() bool {
		q.send.Lock()
		defer q.send.Unlock()
		return q.conn != nil
	})
	q.send.Lock() // as if a batch were being written: nobody else can send
	const batches = 5
	n := 0
	for b := range batches {
		for i := range udpBatch {
			if !c.Send(testPacket(t, fmt.Sprintf("b%d-%d", b, i), 20)) {
				q.send.Unlock()
				t.Fatalf("packet %d of batch %d refused", i, b)
			}
			n++
		}
		if b == 0 {
			// The writer takes the first batch and waits for the socket with it.
			waitFor(t, "the writer taking a batch", func() bool { return len(q.full) == 0 })
		}
	}
	// Two more batches wait for the writer, the other two did not fit and were dropped.
	st := c.Stats()
	q.send.Unlock()
	const kept = queue + udpBatch
	if want := uint64(batches*udpBatch - kept); st.Dropped != want || st.Queued != kept {
		t.Fatalf("with the socket busy: %+v, want %d dropped and %d queued", st, want, kept)
	}
	waitFor(t, "the queued batches at the collector", func() bool { return len(col.packets()) == kept })
	waitFor(t, "the sent counter", func() bool { return c.Stats().Sent == kept })
	for b := range kept / udpBatch {
		for i := range udpBatch {
			if cid := fmt.Sprintf("b%d-%d", b, i); !col.has(cid) {
				t.Fatalf("packet %s missing", cid)
			}
		}
	}
	if st := c.Stats(); st.Sent+st.Dropped != uint64(n) || st.Queued != 0 || st.Errors != 0 {
		t.Fatalf("stats %+v after %d sends", st, n)
	}
}

// A batch that never fills leaves once its first packet has waited Linger.
func TestClientUDPLingerSendsPartialBatch(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: 5 * time.Millisecond})
	for round := range 3 {
		for i := range 3 {
			if !c.Send(testPacket(t, fmt.Sprintf("r%d-%d", round, i), 20)) {
				t.Fatal("refused")
			}
		}
		waitFor(t, "a partial batch", func() bool { return len(col.packets()) == 3*(round+1) })
	}
	// The collector can have a batch before the writer has counted it sent.
	waitFor(t, "the sent counter", func() bool { return c.Stats().Sent == 9 })
	if st := c.Stats(); st.Sent != 9 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Producers on several goroutines racing Close: every packet is counted
// exactly once, as sent or dropped, and none stays queued.
func TestClientUDPCloseAccounting(t *testing.T) {
	for round := range 20 {
		col := newCollector(t, "udp", "", nil)
		c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Millisecond, QueueSize: 256})
		const producers, per = 4, 300
		pkt := testPacket(t, "race", 40)
		var (
			wg    sync.WaitGroup
			tried atomic.Int64
		)
		for range producers {
			wg.Go(func() {
				for range per {
					c.Send(pkt)
					tried.Add(1)
				}
			})
		}
		for tried.Load() < int64(round*producers*per/20) {
			runtime.Gosched() // Close at a different point of the load each round
		}
		c.Close()
		wg.Wait()
		st := c.Stats()
		if st.Sent+st.Dropped != producers*per || st.Queued != 0 {
			t.Fatalf("round %d: stats %+v: sent+dropped != %d", round, st, producers*per)
		}
	}
}
