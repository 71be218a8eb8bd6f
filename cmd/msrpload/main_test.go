package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/bench"
	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
)

// testRelay runs a real msrpscope relay (tracing off) on a free loopback
// port until the test ends, with users alice, bob and carol (password
// name+"-pw"), and returns its URI.
func testRelay(t *testing.T, mod func(*relay.Config)) string {
	uri, _ := testRelayStats(t, mod)
	return uri
}

// testRelayStats is testRelay that also returns the relay (for its Stats).
func testRelayStats(t *testing.T, mod func(*relay.Config)) (string, *relay.Relay) {
	t.Helper()
	users := auth.NewUsers()
	for _, n := range []string{"alice", "bob", "carol"} {
		if err := users.Add(auth.User{Name: n, Password: n + "-pw"}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := relay.Config{
		Listen: []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:  users,
		Logger: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30s")
		}
	})
	return r.URIs()[0].String(), r
}

// jsonReport runs msrpload with -json and decodes stdout, which must be
// one JSON object and nothing else.
func jsonReport(t *testing.T, args ...string) (code int, rep map[string]any, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"--json"}, args...), &out, &errOut)
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if dec.More() {
		t.Fatalf("stdout has more than one JSON value:\n%s", out.String())
	}
	return code, rep, errOut.String()
}

func num(t *testing.T, rep map[string]any, key string) float64 {
	t.Helper()
	v, ok := rep[key].(float64)
	if !ok {
		t.Fatalf("%s: %v (%T), want a number", key, rep[key], rep[key])
	}
	return v
}

var jsonKeys = []string{"pairs", "window", "body_bytes", "chunk_bytes", "seconds", "messages", "send_frames",
	"send_frames_per_sec", "mb_per_sec", "received_sends", "received_bytes", "errors",
	"messages_delivered", "send_latency_ns", "delivery_latency_ns", "exit_status", "msrpload_cpu_seconds", "hints"}

// The JSON object has exactly the documented fields (a harness parses
// them), latencies as integer ns.
func TestJSONShape(t *testing.T) {
	uri := testRelay(t, nil)
	code, rep, stderr := jsonReport(t, "-relay", uri, "-user", "alice:alice-pw", "-pairs", "2", "-window", "4", "-count", "50")
	if code != 0 {
		t.Fatalf("exit %d: %v\n%s", code, rep, stderr)
	}
	var keys []string
	for k := range rep {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Clone(jsonKeys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v\nwant %v", keys, want)
	}
	for _, k := range []string{"send_latency_ns", "delivery_latency_ns"} {
		l, ok := rep[k].(map[string]any)
		if !ok || len(l) != 4 {
			t.Fatalf("%s: %v", k, rep[k])
		}
		for _, q := range []string{"p50", "p90", "p99", "max"} {
			v, ok := l[q].(float64)
			if !ok || v <= 0 || v != float64(int64(v)) {
				t.Fatalf("%s.%s = %v, want a positive integer", k, q, l[q])
			}
		}
	}
	if num(t, rep, "messages") != 100 || num(t, rep, "messages_delivered") != 100 || num(t, rep, "send_frames") != 100 ||
		num(t, rep, "exit_status") != 0 || num(t, rep, "msrpload_cpu_seconds") <= 0 {
		t.Fatalf("report %v", rep)
	}
	if e, ok := rep["errors"].(map[string]any); !ok || len(e) != 0 {
		t.Fatalf("errors %v", rep["errors"])
	}
	if h, ok := rep["hints"].([]any); !ok || len(h) != 0 {
		t.Fatalf("hints %v, want []", rep["hints"])
	}
}

// Chunked multi-MB messages are reassembled at B and checked by hash.
func TestChunkedTransfer(t *testing.T) {
	uri := testRelay(t, nil)
	code, rep, stderr := jsonReport(t, "-relay", uri, "-user", "alice:alice-pw", "-size", "2MB", "-chunk", "64KiB",
		"-window", "8", "-count", "3")
	chunks := (2_000_000 + 65535) / 65536
	if code != 0 || num(t, rep, "messages_delivered") != 3 || num(t, rep, "send_frames") != float64(3*chunks) ||
		num(t, rep, "received_bytes") != 6_000_000 || num(t, rep, "body_bytes") != 2_000_000 || num(t, rep, "chunk_bytes") != 65536 {
		t.Fatalf("exit %d, report %v\n%s", code, rep, stderr)
	}
}

// A relay limit hit says so once, with the key to raise, and exits 1.
func TestLimitHints(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*relay.Config)
		pairs string
		users string
		hint  string
		kind  string
	}{
		{"sessions per user", func(c *relay.Config) { c.Limits.MaxSessionsPerUser = 4 }, "4", "alice:alice-pw",
			"pair 2: relay refused AUTH: 403 Too many sessions for user alice — raise relay.limits.max_sessions_per_user (default 64) or give several users with -user",
			"AUTH 403 Too many sessions"},
		{"connections per IP", func(c *relay.Config) { c.Limits.MaxConnectionsPerIP = 4 }, "4", "alice:alice-pw",
			"pair 2: connection closed by the relay right after connect — likely relay.limits.max_connections_per_ip (default 256)",
			"closed by relay right after connect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uri := testRelay(t, tc.mod)
			code, rep, stderr := jsonReport(t, "-relay", uri, "-user", tc.users, "-pairs", tc.pairs, "-count", "10")
			hints, _ := rep["hints"].([]any)
			if code != 1 || num(t, rep, "exit_status") != 1 || len(hints) != 1 || !strings.HasPrefix(hints[0].(string), tc.hint) {
				t.Fatalf("exit %d hints %q, want 1 and one hint %q\n%s", code, hints, tc.hint, stderr)
			}
			if n := strings.Count(stderr, tc.hint); n != 1 {
				t.Fatalf("hint on stderr %d times, want once:\n%s", n, stderr)
			}
			errs, _ := rep["errors"].(map[string]any)
			if errs[tc.kind] != 2.0 || num(t, rep, "messages_delivered") != 20 {
				t.Fatalf("errors %v delivered %v: want %q: 2 (pairs 2 and 3) and the 2 other pairs' 20 messages", errs, rep["messages_delivered"], tc.kind)
			}
		})
	}
	// Several users share the load: the same relay takes 4 pairs.
	uri := testRelay(t, func(c *relay.Config) { c.Limits.MaxSessionsPerUser = 4 })
	code, rep, stderr := jsonReport(t, "-relay", uri, "-user", "alice,bob:bob-pw", "-password", "alice-pw", "-pairs", "4", "-count", "10")
	if code != 0 || num(t, rep, "messages_delivered") != 40 {
		t.Fatalf("two users: exit %d %v\n%s", code, rep, stderr)
	}
}

