package relay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// testUsers are the users of every test relay.
var testUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

func users(t testing.TB) *auth.Users {
	t.Helper()
	u := auth.NewUsers()
	for name, pw := range testUsers {
		if err := u.Add(auth.User{Name: name, Password: pw}); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// recorder is an Observer that keeps copies of every event.
type recorder struct {
	mu     sync.Mutex
	events []recEvent
	signal chan struct{}
}

type recEvent struct {
	kind      event.Kind
	conn      event.ConnInfo
	reason    event.CloseReason
	tls       *event.TLSInfo
	method    string
	status    int
	from      string
	to        string
	time      time.Time
	tid       string
	messageID string
	size      int64
	wire      []byte
	dir       event.Direction
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) Observe(e *event.Event) {
	ev := recEvent{kind: e.Kind, conn: e.Conn, reason: e.Reason}
	if e.TLS != nil {
		t := *e.TLS
		ev.tls = &t
	}
	if f := e.Frame; f != nil {
		ev.method, ev.status, ev.from, ev.to, ev.size, ev.dir = string(f.Method), f.Status, f.FromSession, f.ToSession, f.Size, f.Dir
		ev.time, ev.tid, ev.messageID = e.Time, string(f.TransactID), string(f.MessageID)
		ev.wire = bytes.Clone(f.Wire)
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// waitFor waits until some recorded event satisfies ok.
func (r *recorder) waitFor(t *testing.T, what string, ok func(recEvent) bool) recEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for _, e := range r.events {
			if ok(e) {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("no %s event within 10s", what)
		}
	}
}

// waitCount waits until n recorded events satisfy ok and returns them.
func (r *recorder) waitCount(t *testing.T, what string, n int, ok func(recEvent) bool) []recEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		var got []recEvent
		r.mu.Lock()
		for _, e := range r.events {
			if ok(e) {
				got = append(got, e)
			}
		}
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("%d %s events within 10s, want %d", len(got), what, n)
		}
	}
}

type testRelay struct {
	*relay.Relay
	uri string
	obs *recorder
}

// startRelay runs a relay on a free loopback port until the test ends.
func startRelay(t *testing.T, mod func(*relay.Config)) *testRelay {
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
	r, stop := runRelay(t, cfg)
	t.Cleanup(stop)
	return &testRelay{Relay: r, uri: r.URIs()[0].String(), obs: obs}
}

// runRelay runs a relay with cfg until stop, which returns once Serve has
// (or fails the test after 30s).
func runRelay(t *testing.T, cfg relay.Config) (r *relay.Relay, stop func()) {
	t.Helper()
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	return r, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("relay did not shut down within 30s")
		}
	}
}

func (tr *testRelay) addr() string { return tr.Addrs()[0].String() }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// client dials the relay and authenticates as user.
func client(t *testing.T, tr *testRelay, user string, opts msrpclient.Options) (*msrpclient.Client, string) {
	t.Helper()
	c, err := msrpclient.DialOptions(ctxT(t), tr.addr(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	use, _, err := c.Auth(ctxT(t), tr.uri, user, testUsers[user], 0)
	if err != nil {
		t.Fatalf("AUTH %s: %v", user, err)
	}
	return c, use
}

func receive(t *testing.T, c *msrpclient.Client, method string) *msrpclient.Received {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case r, ok := <-c.Incoming():
			if !ok {
				t.Fatalf("client closed while waiting for %s: %v", method, c.Err())
			}
			if r.Method == method {
				return r
			}
		case <-deadline:
			t.Fatalf("no %s within 20s", method)
		}
	}
}

