package relay_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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
	// Writes: after wlimit more bytes (when wgated), the rest waits for
	// wrelease (a frame cut off in the middle of its body).
	wgated   bool
	wlimit   int
	wrelease chan struct{}
	// slow: each Read takes at most 16 KiB and a millisecond (a receiver
	// slower than the sender: ~16 MB/s at most).
	slow bool
}

// stopWritesAfter lets n more bytes be written; later writes wait until
// openWrites.
func (g *gatedConn) stopWritesAfter(n int) {
	g.mu.Lock()
	g.wgated, g.wlimit, g.wrelease = true, n, make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedConn) openWrites() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wgated {
		g.wgated = false
		close(g.wrelease)
	}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	if !g.wgated {
		g.mu.Unlock()
		return g.Conn.Write(p)
	}
	k := min(g.wlimit, len(p))
	g.wlimit -= k
	rel := g.wrelease
	g.mu.Unlock()
	n, err := g.Conn.Write(p[:k])
	if err != nil || k == len(p) {
		return n, err
	}
	<-rel
	m, err := g.Conn.Write(p[k:])
	return n + m, err
}

func newGatedConn(t *testing.T, addr string) *gatedConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// Small, to fill soon; not below the loopback MSS (see queueFullPeer).
	_ = nc.(*net.TCPConn).SetReadBuffer(128 << 10)
	g := &gatedConn{Conn: nc, release: make(chan struct{})}
	t.Cleanup(g.open)
	t.Cleanup(g.openWrites)
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
	if g.slow {
		time.Sleep(time.Millisecond) // the scenario: a slow receiver
		p = p[:min(len(p), 16<<10)]
	}
	return g.Conn.Read(p)
}

// gatedClient authenticates user over a gatedConn.
func gatedClient(t *testing.T, tr *testRelay, user string) (*msrpclient.Client, *gatedConn, string) {
	t.Helper()
	g := newGatedConn(t, tr.addr())
	c := msrpclient.New(g, false, msrpclient.Options{})
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(g.open) // before Close (cleanups run last first): Close waits for the reader
	t.Cleanup(g.openWrites)
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
	// SendAsync writes the whole chunk: it returns only once the kernel's
	// buffers on the way to B hold what the relay could not pass on, or the
	// relay reads the rest after B is gone; so it runs beside the test.
	sentA := make(chan error, 1)
	go func() {
		_, err := a.SendAsync(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: big, ContentType: "application/octet-stream"})
		sentA <- err
	}()
	t.Cleanup(func() { <-sentA }) // before the clients' Close (cleanups run last first)
	waitWriters(t, tr, bConn, 1)  // A's chunk being written
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

// startRelayStop is startRelay with a stop function: it begins the
// graceful shutdown (as SIGTERM does) and returns a channel closed when
// Serve has returned.
func startRelayStop(t *testing.T, mod func(*relay.Config)) (*testRelay, func() <-chan struct{}) {
	t.Helper()
	obs := newRecorder()
	cfg := relay.Config{
		Listen:   []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:    users(t),
		Observer: obs,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := r.Serve(ctx); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(60 * time.Second):
			t.Error("relay did not shut down within 60s")
		}
	})
	stop := func() <-chan struct{} {
		cancel()
		for !relay.ShuttingDown(r) {
			time.Sleep(time.Millisecond) // polling a state, not ordering events
		}
		return served
	}
	return &testRelay{Relay: r, uri: r.URIs()[0].String(), obs: obs}, stop
}

// gatedWriter authenticates user over a gatedConn at tr (toPath: the AUTH's
// To-Path, tr's URI when nil).
func gatedWriter(t *testing.T, tr *testRelay, user string) (*msrpclient.Client, *gatedConn, string) {
	t.Helper()
	g := newGatedConn(t, tr.addr())
	c := msrpclient.New(g, false, msrpclient.Options{})
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(g.openWrites)
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s: %v", user, err)
	}
	return c, g, use
}

// Issue 14 defect 3: a chunk still in flight when the shutdown grace is
// over reaches the receiver ended with '#' (RFC 4975 §7.1), not cut off.
func TestShutdownEndsChunkInFlight(t *testing.T) {
	tr, stop := startRelayStop(t, func(c *relay.Config) { c.Limits.ShutdownGrace = 300 * time.Millisecond })
	a, ga, useA := gatedWriter(t, tr, "alice")
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	ga.stopWritesAfter(64 << 10) // the chunk's first 64 KiB, then the sender stalls
	ctx := ctxT(t)
	go func() { // SendAsync writes the chunk before it returns
		_, _ = a.SendAsync(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: make([]byte, 1<<20), ContentType: "application/octet-stream"})
	}()
	waitWriters(t, tr, connOfSession(t, tr, useB), 1)
	served := stop()
	got := receive(t, b, "SEND")
	if got.Flag != '#' {
		t.Fatalf("the chunk in flight reached B with flag %q after %d bytes, want '#'", got.Flag, got.BodySize)
	}
	<-served
}