// A chain of two relays: A authenticates at R1, then at R2 through R1;
// B attaches at R2.
func TestChainOfTwoRelays(t *testing.T) {
	r2, relay2 := testRelayStats(t, nil)
	r1, relay1 := testRelayStats(t, nil)
	code, rep, stderr := jsonReport(t, "-relay", r1+","+r2, "-user", "bob:bob-pw", "-pairs", "2", "-window", "8", "-count", "100",
		"-size", "40KiB", "-chunk", "16KiB")
	if code != 0 || num(t, rep, "messages_delivered") != 200 || num(t, rep, "send_frames") != 600 {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
	// R1 granted the two A sessions, R2 those of A (through R1) and B. A
	// is connected to R1 only and B to R2 only, so what B got crossed both.
	// (The relays' forwarded counters are not compared: each counts after
	// its write, racing with this read.)
	// R1 accepted the two As, R2 the two Bs and R1's link(s).
	if s1, s2 := relay1.Stats(), relay2.Stats(); s1.AuthOK != 2 || s2.AuthOK != 4 || s1.Accepted != 2 || s2.Accepted < 3 {
		t.Fatalf("R1 granted %d AUTHs and accepted %d connections, R2 %d and %d: want 2 and 2, 4 and ≥3",
			s1.AuthOK, s1.Accepted, s2.AuthOK, s2.Accepted)
	}
}

// -rate: a fixed-rate run bounded by -count finishes with every message
// delivered, and not before its schedule allows: each pair's 20th message
// is scheduled 19 intervals (pairs/rate = 1 ms) after its first (a lower
// bound the schedule guarantees, not a timing expectation).
func TestRateBounded(t *testing.T) {
	uri := testRelay(t, nil)
	code, rep, stderr := jsonReport(t, "-relay", uri, "-user", "carol:carol-pw", "-pairs", "3", "-rate", "3000/s", "-count", "20")
	if code != 0 || num(t, rep, "messages_delivered") != 60 || num(t, rep, "seconds") < 0.019 {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
	// And bounded by -duration.
	code, rep, stderr = jsonReport(t, "-relay", uri, "-user", "carol:carol-pw", "-pairs", "2", "-rate", "500", "-duration", "300ms")
	if code != 0 || num(t, rep, "messages_delivered") < 1 || num(t, rep, "messages_delivered") != num(t, rep, "messages") {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
}

// A rate the pair cannot reach (one SEND in flight, 10 million a second)
// is reported as behind schedule: in the text summary and in --json's
// "schedule" (absent without -rate).
func TestRateBehindSchedule(t *testing.T) {
	uri := testRelay(t, nil)
	args := []string{"-relay", uri, "-user", "carol:carol-pw", "-window", "1", "-rate", "10000000/s", "-duration", "200ms"}
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "BEHIND SCHEDULE: achieved ") || !strings.Contains(out.String(), "of 10000000 messages/s") {
		t.Fatalf("exit %d\n%s\nstderr %s", code, out.String(), errOut.String())
	}
	code, rep, stderr := jsonReport(t, args...)
	s, ok := rep["schedule"].(map[string]any)
	if code != 0 || !ok || num(t, s, "target_per_sec") != 1e7 || num(t, s, "behind") < 1 ||
		num(t, s, "started") != num(t, rep, "messages") || num(t, s, "achieved_per_sec") >= 1e7 {
		t.Fatalf("exit %d schedule %v\n%v\n%s", code, rep["schedule"], rep, stderr)
	}
	for _, k := range []string{"late", "max_late_ns"} {
		if _, ok := s[k].(float64); !ok {
			t.Fatalf("schedule.%s missing: %v", k, s)
		}
	}
}

// -direct: A connects straight to B (no relay, no AUTH), small messages
// and chunked ones checked by hash at B; relay flags are a usage error.
func TestDirect(t *testing.T) {
	for _, args := range [][]string{
		{"-pairs", "2", "-count", "50"},
		{"-size", "1MiB", "-chunk", "64KiB", "-window", "8", "-count", "3"},
	} {
		code, rep, stderr := jsonReport(t, append([]string{"-direct"}, args...)...)
		if code != 0 || rep["direct"] != true || num(t, rep, "messages") == 0 ||
			num(t, rep, "messages_delivered") != num(t, rep, "messages") {
			t.Fatalf("%v: exit %d %v\n%s", args, code, rep, stderr)
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-direct", "-count", "5"}, &out, &errOut); code != 0 ||
		!strings.HasPrefix(out.String(), "msrpload: 1 pairs direct A→B (no relay) window 32") {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"-direct", "-relay", "msrp://127.0.0.1:2855;tcp"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "-direct has no relay: -relay") {
		t.Fatalf("-direct -relay: exit %d, %s", code, errOut.String())
	}
}

// -direct -via: the pairs go through the floor forwarder (msrpload
// forward), every message delivered, in each of its modes; -via without
// -direct is a usage error.
func TestDirectVia(t *testing.T) {
	modes := []string{bench.FloorGoroutine}
	if runtime.GOOS == "linux" {
		modes = append(modes, bench.FloorEpoll)
	}
	for _, mode := range modes {
		f, err := bench.ListenForward("127.0.0.1:0", mode, 1)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Serve(ctx) }()
		for _, args := range [][]string{
			{"-pairs", "3", "-count", "200", "-window", "8"},
			{"-size", "1MiB", "-chunk", "64KiB", "-window", "8", "-count", "3"},
		} {
			code, rep, stderr := jsonReport(t, append([]string{"-direct", "-via", f.Addr()}, args...)...)
			if code != 0 || rep["via"] != f.Addr() || num(t, rep, "messages") == 0 ||
				num(t, rep, "messages_delivered") != num(t, rep, "messages") {
				t.Fatalf("%s %v: exit %d %v\n%s", mode, args, code, rep, stderr)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-via", "127.0.0.1:1", "-count", "1"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "-via needs -direct") {
		t.Fatalf("-via without -direct: exit %d, %s", code, errOut.String())
	}
}

// Text mode: the summary names both latencies and delivery.
func TestTextSummary(t *testing.T) {
	uri := testRelay(t, nil)
	var out, errOut bytes.Buffer
	code := run([]string{"-relay", uri, "-user", "alice:alice-pw", "-count", "20"}, &out, &errOut)
	s := out.String()
	if code != 0 || !strings.HasPrefix(s, "msrpload: 1 pairs window 32 size 100") ||
		!strings.Contains(s, "20 acknowledged, 20 delivered (100.0%)") || !strings.Contains(s, "SEND→200  p50") ||
		!strings.Contains(s, "delivery  p50") || !strings.Contains(s, "errors: none") {
		t.Fatalf("exit %d\n%s\nstderr %s", code, s, errOut.String())
	}
}

// kamailioQueue raises Kamailio's per-connection write queue (core
// tcp_conn_wq_max, default 32 KB) above what a small run sends in all: with
// the default, a burst that finds B's connection not yet writable (its
// writes go through tcp_main) overflows it on a busy machine and Kamailio
// drops the frames after answering 200 ("write queue full", "forwarding
// frame failed"), which msrpload rightly counts as not delivered.
const kamailioQueue = "tcp_conn_wq_max = 4194304"

func TestRunAgainstKamailio(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{ExtraGlobals: kamailioQueue})
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", kamailio.Password)
	code, rep, stderr := jsonReport(t, "-relay", k.URI(), "-user", kamailio.User, "-pairs", "2", "-window", "8",
		"-size", "200", "-count", "100", "-timeout", "10s")
	if code != 0 || num(t, rep, "send_frames") != 200 || num(t, rep, "messages_delivered") != 200 {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
}

func TestRunBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"-nosuch"}, 2},
		{"bad size", []string{"-size", "10XB"}, 2},
		{"zero size", []string{"-size", "0"}, 2},
		{"bad user list", []string{"-user", "alice,,bob"}, 2},
		{"bad rate", []string{"-rate", "fast"}, 2},
		{"bad relay URI", []string{"-relay", "http://x", "-count", "1"}, 2},
		{"relay URI with a session-id", []string{"-relay", "msrp://127.0.0.1:2855/abcd;tcp"}, 2},
		{"bad second relay URI", []string{"-relay", "msrp://127.0.0.1:2855;tcp,x"}, 2},
		{"nothing listens", []string{"-relay", "msrp://127.0.0.1:1;tcp", "-count", "1"}, 1},
		{"msrps with a bad CA file", []string{"-relay", "msrps://127.0.0.1:1;tcp", "-ca", "/nonexistent"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != tc.want {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.want, errOut.String())
			}
		})
	}
}