func TestAuthSendBothWaysWithReports(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	if !strings.HasPrefix(useA, tr.uri[:len(tr.uri)-len(";tcp")]+"/") || !strings.HasSuffix(useA, ";tcp") || useA == useB {
		t.Fatalf("Use-Paths %q %q for relay %q", useA, useB, tr.uri)
	}

	res, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{
		Body: []byte("Hello Bob"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND A→B: %+v, %v", res, err)
	}
	got := receive(t, b, "SEND")
	if string(got.Body) != "Hello Bob" || got.Flag != '$' || got.MessageID != res.MessageID {
		t.Fatalf("B got %+v", got)
	}
	// The relay moved its URIs from To-Path to From-Path (RFC 4976 §6.4).
	if strings.Join(got.ToPath, " ") != b.LocalURI() || strings.Join(got.FromPath, " ") != useB+" "+useA+" "+a.LocalURI() {
		t.Fatalf("B got To-Path %q From-Path %q", got.ToPath, got.FromPath)
	}
	// B's success REPORT travels back to A.
	rep := receive(t, a, "REPORT")
	if rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("A got REPORT %+v", rep)
	}

	res, err = b.Send(ctxT(t), []string{useB, useA, a.LocalURI()}, msrpclient.Message{Body: []byte("Hi Alice"), ContentType: "text/plain"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND B→A: %+v, %v", res, err)
	}
	if got := receive(t, a, "SEND"); string(got.Body) != "Hi Alice" {
		t.Fatalf("A got %+v", got)
	}

	// NICKNAME (RFC 7701) and an unknown method are relayed, not refused
	// with 501 as OpenSIPS msrp_relay does; their responses travel back end
	// to end.
	for _, m := range []string{"NICKNAME", "FOOBAR"} {
		done := make(chan error, 1)
		go func() {
			_, _, err := a.Request(ctxT(t), m, []string{useA, useB, b.LocalURI()}, []msrpclient.Header{{Name: "Use-Nickname", Value: `"al"`}}, nil)
			done <- err
		}()
		got := receive(t, b, m)
		if v, _ := got.Get("Use-Nickname"); v != `"al"` {
			t.Fatalf("B got %+v", got)
		}
		if err := b.Respond(got, 425, "Nickname in use"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; statusCode(t, err) != 425 {
			t.Fatalf("%s: %v, want the end-to-end 425", m, err)
		}
	}

	// The observer saw the frames, with the session, and the connections.
	in := tr.obs.waitFor(t, "frame-in SEND", func(e recEvent) bool {
		return e.kind == event.FrameIn && e.method == "SEND"
	})
	if in.from == "" || in.to == "" || !bytes.HasPrefix(in.wire, []byte("MSRP ")) || int64(len(in.wire)) != in.size {
		t.Fatalf("frame-in event %+v", in)
	}
	out := tr.obs.waitFor(t, "frame-out SEND", func(e recEvent) bool {
		return e.kind == event.FrameOut && e.method == "SEND"
	})
	if !bytes.Contains(out.wire, []byte("Hello Bob")) || int64(len(out.wire)) != out.size {
		t.Fatalf("frame-out event %q", out.wire)
	}
	tr.obs.waitFor(t, "accepted", func(e recEvent) bool { return e.kind == event.Accepted })
}

func TestSessionChecks(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	c, _ := client(t, tr, "carol", msrpclient.Options{})

	code := func(err error) int {
		var se *msrpclient.StatusError
		if errors.As(err, &se) {
			return se.Code
		}
		t.Fatalf("error %v is not a status error", err)
		return 0
	}
	bad := useA[:strings.LastIndexByte(useA, '/')] + "/nosuchsession;tcp" // same relay, unknown session-id
	tests := []struct {
		name string
		from *msrpclient.Client
		to   []string
		want int
	}{
		{"unknown session", a, []string{bad, useB, b.LocalURI()}, 481},
		{"foreign session: carol uses alice's URI outwards", c, []string{useA, useB, b.LocalURI()}, 403},
		{"no next hop", a, []string{useA}, 400},
		// Last: RFC 4976 §6.2 has the relay drop the connection after it.
		{"not addressed to this relay", a, []string{"msrp://192.0.2.1:2855/abc;tcp", b.LocalURI()}, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.from.Send(ctxT(t), tc.to, msrpclient.Message{Body: []byte("x"), ContentType: "text/plain"})
			if got := code(err); got != tc.want {
				t.Fatalf("code %d, want %d", got, tc.want)
			}
		})
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection kept after a request not addressed to the relay")
	}
	tr.obs.waitFor(t, "closed(not-for-us)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseNotForUs
	})
}

func TestBadDigestAndExpires(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) {
		c.Auth.MinExpires, c.Auth.MaxExpires, c.Auth.Expires = 60, 600, 300
	})
	c, err := msrpclient.Dial(ctxT(t), tr.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code := func(err error) int {
		var se *msrpclient.StatusError
		if !errors.As(err, &se) {
			t.Fatalf("error %v is not a status error", err)
		}
		return se.Code
	}
	if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", "wrong", 0); code(err) != 401 {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := c.Auth(ctxT(t), tr.uri, "mallory", "x", 0); code(err) != 401 {
		t.Fatalf("unknown user: %v", err)
	}
	if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", "alice-pw", 10); code(err) != 423 {
		t.Fatalf("Expires below min: %v", err)
	}
	if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", "alice-pw", 6000); code(err) != 423 {
		t.Fatalf("Expires above max: %v", err)
	}
	use, exp, err := c.Auth(ctxT(t), tr.uri, "alice", "alice-pw", 120)
	if err != nil || exp != 120 || use == "" {
		t.Fatalf("AUTH with Expires 120: %q %d %v", use, exp, err)
	}
	if _, exp, err := c.Auth(ctxT(t), tr.uri, "alice", "alice-pw", 0); err != nil || exp != 300 {
		t.Fatalf("AUTH default Expires: %d %v", exp, err)
	}
}

