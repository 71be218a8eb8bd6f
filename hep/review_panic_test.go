package hep

import (
	"net/netip"
	"testing"
	"time"
)

// A panic while a packet is encoded into the shared UDP batch (the
// relay's frame cutter, an encoder bug) is recovered by the relay, which
// closes only that connection and keeps serving (relay.recoverConn): the
// queue must stay usable, or every later traced frame, in every read
// loop, waits forever for its lock. The packet counts as dropped.
func TestReviewUDPEncodePanicKeepsQueue(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: time.Millisecond, QueueSize: 256})
	m := Meta{Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:2"), CorrelationID: []byte("panic")}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the encoder's panic did not reach the caller")
			}
		}()
		c.SendFrameFunc(m, func(dst []byte, room int) []byte { panic("encoder bug") })
	}()
	done := make(chan bool, 1)
	go func() { done <- c.Send(testPacket(t, "after", 40)) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second): // only ends a failing test
		c.uq.shards[0].mu.Unlock() // so that the test ends (Close takes it too)
		<-done
		t.Fatal("a send after an encoder's panic blocked: the queue's lock was left held")
	}
	c.Close()
	if st := c.Stats(); st.Sent+st.Dropped != 2 || st.Queued != 0 {
		t.Fatalf("stats %+v: sent+dropped != 2 sends, or queued", st)
	}
}
