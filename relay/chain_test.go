package relay_test

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
)

// teeConn keeps a copy of what a client reads.
type teeConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *teeConn) read() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got.String()
}

// teeClient dials tr over a teeConn and authenticates as user.
func teeClient(t *testing.T, tr *testRelay, user string) (*msrpclient.Client, *teeConn, string) {
	t.Helper()
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	tc := &teeConn{Conn: nc}
	c := msrpclient.New(tc, false, msrpclient.Options{})
	t.Cleanup(func() { _ = c.Close() })
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s: %v", user, err)
	}
	return c, tc, use
}

// endToEnd sends a NICKNAME from a to b along toPath, has b answer 200 and
// returns the code a got.
func endToEnd(t *testing.T, a, b *msrpclient.Client, toPath []string) int {
	t.Helper()
	type res struct {
		code int
		err  error
	}
	done := make(chan res, 1)
	go func() {
		code, _, err := a.Request(ctxT(t), "NICKNAME", toPath, []msrpclient.Header{{Name: "Use-Nickname", Value: `"al"`}}, nil)
		done <- res{code, err}
	}()
	got := receive(t, b, "NICKNAME")
	if err := b.Respond(got, 200, "OK"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("NICKNAME: %v", r.err)
	}
	return r.code
}

// Issue 15 defect 2: with both sessions on one relay, the end-to-end
// response goes back with every one of the relay's URIs removed from
// To-Path (RFC 4976 §6.4.3), and its From-Path names both.
func TestEndToEndResponseBothSessionsOnOneRelay(t *testing.T) {
	tr := startRelay(t, nil)
	a, tap, useA := teeClient(t, tr, "alice")
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	if code := endToEnd(t, a, b, []string{useA, useB, b.LocalURI()}); code != 200 {
		t.Fatalf("NICKNAME: %d", code)
	}
	want := "MSRP "
	got := tap.read()
	i := strings.LastIndex(got, want)
	resp := got[i:]
	if !strings.Contains(resp, " 200 OK\r\nTo-Path: "+a.LocalURI()+"\r\nFrom-Path: "+useA+" "+useB+" "+b.LocalURI()+"\r\n") {
		t.Fatalf("A got the response\n%s", resp)
	}
}

// Issue 15 defect 2 through a chain: A on R1 and authenticated at R2
// through R1, B on R2: B's 200 reaches A (not a 408 after the timeout).
func TestEndToEndResponseThroughChain(t *testing.T) {
	mod := func(c *relay.Config) { c.Limits.TransactionTimeout = 5 * time.Second }
	r1 := startRelay(t, mod)
	r2 := startRelay(t, mod)
	a, tap, useA1 := teeClient(t, r1, "alice")
	b, useB2 := client(t, r2, "bob", msrpclient.Options{})
	useA2, _, err := a.AuthPath(ctxT(t), []string{useA1, r2.uri}, "alice", testUsers["alice"], 0)
	if err != nil {
		t.Fatalf("AUTH at R2 through R1: %v", err)
	}
	useA2 = strings.Fields(useA2)[len(strings.Fields(useA2))-1]
	if code := endToEnd(t, a, b, []string{useA1, useA2, useB2, b.LocalURI()}); code != 200 {
		t.Fatalf("NICKNAME through two relays: %d, want B's 200", code)
	}
	got := tap.read()
	resp := got[strings.LastIndex(got, "MSRP "):]
	if !strings.Contains(resp, " 200 OK\r\nTo-Path: "+a.LocalURI()+"\r\nFrom-Path: "+useA1+" "+useA2+" "+useB2+" "+b.LocalURI()+"\r\n") {
		t.Fatalf("A got the response\n%s", resp)
	}
}

