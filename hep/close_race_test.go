package hep

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A producer fills a batch (the batch's last packet) just before Close
// marks the queue closed, and dispatches it after: the batch was taken, so
// it is sent on the still-open socket, not dropped.
func TestClientUDPBatchFilledDuringCloseSent(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Hour})
	q := c.uq
	waitFor(t, "the writer's socket", func() bool {
		q.send.Lock()
		defer q.send.Unlock()
		return q.conn != nil
	})
	filled, release := make(chan struct{}), make(chan struct{})
	q.afterFill = func() {
		close(filled)
		<-release
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range udpBatch {
			if !c.Send(testPacket(t, fmt.Sprintf("p%d", i), 20)) {
				t.Errorf("packet %d refused", i)
			}
		}
	}()
	<-filled // the batch is full and out of the queue, not yet dispatched
	closed := make(chan struct{})
	go func() { defer close(closed); c.Close() }()
	waitFor(t, "Close to close the queue", func() bool {
		s := &q.shards[len(q.shards)-1] // the last one udpExit closes
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	})
	close(release)
	<-sent
	<-closed
	st := c.Stats()
	if st.Sent != udpBatch || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v, want the %d packets sent", st, udpBatch)
	}
	waitFor(t, "the batch at the collector", func() bool { return len(col.packets()) == udpBatch })
}

// Producers on several goroutines racing Close, for each transport, with a
// collector on loopback that reads everything: every packet a Send was
// called with is counted once, as sent or dropped, and every packet counted
// as sent reaches the collector.
func TestClientCloseRaceNothingLost(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t)
	for _, tr := range []Transport{UDP, TCP, TLS} {
		t.Run(string(tr), func(t *testing.T) {
			const rounds = 8
			for round := range rounds {
				var sc *tls.Config
				if tr == TLS {
					sc = serverTLS
				}
				col := newCollector(t, string(tr), "", sc)
				c := newTestClient(t, ClientConfig{Transport: tr, Addr: col.addr, TLSConfig: clientTLS,
					Linger: time.Millisecond, QueueSize: 256})
				if tr != UDP {
					waitFor(t, "the connection", func() bool { return col.connected() })
				}
				const producers, per = 4, 250
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
				for tried.Load() < int64(round*producers*per/rounds) {
					runtime.Gosched() // Close at a different point of the load each round
				}
				c.Close()
				wg.Wait()
				st := c.Stats()
				if st.Sent+st.Dropped != producers*per || st.Queued != 0 {
					t.Fatalf("round %d: stats %+v: sent+dropped != %d", round, st, producers*per)
				}
				waitFor(t, fmt.Sprintf("round %d: the %d packets sent at the collector (has %d)", round, st.Sent, len(col.packets())),
					func() bool { return uint64(len(col.packets())) == st.Sent })
				col.stop()
				if col.bad != 0 {
					t.Fatalf("round %d: %d undecodable packets", round, col.bad)
				}
			}
		})
	}
}

// A stream client in steady use allocates nothing per packet: producers
// take buffers from the free list and the writer gives them back, a batch
// at a time.
func TestStreamSendAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race")
	}
	col := newCollector(t, "tcp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: TCP, Addr: col.addr, Linger: -1})
	m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: []byte("sessA~sessB")}
	frame := bytes.Repeat([]byte("x"), 300)
	sent := uint64(0)
	send := func() {
		if !c.SendFrameFunc(m, func(dst []byte, room int) []byte { return append(dst, frame...) }) {
			t.Fatal("refused")
		}
		sent++
		for c.Stats().Sent < sent {
			runtime.Gosched()
		}
	}
	for range 100 {
		send()
	}
	if n := testing.AllocsPerRun(200, send); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}
