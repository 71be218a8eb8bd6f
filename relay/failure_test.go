package relay_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

func statusCode(t *testing.T, err error) int {
	t.Helper()
	var se *msrpclient.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a status error", err)
	}
	return se.Code
}

// Garbage instead of a frame closes the connection, traced as a protocol error.
func TestGarbageBeforeFrameCloses(t *testing.T) {
	tr := startRelay(t, nil)
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("relay answered garbage instead of closing")
	}
	tr.obs.waitFor(t, "closed(protocol-error)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseProtocol
	})
}

// A malformed frame whose transact-id is known is skipped; the connection
// goes on with the next frame.
func TestMalformedFrameSkipped(t *testing.T) {
	tr := startRelay(t, nil)
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frames := "MSRP bad1 SEND\r\nTo-Path: " + tr.uri + "\r\nFrom-Path: msrp://127.0.0.1:9/x;tcp\r\nMessage-ID: m1\r\nno colon here\r\n\r\nbody\r\n-------bad1$\r\n" +
		"MSRP good1 AUTH\r\nTo-Path: " + tr.uri + "\r\nFrom-Path: msrp://127.0.0.1:9/x;tcp\r\n-------good1$\r\n"
	if _, err := nc.Write([]byte(frames)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := msrp.NewReader(bufio.NewReader(nc), msrp.Limits{})
	// The malformed SEND is answered 400 (no request is dropped
	// silently), then the next frame is handled.
	f, err := rd.ReadFrame()
	if err != nil || string(f.TransactID) != "bad1" || f.StatusCode != 400 || string(f.Get(msrp.HdrToPath)) != "msrp://127.0.0.1:9/x;tcp" {
		t.Fatalf("answer to a malformed frame: %+v %v", f, err)
	}
	f, err = rd.ReadFrame()
	if err != nil || string(f.TransactID) != "good1" || f.StatusCode != 401 {
		t.Fatalf("after a malformed frame: %+v %v", f, err)
	}
}

// A client that sends its header fields one byte at a time is cut off by
// the header timeout (slowloris).
func TestHeaderTimeout(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.HeaderTimeout = 500 * time.Millisecond })
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond) // the scenario: 10 bytes/s
		defer tick.Stop()
		for _, b := range []byte("MSRP abcd AUTH\r\nTo-Path: msrp://x;tcp\r\n") {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := nc.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	tr.obs.waitFor(t, "closed(header-timeout)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseHeaderTimeout
	})
}

// A client that stops reading is closed by the send timeout; the sender is
// told with a failure REPORT and later SENDs find no session.
func TestSlowReaderSendTimeout(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.SendTimeout = 500 * time.Millisecond })
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	// B's Incoming holds one request; nobody takes it, so B's reader
	// blocks and B stops reading its socket.
	b, useB := client(t, tr, "bob", msrpclient.Options{IncomingQueue: 1})
	to := []string{useA, useB, b.LocalURI()}
	chunk := make([]byte, 256<<10)
	var sawFailure bool
	for i := 0; i < 200 && !sawFailure; i++ {
		_, err := a.Send(ctxT(t), to, msrpclient.Message{Body: chunk, ContentType: "application/octet-stream"})
		if err != nil {
			if statusCode(t, err) != 481 {
				t.Fatalf("SEND %d: %v", i, err)
			}
			sawFailure = true
		}
	}
	tr.obs.waitFor(t, "closed(send-timeout)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseSendTimeout
	})
	if !sawFailure {
		t.Fatal("SENDs to a client that stopped reading kept succeeding")
	}
	rep := receive(t, a, "REPORT")
	if rep.Status == nil || rep.Status.Code != 408 {
		t.Fatalf("REPORT %+v", rep)
	}
}