// Issue 15 defect 3: a client that follows RFC 4976 §5.1 literally
// authenticates at each relay through the ones before, using the Use-Path
// it got as its To-Path prefix, and reaches B with the last Use-Path as
// its To-Path prefix: the outermost 200 lists every relay, nearest first.
func TestChainedAuthUsePath(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(strings.Repeat("R", n), func(t *testing.T) {
			rs := make([]*testRelay, n)
			for i := range rs {
				rs[i] = startRelay(t, nil)
			}
			a, useA1 := client(t, rs[0], "alice", msrpclient.Options{})
			use := []string{useA1}
			for i := 1; i < n; i++ {
				got, _, err := a.AuthPath(ctxT(t), append(append([]string(nil), use...), rs[i].uri), "alice", testUsers["alice"], 0)
				if err != nil {
					t.Fatalf("AUTH at R%d: %v", i+1, err)
				}
				gotPath := strings.Fields(got)
				if len(gotPath) != i+1 || strings.Join(gotPath[:i], " ") != strings.Join(use, " ") {
					t.Fatalf("Use-Path from R%d %q, want %q then R%d's", i+1, got, use, i+1)
				}
				use = gotPath
			}
			last := rs[n-1]
			b, useB := client(t, last, "bob", msrpclient.Options{})
			toB := append(append(append([]string(nil), use...), useB), b.LocalURI())
			res, err := a.Send(ctxT(t), toB, msrpclient.Message{Body: []byte("RFC path"), ContentType: "text/plain"})
			if err != nil || res.Chunks[0].Code != 200 {
				t.Fatalf("SEND along %q: %+v %v", toB, res, err)
			}
			if got := receive(t, b, "SEND"); string(got.Body) != "RFC path" {
				t.Fatalf("B got %+v", got)
			}
			// And back, along the reversed Use-Path (RFC 4976 §5.1: the
			// client's SDP path).
			toA := []string{useB}
			for i := len(use) - 1; i >= 0; i-- {
				toA = append(toA, use[i])
			}
			toA = append(toA, a.LocalURI())
			if _, err := b.Send(ctxT(t), toA, msrpclient.Message{Body: []byte("back"), ContentType: "text/plain"}); err != nil {
				t.Fatalf("SEND B→A along %q: %v", toA, err)
			}
			if got := receive(t, a, "SEND"); string(got.Body) != "back" {
				t.Fatalf("A got %+v", got)
			}
		})
	}
}

// Issue 15 defect 3, the extra relay's side of RFC 4976 §5.1's example:
// an AUTH that came through other relays (From-Path "intra alice") gets a
// Use-Path listing them, nearest the client first, then our new URI.
func TestAuthUsePathListsRelaysBefore(t *testing.T) {
	tr := startRelay(t, nil)
	for _, before := range [][]string{
		nil,
		{"msrp://intra.example.com:9000/jui787s2f;tcp"},
		{"msrp://r2.example.com:9000/x2;tcp", "msrp://r1.example.com:9000/x1;tcp"},
	} {
		local := "msrp://alice.example.com:9892/98cjs;tcp"
		c, err := msrpclient.DialOptions(ctxT(t), tr.addr(), nil, msrpclient.Options{LocalURI: local, FromPath: append(append([]string(nil), before...), local)})
		if err != nil {
			t.Fatal(err)
		}
		use, _, err := c.Auth(ctxT(t), tr.uri, "alice", testUsers["alice"], 0)
		_ = c.Close()
		if err != nil {
			t.Fatalf("AUTH From-Path %q: %v", before, err)
		}
		got := strings.Fields(use)
		want := len(before) + 1
		ok := len(got) == want && strings.HasPrefix(got[want-1], strings.TrimSuffix(tr.uri, ";tcp")+"/")
		for i := 0; ok && i < len(before); i++ {
			ok = got[i] == before[len(before)-1-i]
		}
		if !ok {
			t.Fatalf("From-Path %q: Use-Path %q", before, use)
		}
	}
}

