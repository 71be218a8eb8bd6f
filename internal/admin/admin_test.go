package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/msrpscope/msrpscope/internal/metrics"
)

// In-test implementations of the interfaces admin declares.

type testTracing struct {
	mu    sync.Mutex
	on    bool
	rules []Rule
	sinks []Sink
}

func (t *testTracing) Enabled() bool      { t.mu.Lock(); defer t.mu.Unlock(); return t.on }
func (t *testTracing) SetEnabled(on bool) { t.mu.Lock(); t.on = on; t.mu.Unlock() }
func (t *testTracing) Rules() []Rule {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.rules)
}
func (t *testTracing) SetRuleEnabled(name string, on bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.rules {
		if t.rules[i].Name == name {
			t.rules[i].Enabled = on
			return nil
		}
	}
	return ErrNotFound
}
func (t *testTracing) Sinks() []Sink { return t.sinks }

type testTraces struct {
	mu     sync.Mutex
	sinks  []string
	traces map[string]Trace
	n      int
	last   TraceSpec
}

func (t *testTraces) Traces() []Trace {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.SortedFunc(maps.Values(t.traces), func(a, b Trace) int { return strings.Compare(a.ID, b.ID) })
}
func (t *testTraces) StartTrace(s TraceSpec) (Trace, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range s.Sinks {
		if !slices.Contains(t.sinks, n) {
			return Trace{}, fmt.Errorf("sink %q: %w", n, ErrInvalid)
		}
	}
	t.last = s
	t.n++
	tr := Trace{ID: fmt.Sprintf("t%d", t.n), Session: s.Session, User: s.User, Until: time.Now().Add(s.For), Sinks: s.Sinks}
	if s.CIDR.IsValid() {
		tr.CIDR = s.CIDR.String()
	}
	if len(tr.Sinks) == 0 {
		tr.Sinks = t.sinks
	}
	t.traces[tr.ID] = tr
	return tr, nil
}
func (t *testTraces) StopTrace(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.traces[id]; !ok {
		return ErrNotFound
	}
	delete(t.traces, id)
	return nil
}

type testRelay struct {
	mu       sync.Mutex
	sessions map[string]Session
	conns    map[uint64]Connection
}

func (r *testRelay) Sessions() iter.Seq[Session] {
	r.mu.Lock()
	s := slices.Collect(maps.Values(r.sessions))
	r.mu.Unlock()
	return slices.Values(s)
}
func (r *testRelay) Connections() iter.Seq[Connection] {
	r.mu.Lock()
	s := slices.Collect(maps.Values(r.conns))
	r.mu.Unlock()
	return slices.Values(s)
}
func (r *testRelay) KillSession(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sessions[id]; !ok {
		return ErrNotFound
	}
	delete(r.sessions, id)
	return nil
}
func (r *testRelay) KillConnection(id uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.conns[id]; !ok {
		return ErrNotFound
	}
	delete(r.conns, id)
	return nil
}
func (r *testRelay) Stats() any { return map[string]int64{"Accepted": 12, "Forwarded": 34} }

type testReloader struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (r *testReloader) Reload(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	return r.err
}

type testReady struct{ reasons []string }

func (r *testReady) NotReady() []string { return r.reasons }

type fixture struct {
	tracing *testTracing
	traces  *testTraces
	relay   *testRelay
	reload  *testReloader
	ready   *testReady
	url     string
	token   string
}

func newRelay() *testRelay {
	r := &testRelay{sessions: map[string]Session{}, conns: map[uint64]Connection{}}
	users := []string{"alice", "bob", "carol"}
	for i := range 250 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i / 100), byte(i % 100)})
		tr := "msrp"
		if i%2 == 1 {
			tr = "msrps"
		}
		id := fmt.Sprintf("s%03d", i)
		u := users[i%3]
		r.sessions[id] = Session{ID: id, User: u, ConnID: uint64(i + 1), Transport: tr, Remote: netip.AddrPortFrom(ip, 40000)}
		r.conns[uint64(i+1)] = Connection{ID: uint64(i + 1), Transport: tr, Direction: "in", Remote: netip.AddrPortFrom(ip, 40000),
			Users: []string{u}, Sessions: []string{id}}
	}
	return r
}