// fakeHop is a next hop that reads frames and answers with code (0: never).
func fakeHop(t *testing.T, code int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				rd := msrp.NewReader(bufio.NewReader(nc), msrp.Limits{})
				w := msrp.NewWriter(nc)
				for {
					f, err := rd.ReadFrame()
					if err != nil {
						return
					}
					from, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
					to, _ := msrp.SplitPath(f.Get(msrp.HdrToPath))
					tid := string(f.TransactID)
					if _, err := f.Body().WriteTo(discard{}); err != nil {
						return
					}
					if code == 0 || !f.IsRequest() || string(f.Method) == "REPORT" {
						continue
					}
					_ = w.StartResponse([]byte(tid), code, "Test")
					w.Header(msrp.HdrToPath, from)
					w.Header(msrp.HdrFromPath, to)
					if w.End(msrp.FlagEnd) != nil {
						return
					}
				}
			}()
		}
	}()
	return "msrp://" + ln.Addr().String() + "/hop;tcp"
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Failures after the relay accepted a SEND come back as REPORTs
// (RFC 4976 §6.4.1): an error response of the next hop, no response at all
// (408 after the transaction timeout), an unreachable next hop.
func TestFailureReports(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.TransactionTimeout = 500 * time.Millisecond })
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURI := "msrp://" + dead.Addr().String() + "/x;tcp"
	dead.Close()
	tests := []struct {
		name string
		hop  string
		fr   string
		want int // REPORT status; 0: no REPORT expected
	}{
		{"error response", fakeHop(t, 415), "", 415},
		{"no response", fakeHop(t, 0), "yes", 408},
		{"unreachable", deadURI, "", 408},
		{"partial: error response", fakeHop(t, 413), "partial", 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Send(ctxT(t), []string{useA, tc.hop}, msrpclient.Message{Body: []byte("hi"), ContentType: "text/plain", FailureReport: tc.fr})
			if err != nil {
				t.Fatalf("SEND: %v", err)
			}
			wantCode := 200
			if tc.fr == "partial" {
				wantCode = 0 // no positive response with partial
			}
			if res.Chunks[0].Code != wantCode {
				t.Fatalf("hop-by-hop response %d, want %d", res.Chunks[0].Code, wantCode)
			}
			rep := receive(t, a, "REPORT")
			if rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != tc.want {
				t.Fatalf("REPORT %+v status %+v", rep, rep.Status)
			}
			if rep.ByteRange.Start != 1 || strings.Join(rep.FromPath, " ") != useA {
				t.Fatalf("REPORT Byte-Range %+v From-Path %q", rep.ByteRange, rep.FromPath)
			}
			// The relay's REPORT travels back to the SEND's sender: its
			// sessions are the SEND's, swapped (here: no session beyond).
			out := tr.obs.waitFor(t, "frame-out REPORT", func(e recEvent) bool {
				return e.kind == event.FrameOut && e.method == "REPORT" && e.messageID == res.MessageID
			})
			if out.to != sidOf(useA) || out.from != "" {
				t.Fatalf("REPORT out sessions from %q to %q, want from \"\" to %q", out.from, out.to, sidOf(useA))
			}
		})
	}
}

// A session expires after its Expires; then requests get 481.
func TestExpiredSession(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Auth.MinExpires, c.Auth.Expires, c.Auth.MaxExpires = 1, 60, 60 })
	a, err := msrpclient.Dial(ctxT(t), tr.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	useA, exp, err := a.Auth(ctxT(t), tr.uri, "alice", "alice-pw", 1)
	if err != nil || exp != 1 {
		t.Fatalf("AUTH: %v %d", err, exp)
	}
	hop := fakeHop(t, 200)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := a.Send(ctxT(t), []string{useA, hop}, msrpclient.Message{Body: []byte("x"), ContentType: "text/plain"})
		if err != nil {
			if c := statusCode(t, err); c != 481 {
				t.Fatalf("code %d, want 481", c)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("session did not expire")
		}
	}
}

// IPv6 listener: the Use-Path carries the bracketed literal (RFC 4975 §9 takes
// the authority of RFC 3986, §3.2.2 IP-literal; OpenSIPS msrp_relay writes
// msrp://2001:db8::1:2855/...).
func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	ln.Close()
	tr := startRelay(t, func(c *relay.Config) { c.Listen = []relay.Listen{{Transport: "msrp", Addr: "[::1]:0"}} })
	if !strings.HasPrefix(tr.uri, "msrp://[::1]:") {
		t.Fatalf("listener URI %q", tr.uri)
	}
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	u, err := msrp.ParseURI(useA)
	if err != nil || u.Host != "::1" || u.SessionID == "" {
		t.Fatalf("Use-Path %q: %+v %v", useA, u, err)
	}
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	if _, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("v6"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b, "SEND"); string(got.Body) != "v6" {
		t.Fatalf("got %+v", got)
	}
}