// --json prints its one object even when no pair could be set up.
func TestJSONWhenNothingListens(t *testing.T) {
	code, rep, stderr := jsonReport(t, "-relay", "msrp://127.0.0.1:1;tcp", "-count", "1")
	errs, _ := rep["errors"].(map[string]any)
	if code != 1 || num(t, rep, "exit_status") != 1 || errs["connect: connection refused"] != 1.0 {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	if isTerminal(&b) {
		t.Fatal("a buffer is not a terminal")
	}
	p := &progressLine{w: &b}
	p.show(load.Progress{Elapsed: 3 * time.Second, Acked: 1200, Delivered: 1100, Errors: 2, Rate: 400, SendP99: 1500 * time.Microsecond})
	p.end()
	if got, want := b.String(), "\r    3s      400 SEND/s  acked 1200  delivered 1100  errors 2  p99 1.5ms\033[K\r\033[K"; got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
}

// TestProgressJSON: -progress-json lines are what internal/bench parses:
// the prefix, one JSON object, a newline.
func TestProgressJSON(t *testing.T) {
	var b bytes.Buffer
	w := progressJSONWriter(&b)
	w(load.Progress{Elapsed: 2 * time.Second, Acked: 1200, Delivered: 1100, Errors: 2, Rate: 400})
	w(load.Progress{Elapsed: 3 * time.Second, Acked: 1600, Delivered: 1600})
	want := `progress {"elapsed_ns":2000000000,"acked":1200,"delivered":1100,"errors":2}` + "\n" +
		`progress {"elapsed_ns":3000000000,"acked":1600,"delivered":1600,"errors":0}` + "\n"
	if got := b.String(); got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 (its own CA)
// and its key as PEM files.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "msrpload test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// msrps://: the relay's certificate is verified with -ca.
func TestTLS(t *testing.T) {
	cert, key := writeCert(t)
	uri := testRelay(t, func(c *relay.Config) {
		c.Listen = []relay.Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: cert, Key: key}}
	})
	if !strings.HasPrefix(uri, "msrps://") {
		t.Fatalf("relay URI %s", uri)
	}
	code, rep, stderr := jsonReport(t, "-relay", uri, "-ca", cert, "-user", "alice:alice-pw", "-pairs", "2", "-count", "30", "-size", "20KB", "-chunk", "8KB")
	if code != 0 || num(t, rep, "messages_delivered") != 60 {
		t.Fatalf("exit %d %v\n%s", code, rep, stderr)
	}
	// Without the CA the certificate does not verify: a set-up error.
	code, rep, _ = jsonReport(t, "-relay", uri, "-user", "alice:alice-pw", "-count", "1")
	if errs, _ := rep["errors"].(map[string]any); code != 1 || errs["TLS certificate not verified"] != 1.0 {
		t.Fatalf("without -ca: exit %d %v", code, rep)
	}
}

// TestBenchDispatch: "msrpload bench" is the comparison harness's mode, not
// a load run with a stray argument.
func TestBenchDispatch(t *testing.T) {
	var out, errs strings.Builder
	if code := run([]string{"bench", "-no-such-flag"}, &out, &errs); code != 2 {
		t.Fatalf("msrpload bench -no-such-flag: exit %d, want 2 (usage error)\n%s", code, errs.String())
	}
	if !strings.Contains(errs.String(), "usage: msrpload bench") {
		t.Fatalf("msrpload bench did not print the bench usage:\n%s", errs.String())
	}
}
