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
// counted, never lost silently. One shard (udpWait): the writer's look at
// the shards (newestGen, on the first packet's kick) may otherwise send a
// producer to a second shard, and the batches would not fill in step with
// the sends this test counts.
func TestClientUDPBatchHandOffAndBound(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	const queue = 2 * udpBatch // room for two full batches at the writer
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, QueueSize: queue, Linger: time.Hour, udpWait: true})
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

// Producers wait on a batch's lock only as a last resort: with some shards
// held (their holders preempted) packets go to the others; with every
// shard held a packet waits for one (counted as busy), and is not dropped.
// Batches left in several shards all leave after the linger, and at Close.
func TestClientUDPShardsWaitOnlyWhenAllHeld(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Hour})
	q := c.uq
	if len(q.shards) != udpShards {
		t.Fatalf("%d shards", len(q.shards))
	}
	waitFor(t, "the writer's socket", func() bool {
		q.send.Lock()
		defer q.send.Unlock()
		return q.conn != nil
	})
	// Hold every shard but the last: packets fill the last one.
	for i := range q.shards[:udpShards-1] {
		q.shards[i].mu.Lock()
	}
	noBlock(t, func() {
		for i := range 10 {
			if !c.Send(testPacket(t, fmt.Sprintf("a%d", i), 20)) {
				t.Errorf("packet a%d refused with a shard free", i)
			}
		}
	})
	last := &q.shards[udpShards-1]
	last.mu.Lock()
	if last.cur == nil || last.cur.len() != 10 {
		t.Errorf("the free shard holds %v", last.cur)
	}
	// Every shard held: the packet waits for one and is taken once a shard
	// is let go.
	waiting := make(chan struct{})
	q.testHookWait = func() { close(waiting) }
	sent := make(chan bool, 1)
	go func() { sent <- c.Send(testPacket(t, "b0", 20)) }()
	select {
	case <-waiting:
	case ok := <-sent:
		t.Fatalf("with every shard held the packet did not wait: taken %v", ok)
	}
	if st := c.Stats(); st.Dropped != 0 || st.Queued != 10 {
		t.Errorf("while waiting: %+v", st)
	}
	for i := range q.shards {
		q.shards[i].mu.Unlock()
	}
	if !<-sent {
		t.Error("the packet that waited was refused")
	}
	q.testHookWait = nil
	if st := c.Stats(); st.Busy != 1 || st.Dropped != 0 || st.Queued != 11 {
		t.Errorf("after the wait: %+v", st)
	}
	for i := range 6 {
		if !c.Send(testPacket(t, fmt.Sprintf("c%d", i), 20)) {
			t.Errorf("packet c%d refused", i)
		}
	}
	c.Close() // the partial batches leave
	if st := c.Stats(); st.Sent != 17 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("after close: %+v", st)
	}
	waitFor(t, "17 packets at the collector", func() bool { return len(col.packets()) == 17 })
}

// The linger sends the partial batches of every shard.
func TestClientUDPLingerSendsEveryShard(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Millisecond})
	q := c.uq
	for i := range q.shards[1:] {
		q.shards[1+i].mu.Lock()
	}
	c.Send(testPacket(t, "s0", 20)) // shard 0
	q.shards[1].mu.Unlock()
	q.shards[0].mu.Lock()
	c.Send(testPacket(t, "s1", 20)) // shard 1
	q.shards[0].mu.Unlock()
	for i := 2; i < udpShards; i++ {
		q.shards[i].mu.Unlock()
	}
	waitFor(t, "both packets at the collector", func() bool { return col.has("s0") && col.has("s1") })
}