// testPKI writes a CA and a certificate for 127.0.0.1, ::1 and localhost.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "msrpscope test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"),
		pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, "CERTIFICATE", caDER)
	write(p.certFile, "CERTIFICATE", der)
	write(p.keyFile, "EC PRIVATE KEY", keyDER)
	return p
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func tlsClient(t *testing.T, tr *testRelay, pki *testPKI, user string) (*msrpclient.Client, string) {
	t.Helper()
	c, err := msrpclient.Dial(ctxT(t), tr.addr(), pki.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s over TLS: %v", user, err)
	}
	return c, use
}

// msrps listeners: the Use-Path is a whole msrps URI (OpenSIPS msrp_relay
// sends a truncated one, auth.c operator precedence, and never receives
// requests whose To-Path is msrps), frames relay
// over TLS, and the handshake is traced with the peer certificate.
func TestTLS(t *testing.T) {
	pki := newPKI(t)
	tr := startRelay(t, func(c *relay.Config) {
		c.Listen = []relay.Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: pki.certFile, Key: pki.keyFile}}
	})
	if !strings.HasPrefix(tr.uri, "msrps://127.0.0.1:") {
		t.Fatalf("listener URI %q", tr.uri)
	}
	a, useA := tlsClient(t, tr, pki, "alice")
	b, useB := tlsClient(t, tr, pki, "bob")
	if !strings.HasPrefix(useA, "msrps://") {
		t.Fatalf("Use-Path %q is not msrps", useA)
	}
	if _, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("secret"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b, "SEND"); string(got.Body) != "secret" {
		t.Fatalf("got %+v", got)
	}
	hs := tr.obs.waitFor(t, "tls-handshake", func(e recEvent) bool { return e.kind == event.TLSHandshake })
	if !hs.tls.OK || hs.tls.Version == "" {
		t.Fatalf("handshake event %+v", hs.tls)
	}
	// A plain-TCP client on the TLS port fails the handshake, traced.
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write([]byte("MSRP abcd AUTH\r\n-------abcd$\r\n"))
	tr.obs.waitFor(t, "failed handshake", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseTLSFailed
	})
	nc.Close()
}

// Two relays in a chain, TLS on every hop, with client certificates
// between the relays: A on R1, B on R2; A authenticates at R2 through R1
// (RFC 4976 §5.1) and messages cross both ways.
func TestChainedRelaysTLS(t *testing.T) {
	pki := newPKI(t)
	mod := func(c *relay.Config) {
		c.Listen = []relay.Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: pki.certFile, Key: pki.keyFile,
			ClientCA: pki.caFile, ClientAuth: "request"}}
		c.Outbound = relay.Outbound{CAFile: pki.caFile, Cert: pki.certFile, Key: pki.keyFile}
	}
	r1 := startRelay(t, mod)
	r2 := startRelay(t, mod)
	a, useA1 := tlsClient(t, r1, pki, "alice")
	b, useB2 := tlsClient(t, r2, pki, "bob")
	useA2, _, err := a.AuthPath(ctxT(t), []string{r1.uri, r2.uri}, "alice", testUsers["alice"], 0)
	if err != nil {
		t.Fatalf("AUTH at R2 through R1: %v", err)
	}
	if !strings.HasPrefix(useA2, r2.uri[:len(r2.uri)-4]) {
		t.Fatalf("Use-Path from R2 %q", useA2)
	}
	res, err := a.Send(ctxT(t), []string{useA1, useA2, useB2, b.LocalURI()}, msrpclient.Message{Body: []byte("through two relays"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND A→B: %+v %v", res, err)
	}
	got := receive(t, b, "SEND")
	if string(got.Body) != "through two relays" || strings.Join(got.FromPath, " ") != useB2+" "+useA2+" "+useA1+" "+a.LocalURI() {
		t.Fatalf("B got %q From-Path %q", got.Body, got.FromPath)
	}
	if rep := receive(t, a, "REPORT"); rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("success REPORT %+v", rep)
	}
	if _, err := b.Send(ctxT(t), []string{useB2, useA2, useA1, a.LocalURI()}, msrpclient.Message{Body: []byte("and back"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("SEND B→A: %v", err)
	}
	if got := receive(t, a, "SEND"); string(got.Body) != "and back" {
		t.Fatalf("A got %+v", got)
	}
	// R1 dialled R2 over TLS, presenting its certificate.
	hs := r2.obs.waitFor(t, "tls-handshake with a client certificate", func(e recEvent) bool {
		return e.kind == event.TLSHandshake && e.tls.OK && e.tls.PeerSubject != ""
	})
	if !strings.Contains(hs.tls.PeerSubject, "relay.test") {
		t.Fatalf("peer subject %q", hs.tls.PeerSubject)
	}
	// The listings show the TLS peers: R2's connection from R1 (R1's client
	// certificate), R1's dialled one to R2 (R2's server certificate).
	hasPeer := func(r *testRelay, dir event.Direction) bool {
		for _, c := range r.Connections() {
			if c.Dir == dir && c.Transport == "msrps" && strings.Contains(c.TLSSubject, "relay.test") {
				return true
			}
		}
		return false
	}
	if !hasPeer(r2, event.DirIn) || !hasPeer(r1, event.DirOut) {
		t.Fatalf("TLS subjects in the listings: R1 %+v, R2 %+v", r1.Connections(), r2.Connections())
	}
}

// Connections beyond max_connections_per_ip are refused at once, traced.
func TestConnectionLimitPerIP(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.MaxConnectionsPerIP = 2 })
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		nc, err := net.Dial("tcp", tr.addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	tr.obs.waitCount(t, "accepted", 2, func(e recEvent) bool { return e.kind == event.Accepted })
	third, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection from one IP was served")
	}
	tr.obs.waitFor(t, "closed(limit)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseLimit
	})
	// The first two still work.
	c := msrpclient.New(conns[0], false, msrpclient.Options{})
	defer c.Close()
	conns = conns[1:]
	if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", testUsers["alice"], 0); err != nil {
		t.Fatalf("AUTH on an admitted connection: %v", err)
	}
	if st := tr.Stats(); st.Refused != 1 || st.Accepted != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// The same Authorization sent twice (a replayed nonce-count) is refused