// Issue 15 defect 1: Bob, authenticated at R1, sends wrong AUTHs to R2
// through R1. R2 refuses them (after max_auth_failures without checking
// them) but keeps its connection from R1 (RFC 4976 §6.3: "a relay SHOULD
// NOT use excessive AUTH request failures as a reason to terminate a
// connection with another relay"): Alice's traffic over it goes on, and
// Bob can still not guess at R2.
func TestRelayedAuthFailuresKeepRelayLink(t *testing.T) {
	const maxFails = 3
	r1 := startRelay(t, nil)
	r2 := startRelay(t, func(c *relay.Config) { c.Limits.MaxAuthFailures = maxFails })
	a, useA1 := client(t, r1, "alice", msrpclient.Options{})
	useA2, _, err := a.AuthPath(ctxT(t), []string{useA1, r2.uri}, "alice", testUsers["alice"], 0)
	if err != nil {
		t.Fatalf("AUTH alice at R2 through R1: %v", err)
	}
	carol, useC2 := client(t, r2, "carol", msrpclient.Options{})
	b, useB1 := client(t, r1, "bob", msrpclient.Options{})
	codes := make([]int, 0, 5)
	for range 5 {
		_, _, err := b.AuthPath(ctxT(t), []string{useB1, r2.uri}, "bob", "wrong", 0)
		if err == nil {
			t.Fatal("wrong password accepted")
		}
		codes = append(codes, statusCode(t, err))
	}
	path := strings.Fields(useA2)
	toC := append(append(path, useC2), carol.LocalURI())
	res, err := a.Send(ctxT(t), toC, msrpclient.Message{Body: []byte("still here"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND A→C: %+v %v", res, err)
	}
	if got := receive(t, carol, "SEND"); string(got.Body) != "still here" {
		t.Fatalf("C got %+v", got)
	}
	if rep := receive(t, a, "REPORT"); rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("REPORT to A %+v, want 200 (the link from R1 kept)", rep)
	}
	if codes[0] != 401 || codes[4] != 403 {
		t.Fatalf("codes of the wrong AUTHs %v, want 401 first, 403 once refused", codes)
	}
	// Bob's right password is refused too while he is locked out here.
	if _, _, err := b.AuthPath(ctxT(t), []string{useB1, r2.uri}, "bob", testUsers["bob"], 0); statusCode(t, err) != 403 {
		t.Fatalf("AUTH bob after the failures: %v, want 403", err)
	}
	// A direct client is still closed after max_auth_failures.
	d, err := msrpclient.Dial(ctxT(t), r2.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for range maxFails {
		if _, _, err := d.Auth(ctxT(t), r2.uri, "alice", "wrong", 0); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("direct connection still open after the failed AUTHs")
	}
}

// Issue 15 defects 1-3 on a chain of three relays, TLS with client
// certificates between them, the last leg on ::1: A authenticates at each
// relay through the ones before as RFC 4976 §5.1 says and reaches B on R3
// with the Use-Path it got; B's end-to-end 200 comes back; Bob's wrong
// AUTHs through R1 to R2 leave the R1-R2 link standing.
func TestChainOfThreeTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	ln.Close()
	pki := newPKI(t)
	tlsRelay := func(addr string, fails int) *testRelay {
		return startRelay(t, func(c *relay.Config) {
			c.Listen = []relay.Listen{{Transport: "msrps", Addr: addr, Cert: pki.certFile, Key: pki.keyFile,
				ClientCA: pki.caFile, ClientAuth: "request"}}
			c.Outbound = relay.Outbound{CAFile: pki.caFile, Cert: pki.certFile, Key: pki.keyFile}
			c.Limits.MaxAuthFailures = fails
			c.Limits.TransactionTimeout = 5 * time.Second
		})
	}
	r1 := tlsRelay("127.0.0.1:0", 0)
	r2 := tlsRelay("127.0.0.1:0", 3)
	r3 := tlsRelay("[::1]:0", 0)
	if !strings.HasPrefix(r3.uri, "msrps://[::1]:") {
		t.Fatalf("R3 %q", r3.uri)
	}
	a, useA1 := tlsClient(t, r1, pki, "alice")
	use := []string{useA1}
	for i, r := range []*testRelay{r2, r3} {
		got, _, err := a.AuthPath(ctxT(t), append(append([]string(nil), use...), r.uri), "alice", testUsers["alice"], 0)
		if err != nil {
			t.Fatalf("AUTH at R%d: %v", i+2, err)
		}
		if f := strings.Fields(got); len(f) != i+2 || strings.Join(f[:i+1], " ") != strings.Join(use, " ") {
			t.Fatalf("Use-Path from R%d %q after %q", i+2, got, use)
		}
		use = strings.Fields(got)
	}
	b, useB3 := tlsClient(t, r3, pki, "carol")
	toB := append(append(append([]string(nil), use...), useB3), b.LocalURI())
	if code := endToEnd(t, a, b, toB); code != 200 {
		t.Fatalf("NICKNAME along %q: %d, want B's 200", toB, code)
	}

	bob, useBob1 := tlsClient(t, r1, pki, "bob")
	for range 5 {
		if _, _, err := bob.AuthPath(ctxT(t), []string{useBob1, r2.uri}, "bob", "wrong", 0); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	res, err := a.Send(ctxT(t), toB, msrpclient.Message{Body: []byte("three relays"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND: %+v %v", res, err)
	}
	if got := receive(t, b, "SEND"); string(got.Body) != "three relays" {
		t.Fatalf("B got %+v", got)
	}
	if rep := receive(t, a, "REPORT"); rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("REPORT %+v", rep)
	}
}