// Issue 15 defect 4: a relay in the middle of a chain, shut down while a
// chunk streams through it, finishes that chunk on its outbound leg (the
// leg is busy while a frame is written to it, though its read side is
// idle): B gets it whole.
func TestShutdownMiddleRelayFinishesChunk(t *testing.T) {
	r1, stop := startRelayStop(t, nil)
	r2 := startRelay(t, nil)
	a, ga, useA := gatedWriter(t, r1, "alice")
	b, useB := client(t, r2, "bob", msrpclient.Options{})
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i)
	}
	ga.stopWritesAfter(64 << 10)
	ctx := ctxT(t)
	sent := make(chan *msrpclient.Pending, 1)
	go func() { // SendAsync writes the chunk before it returns
		p, err := a.SendAsync(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: body, ContentType: "application/octet-stream"})
		if err != nil {
			t.Error(err)
		}
		sent <- p
	}()
	var out uint64
	for deadline := time.Now().Add(20 * time.Second); out == 0; {
		for _, c := range r1.Connections() {
			if c.Dir == event.DirOut {
				out = c.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("R1 opened no connection to R2")
		}
		time.Sleep(time.Millisecond) // polling a state, not ordering events
	}
	waitWriters(t, r1, out, 1)
	served := stop()
	ga.openWrites()
	got := receive(t, b, "SEND")
	if got.Flag != '$' || got.BodySize != int64(len(body)) || got.Sum() != sha256.Sum256(body) {
		t.Fatalf("B got %d bytes, flag %q; want the whole chunk with '$'", got.BodySize, got.Flag)
	}
	pa := <-sent
	if pa == nil {
		t.FailNow()
	}
	res, err := pa.Wait(ctx)
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("A's SEND: %+v %v", res, err)
	}
	<-served
}

// Issue 14 defect 3: a shutdown under load loses nothing silently: every
// SEND answered 200 reached B whole, or its sender got a failure REPORT.
func TestShutdownUnderLoad(t *testing.T) {
	const loadBody = 20000
	tr, stop := startRelayStop(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	gb := newGatedConn(t, tr.addr())
	gb.slow = true
	b := msrpclient.New(gb, false, msrpclient.Options{IncomingQueue: 1 << 16})
	t.Cleanup(func() { _ = b.Close() })
	useB, _, err := b.Auth(ctxT(t), tr.uri, "bob", testUsers["bob"], 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	answered := map[string]bool{} // Message-ID → answered 200
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		body := make([]byte, loadBody)
		for i := 0; ; i++ {
			p, err := a.SendAsync(context.Background(), []string{useA, useB, b.LocalURI()},
				msrpclient.Message{MessageID: fmt.Sprintf("m%06d", i), Body: body, ContentType: "text/plain"})
			if err != nil {
				return
			}
			go func() {
				res, err := p.Wait(context.Background())
				if err == nil && len(res.Chunks) == 1 && res.Chunks[0].Code == 200 {
					mu.Lock()
					answered[res.MessageID] = true
					mu.Unlock()
				}
			}()
		}
	}()
	delivered := map[string]bool{}
	for len(delivered) < 500 {
		got := receive(t, b, "SEND")
		if got.Flag == '$' && got.BodySize == loadBody {
			delivered[got.MessageID] = true
		}
	}
	served := stop()
	<-served
	<-sending
	// What B still had, and A's REPORTs.
	for got := range b.Incoming() {
		if got.Method == "SEND" && got.Flag == '$' && got.BodySize == loadBody {
			delivered[got.MessageID] = true
		}
	}
	reported := map[string]bool{}
	for got := range a.Incoming() {
		if got.Method == "REPORT" && got.Status != nil && got.Status.Code != 200 {
			reported[got.MessageID] = true
		}
	}
	<-a.Done()
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for id := range answered {
		if !delivered[id] && !reported[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d SENDs answered 200 neither reached B nor got a failure REPORT (%d delivered, %d reported)",
			lost, len(answered), len(delivered), len(reported))
	}
	t.Logf("%d answered 200, %d delivered, %d failure REPORTs", len(answered), len(delivered), len(reported))
}
