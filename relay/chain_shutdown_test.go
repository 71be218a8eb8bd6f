package relay_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// tlsChain starts three relays with msrps listeners asking for client
// certificates and outbound TLS with one, the third on ::1, as in
// TestChainOfThreeTLS; mod adjusts all three. It returns the middle
// relay's stop (its graceful shutdown, as SIGTERM does).
func tlsChain(t *testing.T, mod func(*relay.Config)) (r1, r2, r3 *testRelay, stop2 func() <-chan struct{}, pki *testPKI) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	ln.Close()
	pki = newPKI(t)
	cfg := func(addr string) func(*relay.Config) {
		return func(c *relay.Config) {
			c.Listen = []relay.Listen{{Transport: "msrps", Addr: addr, Cert: pki.certFile, Key: pki.keyFile,
				ClientCA: pki.caFile, ClientAuth: "request"}}
			c.Outbound = relay.Outbound{CAFile: pki.caFile, Cert: pki.certFile, Key: pki.keyFile}
			if mod != nil {
				mod(c)
			}
		}
	}
	r1 = startRelay(t, cfg("127.0.0.1:0"))
	r2, stop2 = startRelayStop(t, cfg("127.0.0.1:0"))
	r3 = startRelay(t, cfg("[::1]:0"))
	if !strings.HasPrefix(r3.uri, "msrps://[::1]:") {
		t.Fatalf("R3 %q", r3.uri)
	}
	return r1, r2, r3, stop2, pki
}

// authChain authenticates c (on rs[0]) at each relay of rs through the
// ones before (RFC 4976 §5.1) and returns the last Use-Path.
func authChain(t *testing.T, c *msrpclient.Client, first string, user string, rs ...*testRelay) []string {
	t.Helper()
	use := []string{first}
	for i, r := range rs {
		got, _, err := c.AuthPath(ctxT(t), append(append([]string(nil), use...), r.uri), user, testUsers[user], 0)
		if err != nil {
			t.Fatalf("AUTH at relay %d of the chain: %v", i+2, err)
		}
		use = strings.Fields(got)
	}
	return use
}

// gatedTLSClient authenticates user at tr over TLS on a gatedConn.
func gatedTLSClient(t *testing.T, tr *testRelay, pki *testPKI, user string) (*msrpclient.Client, *gatedConn, string) {
	t.Helper()
	g := newGatedConn(t, tr.addr())
	c := msrpclient.New(tls.Client(g, pki.clientTLS()), true, msrpclient.Options{})
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(g.open) // before Close (cleanups run last first): Close waits for the reader
	t.Cleanup(g.openWrites)
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s over TLS: %v", user, err)
	}
	return c, g, use
}

// Issue 15 defect 4 on a chain of three relays, TLS with client
// certificates between them, the last leg on ::1: B (on R3) sends A (on
// R1) a chunk that streams through R2; R2 gets SIGTERM (its graceful
// shutdown) while it writes the chunk on towards R1. R2 finishes that
// chunk within shutdown_grace: A gets it whole, ended with '$', not cut
// with '#'.
func TestChainMiddleRelayShutdownFinishesChunk(t *testing.T) {
	for _, tc := range []struct {
		name, failureReport string
		code                int // B's response: 0 when none is awaited
	}{
		{"Failure-Report yes", "", 200},
		// No transaction awaits a response on R2's leg to R1: only the
		// frame being written keeps that leg open.
		{"Failure-Report no", "no", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chainShutdownChunk(t, tc.failureReport, tc.code)
		})
	}
}