// start runs a real server on 127.0.0.1:0 with cfg (Addr filled in).
func start(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{
		tracing: &testTracing{rules: []Rule{{Name: "all", Enabled: true, Matched: 5}, {Name: "alice", Matched: 1}},
			sinks: []Sink{{Name: "homer", Type: "hep", State: "ok", Sent: 9, Counters: map[string]uint64{"datagrams": 9}}}},
		traces: &testTraces{sinks: []string{"homer", "pcap"}, traces: map[string]Trace{}},
		relay:  newRelay(),
		reload: &testReloader{},
		ready:  &testReady{},
		token:  cfg.Token,
	}
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, Deps{Tracing: f.tracing, Traces: f.traces, Relay: f.relay, Reloader: f.reload,
		Readiness: f.ready, Metrics: m.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	f.url = "http://" + s.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// do sends a request with the fixture's token (when it has one) and
// returns the status and body.
func (f *fixture) do(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	return f.doToken(t, method, path, body, f.token)
}

func (f *fixture) doToken(t *testing.T, method, path, body, token string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent && path != "/metrics" && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

type errResp struct {
	Error   string   `json:"error"`
	Reasons []string `json:"reasons"`
}

func TestRoutes(t *testing.T) {
	f := start(t, Config{Token: "s3cret"})
	for _, tc := range []struct {
		method, path, body string
		code               int
		check              func(t *testing.T, b []byte)
	}{
		{"GET", "/healthz", "", 200, nil},
		{"GET", "/readyz", "", 200, nil},
		{"GET", "/api/v1/tracing", "", 200, func(t *testing.T, b []byte) {
			st := decode[TracingStatus](t, b)
			if st.Enabled || len(st.Rules) != 2 || st.Rules[0].Matched != 5 || st.Traces == nil {
				t.Errorf("status %+v", st)
			}
		}},
		{"POST", "/api/v1/tracing/on", "", 200, func(t *testing.T, b []byte) {
			if !f.tracing.Enabled() || !decode[map[string]bool](t, b)["enabled"] {
				t.Error("tracing not on")
			}
		}},
		{"POST", "/api/v1/tracing/off", "", 200, func(t *testing.T, b []byte) {
			if f.tracing.Enabled() {
				t.Error("tracing not off")
			}
		}},
		{"GET", "/api/v1/rules", "", 200, func(t *testing.T, b []byte) {
			if r := decode[map[string][]Rule](t, b)["rules"]; len(r) != 2 || r[1].Name != "alice" {
				t.Errorf("rules %+v", r)
			}
		}},
		{"POST", "/api/v1/rules/alice/on", "", 200, func(t *testing.T, b []byte) {
			if !f.tracing.Rules()[1].Enabled {
				t.Error("rule alice not on")
			}
		}},
		{"POST", "/api/v1/rules/all/off", "", 200, func(t *testing.T, b []byte) {
			if f.tracing.Rules()[0].Enabled {
				t.Error("rule all not off")
			}
		}},
		{"POST", "/api/v1/rules/nope/on", "", 404, nil},
		{"GET", "/api/v1/sinks", "", 200, func(t *testing.T, b []byte) {
			s := decode[map[string][]Sink](t, b)["sinks"]
			if len(s) != 1 || s[0].Sent != 9 || s[0].Counters["datagrams"] != 9 {
				t.Errorf("sinks %+v", s)
			}
		}},
		{"GET", "/api/v1/stats", "", 200, func(t *testing.T, b []byte) {
			if decode[map[string]int64](t, b)["Forwarded"] != 34 {
				t.Errorf("stats %s", b)
			}
		}},
		{"POST", "/api/v1/reload", "", 200, func(t *testing.T, b []byte) {
			if f.reload.calls != 1 {
				t.Errorf("reload called %d times", f.reload.calls)
			}
		}},
		{"POST", "/api/v1/traces", `{"session":"s001","for":"5m","sinks":["homer"]}`, 201, func(t *testing.T, b []byte) {
			tr := decode[Trace](t, b)
			if tr.ID != "t1" || tr.Session != "s001" || f.traces.last.For != 5*time.Minute {
				t.Errorf("trace %+v, spec %+v", tr, f.traces.last)
			}
		}},
		{"POST", "/api/v1/traces", `{"cidr":"192.0.2.7/24"}`, 201, func(t *testing.T, b []byte) {
			if tr := decode[Trace](t, b); tr.CIDR != "192.0.2.0/24" || f.traces.last.For != defTraceFor || len(tr.Sinks) != 2 {
				t.Errorf("trace %+v", tr)
			}
		}},
		{"POST", "/api/v1/traces", `{"user":"alice"}`, 201, nil},
		{"GET", "/api/v1/traces", "", 200, func(t *testing.T, b []byte) {
			if tr := decode[map[string][]Trace](t, b)["traces"]; len(tr) != 3 {
				t.Errorf("traces %+v", tr)
			}
		}},
		{"GET", "/api/v1/tracing", "", 200, func(t *testing.T, b []byte) {
			if st := decode[TracingStatus](t, b); len(st.Traces) != 3 {
				t.Errorf("status traces %+v", st.Traces)
			}
		}},
		{"DELETE", "/api/v1/traces/t1", "", 204, nil},
		{"DELETE", "/api/v1/traces/t1", "", 404, nil},
		{"POST", "/api/v1/traces", `{"session":"a","user":"b"}`, 400, nil},
		{"POST", "/api/v1/traces", `{}`, 400, nil},
		{"POST", "/api/v1/traces", `{"user":"a","for":"1y"}`, 400, nil},
		{"POST", "/api/v1/traces", `{"user":"a","for":"48h"}`, 400, nil},
		{"POST", "/api/v1/traces", `{"cidr":"10.0.0.0/33"}`, 400, nil},
		{"POST", "/api/v1/traces", `{"user":"a","sinks":["nope"]}`, 400, nil},
		{"POST", "/api/v1/traces", `{"user":"a","bogus":1}`, 400, nil},
		{"POST", "/api/v1/traces", `not json`, 400, nil},
		{"GET", "/api/v1/sessions?limit=0", "", 400, nil},
		{"GET", "/api/v1/sessions?limit=x", "", 400, nil},
		{"GET", "/api/v1/sessions?remote=10.0.0.300", "", 400, nil},
		{"GET", "/api/v1/connections?cursor=abc", "", 400, nil},
		{"DELETE", "/api/v1/sessions/s007", "", 204, nil},
		{"DELETE", "/api/v1/sessions/s007", "", 404, nil},
		{"DELETE", "/api/v1/connections/8", "", 204, nil},
		{"DELETE", "/api/v1/connections/8", "", 404, nil},
		{"DELETE", "/api/v1/connections/x", "", 400, nil},
		{"GET", "/api/v1/nope", "", 404, nil},
		{"PUT", "/api/v1/sessions", "", 405, nil},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, b := f.do(t, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, b)
			}
			if code >= 400 {
				if e := decode[errResp](t, b); e.Error == "" {
					t.Errorf("error body %s", b)
				}
			}
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
	if _, ok := f.relay.sessions["s007"]; ok {
		t.Error("session s007 not killed")
	}
	if _, ok := f.relay.conns[8]; ok {
		t.Error("connection 8 not killed")
	}
}

func TestMetricsRoute(t *testing.T) {
	for _, metricsAuth := range []bool{false, true} {
		t.Run(fmt.Sprint("metrics_auth=", metricsAuth), func(t *testing.T) {
			f := start(t, Config{Token: "tok", MetricsAuth: metricsAuth})
			code, b := f.doToken(t, "GET", "/metrics", "", "")
			if metricsAuth {
				if code != 401 {
					t.Fatalf("/metrics without token: %d, want 401", code)
				}
				code, b = f.do(t, "GET", "/metrics", "")
			}
			if code != 200 {
				t.Fatalf("/metrics: %d %s", code, b)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := p.TextToMetricFamilies(bytes.NewReader(b)); err != nil {
				t.Errorf("parse /metrics: %v", err)
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	f := start(t, Config{})
	f.ready.reasons = []string{"listener msrp 127.0.0.1:2855 down", "sink homer: connection refused"}
	code, b := f.do(t, "GET", "/readyz", "")
	if code != 503 {
		t.Fatalf("readyz %d, want 503", code)
	}
	if e := decode[errResp](t, b); !slices.Equal(e.Reasons, f.ready.reasons) {
		t.Errorf("reasons %v", e.Reasons)
	}
}

func TestReloadError(t *testing.T) {
	f := start(t, Config{})
	f.reload.err = fmt.Errorf("config line 3: %w", ErrInvalid)
	if code, b := f.do(t, "POST", "/api/v1/reload", ""); code != 400 || !strings.Contains(decode[errResp](t, b).Error, "line 3") {
		t.Errorf("reload: %d %s", code, b)
	}
	f.reload.err = errors.New("disk on fire")
	if code, _ := f.do(t, "POST", "/api/v1/reload", ""); code != 500 {
		t.Errorf("reload: %d, want 500", code)
	}
}

func TestToken(t *testing.T) {
	f := start(t, Config{Token: "right"})
	for _, path := range []string{"/api/v1/tracing", "/api/v1/sessions", "/api/v1/nope"} {
		for _, tok := range []string{"", "wrong", "righ", "right2"} {
			if code, b := f.doToken(t, "GET", path, "", tok); code != 401 || decode[errResp](t, b).Error == "" {
				t.Errorf("GET %s with token %q: %d %s, want 401", path, tok, code, b)
			}
		}
		if code, _ := f.doToken(t, "POST", "/api/v1/tracing/on", "", "wrong"); code != 401 {
			t.Errorf("POST with a wrong token: %d", code)
		}
	}
	if f.tracing.Enabled() {
		t.Error("a request with a wrong token switched tracing on")
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := f.doToken(t, "GET", path, "", ""); code != 200 {
			t.Errorf("GET %s without token: %d, want 200", path, code)
		}
	}
	if code, _ := f.doToken(t, "GET", "/api/v1/tracing", "", "right"); code != 200 {
		t.Errorf("right token: %d", code)
	}
	// No token configured on loopback: none needed.
	open := start(t, Config{})
	if code, _ := open.doToken(t, "POST", "/api/v1/tracing/on", "", ""); code != 200 {
		t.Errorf("loopback without token: %d, want 200", code)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("  filetok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string // "" when New must succeed
	}{
		{"all interfaces without token", Config{Addr: ":0"}, "not a loopback address"},
		{"0.0.0.0 without token", Config{Addr: "0.0.0.0:0"}, "not a loopback address"},
		{"public IP without token", Config{Addr: "192.0.2.1:8055"}, "not a loopback address"},
		{"IPv6 any without token", Config{Addr: "[::]:0"}, "not a loopback address"},
		{"host name without token", Config{Addr: "admin.example.com:8055"}, "not a loopback address"},
		{"empty address", Config{}, "empty admin.addr"},
		{"token and file", Config{Addr: "127.0.0.1:0", Token: "a", TokenFile: tokFile}, "not both"},
		{"missing token file", Config{Addr: "127.0.0.1:0", TokenFile: filepath.Join(dir, "nope")}, "token file"},
		{"empty token file", Config{Addr: "127.0.0.1:0", TokenFile: empty}, "is empty"},
		{"cert without key", Config{Addr: "127.0.0.1:0", TLSCert: tokFile}, "both"},
		{"bad cert", Config{Addr: "127.0.0.1:0", TLSCert: tokFile, TLSKey: tokFile}, "TLS certificate"},
		{"loopback v4", Config{Addr: "127.0.0.1:0"}, ""},
		{"loopback v6", Config{Addr: "[::1]:0"}, ""},
		{"localhost", Config{Addr: "localhost:0"}, ""},
		{"loopback with token file", Config{Addr: "127.0.0.1:0", TokenFile: tokFile}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg, Deps{})
			if tc.err == "" {
				if err != nil {
					t.Skipf("cannot listen here: %v", err) // e.g. no IPv6 loopback
				}
				_ = s.ln.Close()
				return
			}
			if err == nil {
				_ = s.ln.Close()
				t.Fatalf("New(%+v) succeeded, want an error with %q", tc.cfg, tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %q, want %q in it", err, tc.err)
			}
		})
	}
	// The token file's token is the one required.
	f := start(t, Config{TokenFile: tokFile})
	if code, _ := f.doToken(t, "GET", "/api/v1/stats", "", "filetok"); code != 200 {
		t.Errorf("token from file: %d", code)
	}
	if code, _ := f.doToken(t, "GET", "/api/v1/stats", "", ""); code != 401 {
		t.Errorf("no token with a token file: %d", code)
	}
}

type sessionPage struct {
	Items []Session `json:"items"`
	Total int       `json:"total"`
	Next  string    `json:"next"`
}

type connPage struct {
	Items []Connection `json:"items"`
	Total int          `json:"total"`
	Next  string       `json:"next"`
}

func TestPaging(t *testing.T) {
	f := start(t, Config{})
	// Walk every page: each session exactly once, in ID order.
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		code, b := f.do(t, "GET", "/api/v1/sessions?limit=100&cursor="+cursor, "")
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		p := decode[sessionPage](t, b)
		if p.Total != 250 {
			t.Errorf("total %d", p.Total)
		}
		for _, s := range p.Items {
			got = append(got, s.ID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(got) != 250 || !slices.IsSorted(got) || slices.Compact(slices.Clone(got)) == nil || len(slices.Compact(slices.Clone(got))) != 250 {
		t.Errorf("paged %d sessions (sorted %v)", len(got), slices.IsSorted(got))
	}
	// Connections page by numeric ID: 1..250, not "1","10","100".
	var ids []uint64
	cursor = ""
	for {
		_, b := f.do(t, "GET", "/api/v1/connections?limit=7&cursor="+cursor, "")
		p := decode[connPage](t, b)
		for _, c := range p.Items {
			ids = append(ids, c.ID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(ids) != 250 || ids[0] != 1 || ids[249] != 250 || !slices.IsSorted(ids) {
		t.Errorf("paged connections %v", ids)
	}

	for _, tc := range []struct {
		query string
		want  int
	}{
		{"user=alice", 84},
		{"user=alice&transport=msrps", 42},
		{"session=s042", 1},
		{"remote=10.0.1.0/24", 100},
		{"remote=10.0.2.5", 1},
		{"remote=10.0.2.0/24&user=bob", 16},
		{"transport=msrp", 125},
		{"user=nobody", 0},
	} {
		for _, list := range []string{"sessions", "connections"} {
			code, b := f.do(t, "GET", "/api/v1/"+list+"?limit=1000&"+tc.query, "")
			p := decode[struct {
				Items []json.RawMessage
				Total int
				Next  string
			}](t, b)
			if code != 200 || p.Total != tc.want || len(p.Items) != tc.want || p.Next != "" {
				t.Errorf("%s?%s: %d, total %d, %d items, next %q; want %d", list, tc.query, code, p.Total, len(p.Items), p.Next, tc.want)
			}
		}
	}
}

func TestServeShutdown(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	resp, err := http.Get("http://" + s.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	// Nothing configured: routes say so.
	code, b := func() (int, []byte) {
		f := start(t, Config{})
		return f.do(t, "GET", "/healthz", "")
	}()
	if code != 200 {
		t.Errorf("healthz %d %s", code, b)
	}
}

func TestUnavailable(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	f := &fixture{url: "http://" + s.Addr().String()}
	for _, p := range []string{"/metrics", "/api/v1/tracing", "/api/v1/sessions", "/api/v1/traces", "/api/v1/stats"} {
		if code, _ := f.do(t, "GET", p, ""); code != 503 {
			t.Errorf("GET %s with nothing behind it: %d, want 503", p, code)
		}
	}
	if code, _ := f.do(t, "GET", "/readyz", ""); code != 200 {
		t.Errorf("readyz with no Readiness: %d", code)
	}
}
