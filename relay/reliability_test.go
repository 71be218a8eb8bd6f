package relay_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// gatedConn is a client connection whose reads can be stopped: a peer that
// stops reading its socket (its kernel buffer fills, the relay's writes
// stall).
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	stopped bool
	release chan struct{}
}

func newGatedConn(t *testing.T, addr string) *gatedConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	g := &gatedConn{Conn: nc, release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

// stop makes the next reads wait until open.
func (g *gatedConn) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

func (g *gatedConn) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		g.stopped = false
		close(g.release)
	}
}

func (g *gatedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	stopped, rel := g.stopped, g.release
	g.mu.Unlock()
	if stopped {
		<-rel
	}
	return g.Conn.Read(p)
}

// unread returns how many bytes wait in g's kernel receive buffer.
func (g *gatedConn) unread(t *testing.T) int {
	t.Helper()
	rc, err := g.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr syscall.Errno
	_ = rc.Control(func(fd uintptr) {
		_, _, ierr = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	if ierr != 0 {
		t.Fatalf("TIOCINQ: %v", ierr)
	}
	return n
}

// gatedClient authenticates user over a gatedConn.
func gatedClient(t *testing.T, tr *testRelay, user string) (*msrpclient.Client, *gatedConn, string) {
	t.Helper()
	g := newGatedConn(t, tr.addr())
	c := msrpclient.New(g, false, msrpclient.Options{})
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(g.open) // before Close (cleanups run last first): Close waits for the reader
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s: %v", user, err)
	}
	return c, g, use
}

// Issue 14 defect 2: B never reads; A's large chunk to B holds B's write
// lock; C's small SEND to B waits for that lock; B is closed (here by the
// admin, as by a send timeout) and C's forward finds it closed. C gets its
// 200 and a 408 REPORT, and keeps its connection: its body was read, so its
// next frame is not timed against header_timeout while C is idle.
func TestSenderKeepsConnectionWhenDestinationClosed(t *testing.T) {
	const headerTimeout = 300 * time.Millisecond
	tr := startRelay(t, func(c *relay.Config) { c.Limits.HeaderTimeout = headerTimeout })
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, gb, useB := gatedClient(t, tr, "bob")
	cc, useC := client(t, tr, "carol", msrpclient.Options{})
	gb.stop()
	bConn := connOfSession(t, tr, useB)
	big := make([]byte, 16<<20)
	if _, err := a.SendAsync(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: big, ContentType: "application/octet-stream"}); err != nil {
		t.Fatal(err)
	}
	pc, err := cc.SendAsync(ctxT(t), []string{useC, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("small"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	waitWriters(t, tr, bConn, 2) // A's chunk being written, C's waiting
	if err := tr.KillConnection(bConn); err != nil {
		t.Fatal(err)
	}
	res, err := pc.Wait(ctxT(t))
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("C's SEND: %+v %v", res, err)
	}
	rep := receive(t, cc, "REPORT")
	if rep.Status == nil || rep.Status.Code != 408 {
		t.Fatalf("C's REPORT %+v", rep)
	}
	// The scenario: C stays idle for longer than header_timeout.
	time.Sleep(3 * headerTimeout)
	res, err = cc.Send(ctxT(t), []string{useC, useA, a.LocalURI()}, msrpclient.Message{Body: []byte("later"), ContentType: "text/plain"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("C's next SEND: %+v %v", res, err)
	}
	for _, e := range tr.obs.snapshot() {
		if e.kind == event.Closed && e.reason == event.CloseHeaderTimeout {
			t.Fatalf("a connection was closed with reason header-timeout: %+v", e.conn)
		}
	}
}

// connOfSession returns the id of the connection that holds the session
// named by the Use-Path use.
func connOfSession(t *testing.T, tr *testRelay, use string) uint64 {
	t.Helper()
	for _, s := range tr.Sessions() {
		if s.ID == sidOf(use) {
			return s.ConnID
		}
	}
	t.Fatalf("no session %s", use)
	return 0
}

// waitWriters waits until n forwards write or wait to write into conn id.
func waitWriters(t *testing.T, tr *testRelay, id uint64, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for relay.ConnWriters(tr.Relay, id) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d forwards into conn %d, want %d", relay.ConnWriters(tr.Relay, id), id, n)
		}
		time.Sleep(time.Millisecond) // polling a state, not ordering events
	}
}

// snapshot returns a copy of the events recorded so far.
func (r *recorder) snapshot() []recEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recEvent(nil), r.events...)
}

// Issue 14 defect 4: a body that drips (one byte well within body_timeout
// each, but far below body_min_rate) into a session is cut; the receiver
// sees the chunk end with '#'.
func TestDripBodyCut(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) {
		c.Limits.BodyTimeout = 500 * time.Millisecond
		c.Limits.BodyMinRate = 100 // bytes/s; the drip below sends 10
		c.Limits.FirstRequestTimeout = time.Minute
	})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Unauthenticated, into B's session (RFC 4976 allows it: To-Path names
	// B's Use-Path URI, then B).
	head := fmt.Sprintf("MSRP drip1 SEND\r\nTo-Path: %s %s\r\nFrom-Path: msrp://%s/d;tcp\r\nMessage-ID: drip\r\nByte-Range: 1-*/*\r\nContent-Type: text/plain\r\n\r\n",
		useB, b.LocalURI(), nc.LocalAddr())
	if _, err := nc.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond) // the scenario: 10 bytes/s
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := nc.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	tr.obs.waitFor(t, "closed(body-timeout)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseBodyTimeout
	})
	if got := receive(t, b, "SEND"); got.Flag != '#' {
		t.Fatalf("the dripped chunk reached B with flag %q, want '#'", got.Flag)
	}
}

// Issue 14 defect 4: first_request_timeout is a total limit for a
// connection none of whose requests succeeded: failing requests sent more
// often than the timeout do not keep it open.
func TestFirstRequestTimeoutTotal(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.FirstRequestTimeout = time.Second })
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	go func() { _, _ = io.Copy(io.Discard, nc) }()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond) // the scenario: a failing request every 200 ms
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			req := fmt.Sprintf("MSRP fq%05d SEND\r\nTo-Path: %s\r\nFrom-Path: msrp://%s/f;tcp\r\nMessage-ID: f%d\r\n-------fq%05d$\r\n",
				i, strings.Replace(tr.uri, ";tcp", "/nosuchsession;tcp", 1), nc.LocalAddr(), i, i)
			if _, err := nc.Write([]byte(req)); err != nil {
				return
			}
		}
	}()
	e := tr.obs.waitFor(t, "closed", func(e recEvent) bool { return e.kind == event.Closed })
	switch e.reason {
	case event.CloseIdleTimeout, event.CloseHeaderTimeout, event.CloseBodyTimeout:
	default:
		t.Fatalf("closed with reason %v, want a timeout", e.reason)
	}
}