// with a new challenge; the next nonce-count is accepted.
func TestReplayedNonce(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Auth.Algorithms = []string{"MD5"} })
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	rd := msrp.NewReader(bufio.NewReader(nc), msrp.Limits{})
	w := msrp.NewWriter(nc)
	from := "msrp://127.0.0.1:9/me;tcp"
	auth := func(authz string) (int, msrp.Digest) {
		t.Helper()
		if err := w.StartRequest(nil, "AUTH"); err != nil {
			t.Fatal(err)
		}
		w.HeaderString(msrp.HdrToPath, tr.uri)
		w.HeaderString(msrp.HdrFromPath, from)
		if authz != "" {
			w.HeaderString(msrp.HdrAuthorization, authz)
		}
		if err := w.End(msrp.FlagEnd); err != nil {
			t.Fatal(err)
		}
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		d, _ := msrp.ParseDigest(f.Get(msrp.HdrWWWAuthenticate))
		return f.StatusCode, d
	}
	code, ch := auth("")
	nonce, _ := ch.Get("nonce")
	realm, _ := ch.Get("realm")
	if code != 401 || nonce == "" {
		t.Fatalf("first AUTH: %d %v", code, ch)
	}
	h := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	creds := func(ncv string) string {
		ha1 := h("alice:" + realm + ":" + testUsers["alice"])
		resp := h(ha1 + ":" + nonce + ":" + ncv + ":c0ffee:auth:" + h("AUTH:"+tr.uri))
		return string(msrp.AppendDigest(nil, "Digest",
			msrp.DigestParam{Name: "username", Value: "alice", Quoted: true},
			msrp.DigestParam{Name: "realm", Value: realm, Quoted: true},
			msrp.DigestParam{Name: "nonce", Value: nonce, Quoted: true},
			msrp.DigestParam{Name: "uri", Value: tr.uri, Quoted: true},
			msrp.DigestParam{Name: "qop", Value: "auth"},
			msrp.DigestParam{Name: "nc", Value: ncv},
			msrp.DigestParam{Name: "cnonce", Value: "c0ffee", Quoted: true},
			msrp.DigestParam{Name: "response", Value: resp, Quoted: true}))
	}
	if code, _ := auth(creds("00000001")); code != 200 {
		t.Fatalf("AUTH with credentials: %d", code)
	}
	if code, _ := auth(creds("00000001")); code != 401 {
		t.Fatalf("replayed AUTH: %d, want 401", code)
	}
	if code, _ := auth(creds("00000002")); code != 200 {
		t.Fatalf("AUTH with the next nonce-count: %d", code)
	}
}
