package hep

import (
	"runtime"
	"testing"
	"time"
)

// A collector that is down (ICMP port unreachable, the socket's pending
// ECONNREFUSED) and comes back on the same port: the UDP client keeps its
// socket, packets sent once it is back arrive, and every packet is counted
// once, sent or dropped, the queue back to 0 after Close.
func TestReviewUDPCollectorOutage(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Millisecond, QueueSize: 256})
	pkt := testPacket(t, "outage", 40)
	total := 0
	send := func(n int) {
		for range n {
			c.Send(pkt)
			total++
		}
	}
	send(2 * udpBatch)
	for c.Stats().Sent < 2*udpBatch {
		runtime.Gosched()
	}
	col.stop()
	// Down: sends fail or vanish, none blocks.
	send(4 * udpBatch)
	for c.Stats().Queued != 0 {
		runtime.Gosched()
	}
	col.start()
	before := len(col.packets())
	deadline := time.Now().Add(15 * time.Second) // only ends a failing test
	for len(col.packets()) == before {
		if time.Now().After(deadline) {
			t.Fatalf("no packet reached the collector after it came back: stats %+v", c.Stats())
		}
		send(udpBatch)
		for c.Stats().Queued != 0 {
			runtime.Gosched()
		}
	}
	c.Close()
	st := c.Stats()
	if st.Sent+st.Dropped != uint64(total) || st.Queued != 0 {
		t.Fatalf("stats %+v: sent+dropped != %d sends, or queued", st, total)
	}
}