func chainShutdownChunk(t *testing.T, failureReport string, code int) {
	r1, r2, r3, stop2, pki := tlsChain(t, func(c *relay.Config) { c.Limits.ShutdownGrace = 30 * time.Second })
	a, useA1 := tlsClient(t, r1, pki, "alice")
	use := authChain(t, a, useA1, "alice", r2, r3)
	b, gb, useB3 := gatedTLSClient(t, r3, pki, "carol")
	_, useIdle := tlsClient(t, r2, pki, "bob") // idle: R2's shutdown closes it
	idle := connOfSession(t, r2, useIdle)
	toA := []string{useB3}
	for i := len(use) - 1; i >= 0; i-- {
		toA = append(toA, use[i])
	}
	toA = append(toA, a.LocalURI())

	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i)
	}
	gb.stopWritesAfter(64 << 10) // the chunk's first 64 KiB, then B stalls mid-body
	ctx := ctxT(t)
	sent := make(chan *msrpclient.Pending, 1)
	go func() { // SendAsync writes the chunk before it returns
		p, err := b.SendAsync(ctx, toA, msrpclient.Message{Body: body, ContentType: "application/octet-stream", FailureReport: failureReport})
		if err != nil {
			t.Error(err)
		}
		sent <- p
	}()
	// The chunk is being written by R2 on its leg towards R1.
	for deadline := time.Now().Add(20 * time.Second); ; {
		busy := false
		for _, c := range r2.Connections() {
			if relay.ConnWriters(r2.Relay, c.ID) > 0 {
				busy = true
			}
		}
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("R2 writes no frame on any connection")
		}
		time.Sleep(time.Millisecond) // polling a state, not ordering events
	}
	served := stop2()
	// R2's shutdown went over its connections and closed the quiet ones
	// while the chunk is still mid-body; then B sends the rest.
	r2.obs.waitFor(t, "idle connection closed", func(e recEvent) bool { return e.kind == event.Closed && e.conn.ID == idle })
	gb.openWrites()
	got := receive(t, a, "SEND")
	if got.Flag != '$' || got.BodySize != int64(len(body)) || got.Sum() != sha256.Sum256(body) {
		t.Fatalf("A got %d bytes, flag %q; want the whole chunk with '$'", got.BodySize, got.Flag)
	}
	pb := <-sent
	if pb == nil {
		t.FailNow()
	}
	res, err := pb.Wait(ctx)
	if err != nil || res.Chunks[0].Code != code {
		t.Fatalf("B's SEND: %+v %v, want %d", res, err, code)
	}
	<-served
}

// Issue 15 defect 5 on a chain of three relays, TLS with client
// certificates between them, the last leg on ::1: R2 forwarded A's SEND
// whole to R3, which does not answer yet (B's connection there is busy
// with another chunk B does not read); R2's connection to R3 then closes
// (here by the admin). A gets its 408 failure REPORT at once: far within
// 20s, with transaction_timeout 60s.
func TestChainNextHopClosedFailsSendAtOnce(t *testing.T) {
	r1, r2, r3, _, pki := tlsChain(t, func(c *relay.Config) {
		c.Limits.TransactionTimeout = 60 * time.Second
		c.Limits.ShutdownGrace = time.Second // the end of the test: Bob's chunk is not waited for
	})
	a, useA1 := tlsClient(t, r1, pki, "alice")
	use := authChain(t, a, useA1, "alice", r2, r3)
	b, gb, useB3 := gatedTLSClient(t, r3, pki, "carol")
	bob, useBob3 := tlsClient(t, r3, pki, "bob")
	gb.stop()
	bConn := connOfSession(t, r3, useB3)
	// Bob's large chunk holds B's write lock at R3: what else comes for B
	// waits, unanswered.
	// SendAsync writes the whole chunk, which the kernel's buffers may not
	// hold while B reads nothing: it runs beside the test.
	sentBob := make(chan error, 1)
	go func() {
		_, err := bob.SendAsync(ctxT(t), []string{useBob3, useB3, b.LocalURI()}, msrpclient.Message{Body: make([]byte, 16<<20), ContentType: "application/octet-stream"})
		sentBob <- err
	}()
	t.Cleanup(func() { <-sentBob })
	waitWriters(t, r3, bConn, 1)
	var out uint64
	for _, c := range r2.Connections() {
		if c.Dir == event.DirOut {
			out = c.ID
		}
	}
	if out == 0 {
		t.Fatal("R2 has no connection to R3")
	}

	toB := append(append(append([]string(nil), use...), useB3), b.LocalURI())
	res, err := a.Send(ctxT(t), toB, msrpclient.Message{Body: []byte("through three"), ContentType: "text/plain"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND: %+v %v", res, err)
	}
	// R2 wrote the SEND whole to R3; R3 waits to forward it to B.
	r2.obs.waitFor(t, "SEND out to R3", func(e recEvent) bool {
		return e.kind == event.FrameOut && e.conn.ID == out && e.method == "SEND" && e.messageID == res.MessageID
	})
	waitWriters(t, r3, bConn, 2)
	if err := r2.KillConnection(out); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case rep := <-a.Incoming():
		if rep.Method != "REPORT" || rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != 408 {
			t.Fatalf("got %s %+v, want a 408 REPORT", rep.Method, rep.Status)
		}
	case <-ctx.Done():
		t.Fatal("no failure REPORT within 20s (transaction_timeout 60s)")
	}
}
