package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// Hostile review of write batching's write path (issue 16): a peer that
// stops reading costs only itself. send_timeout is minutes in these
// tests: a read loop that waits for such a peer fails them (the read
// deadlines only end a failing test).

// stallPeer fills the socket from the relay to client i until a write
// cannot go on (the client reads nothing meanwhile): the relay's next
// byte to it finds no room. It returns the relay's connection and how
// many filler bytes the client must skip once it reads.
func stallPeer(t *testing.T, b *batchRelay, i int) (*conn, int64) {
	t.Helper()
	c := b.connOf(i)
	// Fixed socket buffers (no autotuning that makes room again later).
	_ = c.nc.(*net.TCPConn).SetWriteBuffer(8192)
	_ = b.ncs[i].(*net.TCPConn).SetReadBuffer(8192)
	// Until a write takes nothing for 200 ms (the kernel may make a
	// little room after the first one stops: a collapsed receive queue).
	var filled int64
	for {
		_ = c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.nc.Write(make([]byte, 1<<20))
		filled += int64(n)
		if err != nil && n == 0 {
			break
		}
	}
	_ = c.nc.SetWriteDeadline(time.Time{})
	return c, filled
}

// connOf returns the relay's connection to client i.
func (b *batchRelay) connOf(i int) *conn {
	local := addrPort(b.ncs[i].LocalAddr())
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	for _, x := range b.r.conns {
		if x.info.Remote == local {
			return x
		}
	}
	return nil
}

// awaitForwarded waits until the relay has forwarded n frames, or
// something holds c's write lock (a frame for c's full socket is on its
// way out: before this review's fixes the forwarding read loop waited
// there). Only for frames that wait for the lock: one written with
// TryLock (the relay's small frames) may take the queue instead.
func awaitForwarded(b *batchRelay, c *conn, n int64) {
	for b.r.Stats().Forwarded < n && c.wmu.TryLock() {
		c.wmu.Unlock()
		runtime.Gosched()
	}
}