// Failed AUTHs without success close the connection (RFC 4976 §6.3).
func TestTooManyAuthFailuresClose(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.MaxAuthFailures = 3 })
	c, err := msrpclient.Dial(ctxT(t), tr.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", "wrong", 0); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open after 3 failed AUTHs")
	}
	tr.obs.waitFor(t, "closed(limit)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.CloseLimit
	})
}

// A 1 MB message in 64 KiB chunks and a 100 MB message as one chunk pass
// through; the relay streams them (memory is checked in the benchmark
// and by the relay's bounded buffers, not here).
func TestLargeMessages(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{MaxBodyKeep: 128 << 10})
	to := []string{useA, useB, b.LocalURI()}

	body := bytes.Repeat([]byte("0123456789abcdef\r\n-------x$\r\n"), (1<<20)/29+1)[:1<<20]
	res, err := a.Send(ctxT(t), to, msrpclient.Message{Body: body, ChunkSize: 64 << 10, ContentType: "application/octet-stream"})
	if err != nil || len(res.Chunks) != 16 {
		t.Fatalf("1 MB: %+v %v", res, err)
	}
	var joined []byte
	for i := 0; i < 16; i++ {
		got := receive(t, b, "SEND")
		if got.ByteRange.Start != int64(len(joined))+1 || got.ByteRange.Total != 1<<20 {
			t.Fatalf("chunk %d Byte-Range %+v", i, got.ByteRange)
		}
		joined = append(joined, got.Body...)
	}
	if !bytes.Equal(joined, body) {
		t.Fatal("1 MB message arrived changed")
	}

	const big = 100 << 20
	gen := io.LimitReader(repeatReader('z'), big)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err = a.Send(ctxT(t), to, msrpclient.Message{BodyReader: gen, Size: big, ChunkSize: big, ContentType: "application/octet-stream"})
	if err != nil || len(res.Chunks) != 1 || res.Chunks[0].Code != 200 {
		t.Fatalf("100 MB: %+v %v", res, err)
	}
	got := receive(t, b, "SEND")
	runtime.ReadMemStats(&after)
	// Sender, relay and receiver all in this process. The sending client
	// reads its chunk into one buffer (big); relay and receiver together
	// must add only a few MB: nothing else held the message whole.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > big+16<<20 {
		t.Fatalf("relaying 100 MB allocated %d MB", alloc>>20)
	}
	wantBig := sha256.New()
	_, _ = io.Copy(wantBig, io.LimitReader(repeatReader('z'), big))
	if got.BodySize != big || got.BodyHash == nil || !bytes.Equal(got.BodyHash[:], wantBig.Sum(nil)) {
		t.Fatalf("100 MB arrived as %d bytes", got.BodySize)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// The AUTH defaults the relay applies are DefaultAuth's (docs/CONFIG.md
// states them): a relay configured with none grants DefaultAuth().Expires.
func TestDefaultAuthApplied(t *testing.T) {
	tr := startRelay(t, nil)
	c, err := msrpclient.Dial(ctxT(t), tr.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := relay.DefaultAuth()
	if d.Expires != 1800 || d.MinExpires != 60 || d.MaxExpires != 3600 {
		t.Fatalf("DefaultAuth %+v, docs/CONFIG.md says 1800, 60, 3600", d)
	}
	if _, exp, err := c.Auth(ctxT(t), tr.uri, "alice", testUsers["alice"], 0); err != nil || exp != d.Expires {
		t.Fatalf("AUTH without Expires: granted %d (%v), want %d", exp, err, d.Expires)
	}
	if _, _, err := c.Auth(ctxT(t), tr.uri, "alice", testUsers["alice"], d.MaxExpires+1); statusCode(t, err) != 423 {
		t.Fatalf("AUTH above DefaultAuth().MaxExpires: %v", err)
	}
}
