package hep

import (
	"crypto/tls"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/spool"
)

func openSpool(t *testing.T, dir string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Config{Dir: dir, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// sendPaced sends packets cid prefix+i for i in [from, to), in chunks that
// fit the queue, waiting after each chunk until the writer took it (into the
// spool or onto the wire), so nothing overflows the queue.
func sendPaced(t *testing.T, c *Client, prefix string, from, to, chunk int) {
	t.Helper()
	for i := from; i < to; i++ {
		if !c.Send(testPacket(t, fmt.Sprint(prefix, i), 200)) {
			t.Fatalf("send %d refused: %+v", i, c.Stats())
		}
		if (i-from+1)%chunk == 0 {
			waitFor(t, "queue taken", func() bool { return c.Stats().Queued == 0 })
		}
	}
}

func cids(ps []Packet) []string {
	var s []string
	for _, p := range ps {
		s = append(s, string(p.CorrelationID))
	}
	return s
}

func wantCids(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, fmt.Sprint(prefix, i))
	}
	return s
}

// TestClientSpool: the collector is down (port closed), packets go to the
// spool; it comes up and receives every packet, in order, exactly once, the
// spooled ones before the new ones. Then the same across a restart of the
// client with packets in the spool.
func TestClientSpool(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t)
	for _, tc := range []struct {
		network string
		srv     *tls.Config
		cli     *tls.Config
	}{{"tcp", nil, nil}, {"tls", serverTLS, clientTLS}} {
		t.Run(tc.network, func(t *testing.T) {
			const n, m, k = 600, 100, 32
			addr := freeAddr(t, "tcp")
			dir := t.TempDir()
			sp := openSpool(t, dir)
			cfg := ClientConfig{Transport: Transport(tc.network), Addr: addr, TLSConfig: tc.cli, QueueSize: 64, Spool: sp}
			c := newTestClient(t, cfg)

			// Down: everything goes to the spool, in records of several packets.
			sendPaced(t, c, "a", 0, n, 32)
			waitFor(t, "spooled", func() bool { return c.Stats().Spooled == n })
			if s := c.Stats(); s.Dropped != 0 || s.Sent != 0 || s.Errors == 0 {
				t.Fatalf("while down: %+v", s)
			}
			if sp.Len() == 0 || sp.Len() >= n {
				t.Fatalf("spool holds %d records for %d packets: want batches", sp.Len(), n)
			}

			// Up: the spool is replayed first, then new packets follow.
			col := &collector{t: t, network: tc.network, addr: addr, tlsConf: tc.srv}
			col.start()
			t.Cleanup(col.stop)
			sendPaced(t, c, "b", 0, m, 16)
			waitFor(t, "delivery", func() bool { return len(col.packets()) >= n+m })
			c.Close()
			want := append(wantCids("a", 0, n), wantCids("b", 0, m)...)
			if got := cids(col.packets()); !slices.Equal(got, want) {
				t.Fatalf("collector got %d packets, not %d in order once each:\n%q", len(got), len(want), got)
			}
			s := c.Stats()
			if s.Dropped != 0 || s.Replayed != s.Spooled || s.Replayed < n || s.Sent != n+m {
				t.Fatalf("stats %+v", s)
			}
			if sp.Len() != 0 {
				t.Fatalf("spool still holds %d records", sp.Len())
			}

			// Down again, then this client closes with packets queued and
			// spooled; the next one (with the spool reopened, as after a
			// restart) delivers them.
			col.stop()
			c2 := newTestClient(t, cfg)
			sendPaced(t, c2, "c", 0, m, 16)
			waitFor(t, "queue taken", func() bool { return c2.Stats().Queued == 0 })
			for i := m; i < m+k; i++ { // fits the queue; some still queued at Close
				if !c2.Send(testPacket(t, fmt.Sprint("c", i), 200)) {
					t.Fatalf("send %d refused", i)
				}
			}
			c2.Close()
			if s := c2.Stats(); s.Dropped != 0 || s.Spooled != m+k {
				t.Fatalf("closed with the collector down: %+v", s)
			}
			sp.Close()
			sp = openSpool(t, dir)
			defer sp.Close()
			if sp.Len() == 0 {
				t.Fatal("spool empty after reopen")
			}
			col2 := &collector{t: t, network: tc.network, addr: addr, tlsConf: tc.srv}
			col2.start()
			t.Cleanup(col2.stop)
			cfg.Spool = sp
			c3 := newTestClient(t, cfg)
			waitFor(t, "replay after restart", func() bool { return len(col2.packets()) >= m+k })
			c3.Close()
			if got := cids(col2.packets()); !slices.Equal(got, wantCids("c", 0, m+k)) {
				t.Fatalf("after restart the collector got:\n%q", got)
			}
			if s := c3.Stats(); s.Replayed != m+k || s.Dropped != 0 {
				t.Fatalf("after restart: %+v", s)
			}
		})
	}
}

func TestClientSpoolUDPRefused(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	defer sp.Close()
	if _, err := NewClient(t.Context(), ClientConfig{Transport: UDP, Addr: "127.0.0.1:9", Spool: sp}); err == nil {
		t.Fatal("a UDP client accepted a spool")
	}
}

// TestClientSpoolWriteFails: the collector accepts but never reads; a write
// that times out puts its batch into the spool instead of losing it, and so
// does the replay that follows each reconnection: nothing is counted dropped.
// (What the kernel accepted into the stalled connection is lost: HEP has no
// acknowledgement.)
func TestClientSpoolWriteFails(t *testing.T) {
	col := newCollector(t, "tcp", "stall", nil)
	sp := openSpool(t, t.TempDir())
	defer sp.Close()
	c := newTestClient(t, ClientConfig{Transport: TCP, Addr: col.addr, QueueSize: 16,
		WriteTimeout: 20 * time.Millisecond, Spool: sp})
	pkt := testPacket(t, "stall", 60000)
	waitFor(t, "write failures spooled", func() bool {
		if c.Stats().Queued == 0 {
			c.Send(pkt)
		}
		s := c.Stats()
		return s.Errors >= 3 && s.Spooled >= 2
	})
	c.Close()
	if s := c.Stats(); s.Dropped != 0 {
		t.Fatalf("packets dropped with a spool: %+v", s)
	}
	if sp.Len() == 0 {
		t.Fatal("spool empty")
	}
}