// expectFrame reads one frame at client j and checks its Message-ID.
func expectFrame(t *testing.T, b *batchRelay, j int, mid, why string) {
	t.Helper()
	_ = b.ncs[j].SetReadDeadline(time.Now().Add(15 * time.Second))
	if err := b.answer(t, j, 1, func(f *msrp.Frame, _ []byte) error {
		if got := string(f.Get(msrp.HdrMessageID)); got != mid {
			return fmt.Errorf("got Message-ID %s, want %s", got, mid)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", why, err)
	}
}

// Flush order within one burst: a frame to a peer whose socket has no room
// left, then a frame to a reading peer, both left in their buffers (the
// next frame has begun to arrive): the second must not wait behind the
// first when the read loop flushes before it reads on.
func TestReviewBurstFlushNotBehindFullPeer(t *testing.T) {
	b := newBatchRelay(t, 3, func(c *Config) { c.Limits.SendTimeout = 5 * time.Minute })
	stallPeer(t, b, 1)
	go func() { _, _ = io.Copy(io.Discard, b.ncs[0]) }()
	next := b.send(0, 2, "m2", []byte("the rest never comes"))
	burst := append(append(b.send(0, 1, "m1", []byte("to the full peer")), b.send(0, 2, "m0", []byte("to the reading peer"))...), next[:30]...)
	if _, err := b.ncs[0].Write(burst); err != nil {
		t.Fatal(err)
	}
	expectFrame(t, b, 2, "m0", "the frame to the reading peer waited behind the full one")
}

// A read loop that writes into a peer that does not read (its socket
// full) goes on serving its other peers: whatever it writes there (a
// REPORT it makes, a request it forwards, a response it relays), the next
// frame it reads, to a reading peer, arrives.
func TestReviewInlineWriteIntoNonReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		// into makes client 0 write something that the relay writes into
		// client 1 (whose socket is full): rd reads client 0's side.
		into func(t *testing.T, b *batchRelay, rd *msrp.Reader)
	}{
		{name: "forwarded SEND", into: func(t *testing.T, b *batchRelay, _ *msrp.Reader) {
			if _, err := b.ncs[0].Write(b.send(0, 1, "m1", []byte("to the full peer"))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "forwarded SENDs, some written after the first found no room", into: func(t *testing.T, b *batchRelay, _ *msrp.Reader) {
			if _, err := b.ncs[0].Write(b.send(0, 1, "m1", []byte("to the full peer"))); err != nil {
				t.Fatal(err)
			}
			x := b.connOf(1)
			awaitForwarded(b, x, 1)
			var more []byte
			for k := range 20 { // within the relay's write buffer: no write within a frame
				more = append(more, b.send(0, 1, fmt.Sprintf("m1-%d", k), bytes.Repeat([]byte("z"), 500))...)
			}
			if _, err := b.ncs[0].Write(more); err != nil {
				t.Fatal(err)
			}
			awaitForwarded(b, x, 21)
		}},
		{name: "REPORT for a failed SEND", into: func(t *testing.T, b *batchRelay, rd *msrp.Reader) {
			// Client 1 sends (Failure-Report partial: no 200 of the relay's
			// into its full socket); client 0 answers 415: a REPORT to 1.
			s := strings.Replace(string(b.send(1, 0, "r1", []byte("hello"))), "\r\nContent-Type", "\r\nFailure-Report: partial\r\nContent-Type", 1)
			if _, err := b.ncs[1].Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
			f := readRequest(t, rd)
			to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
			rsp := fmt.Sprintf("MSRP %s 415 Unsupported\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID)
			if _, err := b.ncs[0].Write([]byte(rsp)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "relayed response", into: func(t *testing.T, b *batchRelay, rd *msrp.Reader) {
			// A request other than SEND from client 1: its response goes
			// back to 1 as client 0 sent it.
			send := string(b.send(1, 0, "n1", nil))
			to := send[strings.Index(send, "To-Path: "):strings.Index(send, "\r\nMessage-ID")]
			s := "MSRP nick1 NICKNAME\r\n" + to + "\r\nUse-Nickname: \"x\"\r\n-------nick1$\r\n"
			if _, err := b.ncs[1].Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
			f := readRequest(t, rd)
			rsp := fmt.Sprintf("MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, f.Get(msrp.HdrFromPath), b.uriOf(b.ncs[0]), f.TransactID)
			if _, err := b.ncs[0].Write([]byte(rsp)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatchRelay(t, 3, func(c *Config) { c.Limits.SendTimeout = 5 * time.Minute })
			x, _ := stallPeer(t, b, 1)
			rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
			tc.into(t, b, rd)
			go func() { _, _ = io.Copy(io.Discard, b.ncs[0]) }() // client 0's 200s: not needed
			if strings.HasPrefix(tc.name, "forwarded") {
				awaitForwarded(b, x, 1)
			} else {
				// Client 0's response read (not in one read with the next
				// frame, which would batch it): the transaction is taken.
				// (Not awaitForwarded: its TryLock would send the relay's
				// small frame to the queue.)
				for b.r.Stats().Transactions > 0 {
					runtime.Gosched()
				}
			}
			if _, err := b.ncs[0].Write(b.send(0, 2, "m0", []byte("to the reading peer"))); err != nil {
				t.Fatal(err)
			}
			expectFrame(t, b, 2, "m0", "the read loop waited for the peer that does not read")
		})
	}
}

// readRequest reads the next request at a client (skipping responses).
func readRequest(t *testing.T, rd *msrp.Reader) *msrp.Frame {
	t.Helper()
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		for p := f.Body(); ; {
			if _, err := p.Next(); err != nil {
				break
			}
		}
		if f.StatusCode == 0 {
			return f
		}
	}
}

// The write queue bounds what waits for a peer that does not read: once
// write_queue frames wait behind its full socket, the next one a read
// loop of another connection routes to it closes it (limit, counted in
// Stats.QueueFull) instead of making that read loop wait, which goes on
// serving its other peers.
func TestReviewWriteQueueFullClosesOnlyThePeer(t *testing.T) {
	const queue = 2
	b := newBatchRelay(t, 3, func(c *Config) {
		c.Limits.SendTimeout = 5 * time.Minute
		c.Limits.WriteQueue = queue
	})
	x, _ := stallPeer(t, b, 1)
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	// Client 1 sends SENDs (Failure-Report partial); client 0 fails each:
	// a REPORT each for client 1, which reads nothing.
	var sends []byte
	const n = queue + 8
	for k := range n {
		s := strings.Replace(string(b.send(1, 0, fmt.Sprintf("r%d", k), bytes.Repeat([]byte("x"), 3000))), "\r\nContent-Type", "\r\nFailure-Report: partial\r\nContent-Type", 1)
		sends = append(sends, s...)
	}
	go func() { _, _ = b.ncs[1].Write(sends) }()
	var rsps [][]byte
	for range n {
		f := readRequest(t, rd)
		to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
		rsps = append(rsps, fmt.Appendf(nil, "MSRP %s 415 Unsupported\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID))
	}
	// One at a time, each after the relay made the last one's REPORT:
	// none batched with the next.
	deadline := time.Now().Add(15 * time.Second) // only ends a failing test
	for k, rsp := range rsps {
		if _, err := b.ncs[0].Write(rsp); err != nil {
			t.Fatal(err)
		}
		for b.r.Stats().ReportsSent < int64(k+1) && !x.isClosed() {
			if time.Now().After(deadline) {
				t.Fatalf("the relay made %d REPORTs of %d: its read loop waits for the peer that does not read", b.r.Stats().ReportsSent, k+1)
			}
			runtime.Gosched()
		}
	}
	go func() { _, _ = io.Copy(io.Discard, b.ncs[0]) }()
	if _, err := b.ncs[0].Write(b.send(0, 2, "m0", []byte("to the reading peer"))); err != nil {
		t.Fatal(err)
	}
	expectFrame(t, b, 2, "m0", "the read loop waited for the peer that does not read")
	select {
	case <-x.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the peer that left its write queue full is still open")
	}
	if x.reason != event.CloseLimit {
		t.Fatalf("closed with %v, want %v", x.reason, event.CloseLimit)
	}
	if st := b.r.Stats(); st.QueueFull != 1 {
		t.Fatalf("Stats.QueueFull %d, want 1", st.QueueFull)
	}
}

// A peer that sends a frame and shuts down its write side still reads:
// what the relay holds for it when it sees the end of the stream (a frame
// forwarded to it, waiting for room in its socket; the relay's 200 to its
// own SEND) reaches it before the relay closes the connection.
func TestReviewHalfCloseGetsWhatWasBuffered(t *testing.T) {
	b := newBatchRelay(t, 2, func(c *Config) { c.Limits.SendTimeout = 5 * time.Minute })
	x, filled := stallPeer(t, b, 1)
	go func() { _, _ = io.Copy(io.Discard, b.ncs[0]) }()
	if _, err := b.ncs[0].Write(b.send(0, 1, "to1", bytes.Repeat([]byte("y"), 2000))); err != nil {
		t.Fatal(err)
	}
	awaitForwarded(b, x, 1)
	if _, err := b.ncs[1].Write(b.send(1, 0, "from1", []byte("last words"))); err != nil {
		t.Fatal(err)
	}
	if err := b.ncs[1].(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = b.ncs[1].SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(b.ncs[1])
	if _, err := io.CopyN(io.Discard, br, filled); err != nil {
		t.Fatalf("filler: %v", err)
	}
	rd := msrp.NewReader(br, msrp.Limits{})
	var got []string
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, msrp.ErrTruncated) {
				t.Logf("read: %v", err)
			}
			break
		}
		body, _ := io.ReadAll(f.Body()) // up to the end-line or an error
		if f.StatusCode != 0 {
			got = append(got, fmt.Sprint(f.StatusCode))
		} else {
			got = append(got, string(f.Get(msrp.HdrMessageID))+fmt.Sprintf("(%d bytes, %c)", len(body), f.Flag()))
		}
	}
	want := map[string]bool{"to1(2000 bytes, $)": true, "200": true}
	if len(got) != len(want) || !want[got[0]] || !want[got[1]] || got[0] == got[1] {
		t.Fatalf("the half-closed peer got %q, want the SEND forwarded to it and the 200 to its own SEND", got)
	}
	<-x.done
	if x.reason != event.CloseEOF {
		t.Fatalf("closed with %v, want %v", x.reason, event.CloseEOF)
	}
}

// What waits for a peer that does not read (spilled by a read loop's
// write between frames) is bounded in time too: the peer's writer
// goroutine gives up after send_timeout without progress, closes it
// (send-timeout, counted in Stats.QueueFull), and the forwarded SEND,
// never answered, gets its failure REPORT.
func TestReviewSpillNotTakenClosesPeer(t *testing.T) {
	b := newBatchRelay(t, 2, func(c *Config) { c.Limits.SendTimeout = time.Second })
	x, _ := stallPeer(t, b, 1)
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	if _, err := b.ncs[0].Write(b.send(0, 1, "m1", []byte("to the full peer"))); err != nil {
		t.Fatal(err)
	}
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(15 * time.Second))
	f := readRequest(t, rd) // the relay's 200 is skipped; the REPORT is a request
	if string(f.Method) != "REPORT" || string(f.Get(msrp.HdrMessageID)) != "m1" {
		t.Fatalf("got %s for %s, want the REPORT for m1", f.Method, f.Get(msrp.HdrMessageID))
	}
	<-x.done
	if x.reason != event.CloseSendTimeout {
		t.Fatalf("closed with %v, want %v", x.reason, event.CloseSendTimeout)
	}
	if st := b.r.Stats(); st.QueueFull != 1 {
		t.Fatalf("Stats.QueueFull %d, want 1", st.QueueFull)
	}
}
