package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/tracer"
)

// opsRun is msrpscope's run with a config file, its relay and admin API
// found from its log.
type opsRun struct {
	uri, addr string // the relay's first listener
	admin     string // http://host:port
	token     string
	logs      *logWatch
}

func startOpsRun(t *testing.T, config, token string) *opsRun {
	t.Helper()
	t.Chdir(t.TempDir()) // the default pcap sink writes to "."
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-pw")
	logs := newLogWatch()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", writeFile(t, "c.yaml", config), "-log-level", "info"}, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("msrpscope did not stop")
		}
		if t.Failed() {
			t.Logf("msrpscope log:\n%s", logs.text())
		}
	})
	m := logs.wait(t, regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`))
	a := logs.wait(t, regexp.MustCompile(`msg="admin listening" addr=(\S+)`))
	return &opsRun{uri: m[1], addr: m[2], admin: "http://" + a[1], token: token, logs: logs}
}

// call makes an admin request with the run's token; it returns the status
// and the body.
func (o *opsRun) call(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	return o.callToken(t, method, path, body, o.token)
}

func (o *opsRun) callToken(t *testing.T, method, path, body, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, o.admin+path, strings.NewReader(body))
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
	return resp.StatusCode, b
}

// must makes a request that must answer want, and decodes the body into v
// (when not nil).
func (o *opsRun) must(t *testing.T, method, path, body string, want int, v any) {
	t.Helper()
	code, b := o.call(t, method, path, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	if v != nil {
		reflect.ValueOf(v).Elem().SetZero() // fields absent from this answer must not keep the last one's
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// demo dials the relay and AUTHs as the demo user.
func (o *opsRun) demo(t *testing.T) (*msrpclient.Client, string) {
	t.Helper()
	return o.user(t, "demo", "demo-pw")
}

// user dials the relay and AUTHs as user.
func (o *opsRun) user(t *testing.T, user, password string) (*msrpclient.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := msrpclient.Dial(ctx, o.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	use, _, err := c.Auth(ctx, o.uri, user, password, 0)
	if err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	return c, use
}

// sendTo sends body from a to b and waits until b has it.
func sendTo(t *testing.T, a *msrpclient.Client, useA string, b *msrpclient.Client, useB, body string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte(body), ContentType: "text/plain"}); err != nil {
		return err
	}
	for {
		select {
		case r, ok := <-b.Incoming():
			if !ok {
				t.Fatal("receiver closed")
			}
			if r.Method == "SEND" && string(r.Body) == body {
				return nil
			}
		case <-ctx.Done():
			t.Fatalf("%q not delivered", body)
		}
	}
}

func sidOf(use string) string {
	return use[strings.LastIndexByte(use, '/')+1 : strings.LastIndexByte(use, ';')]
}

// hepCollector takes HEP over UDP on loopback and decodes it with our decoder.
type hepCollector struct {
	pc     net.PacketConn
	mu     sync.Mutex
	pkts   []hep.Packet
	signal chan struct{}
}

func newHEPCollector(t *testing.T) *hepCollector {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &hepCollector{pc: pc, signal: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 70000)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p, err := hep.Decode(bytes.Clone(buf[:n]))
			if err != nil {
				t.Errorf("HEP decode: %v", err)
				continue
			}
			c.mu.Lock()
			c.pkts = append(c.pkts, p)
			c.mu.Unlock()
			select {
			case c.signal <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return c
}

func (c *hepCollector) addr() string { return c.pc.LocalAddr().String() }

func (c *hepCollector) snapshot() []hep.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]hep.Packet(nil), c.pkts...)
}

// waitFor waits until n packets satisfy ok.
func (c *hepCollector) waitFor(t *testing.T, what string, n int, ok func(hep.Packet) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		k := 0
		for _, p := range c.snapshot() {
			if ok(p) {
				k++
			}
		}
		if k >= n {
			return
		}
		select {
		case <-c.signal:
		case <-deadline:
			t.Fatalf("%d HEP packets with %s, want %d", k, what, n)
		}
	}
}

func (c *hepCollector) count(ok func(hep.Packet) bool) int {
	k := 0
	for _, p := range c.snapshot() {
		if ok(p) {
			k++
		}
	}
	return k
}

func payloadHas(s string) func(hep.Packet) bool {
	return func(p hep.Packet) bool { return bytes.Contains(p.Payload, []byte(s)) }
}

type sinkJSON struct {
	Name   string `json:"name"`
	Sent   uint64 `json:"sent"`
	Queued int64  `json:"queued"`
	State  string `json:"state"`
}

// drained waits until no sink holds a queued record and returns their sent counts.
func (o *opsRun) drained(t *testing.T) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var s struct{ Sinks []sinkJSON }
		o.must(t, "GET", "/api/v1/sinks", "", 200, &s)
		sent, busy := map[string]uint64{}, false
		for _, k := range s.Sinks {
			sent[k.Name] = k.Sent
			busy = busy || k.Queued > 0
		}
		if !busy {
			return sent
		}
		if time.Now().After(deadline) {
			t.Fatalf("sinks still hold records: %+v", s.Sinks)
		}
		<-tick.C
	}
}

const opsAdmin = "admin: {addr: \"127.0.0.1:0\", token: s3cret}\n"

// Every admin route once, against a running relay with two demo clients.
func TestAdminRoutesAgainstRelay(t *testing.T) {
	pcapDir := t.TempDir()
	homer := newHEPCollector(t)
	o := startOpsRun(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
%s
tracing:
  enabled: true
  rules:
    - {name: all, events: true, frames: true, to: [pcap]}
    - {name: sends, match: 'method == "SEND"', frames: true, to: [homer]}
sinks:
  pcap: {type: pcap, dir: "%s"}
  homer: {type: hep, addr: "%s"}
`, opsAdmin, pcapDir, homer.addr()), "s3cret")

	// Public routes, and the token.
	o.must(t, "GET", "/healthz", "", 200, nil)
	o.must(t, "GET", "/readyz", "", 200, nil)
	if code, _ := o.callToken(t, "GET", "/metrics", "", ""); code != 200 {
		t.Errorf("/metrics without token: %d", code)
	}
	for _, tok := range []string{"", "wrong"} {
		if code, _ := o.callToken(t, "GET", "/api/v1/tracing", "", tok); code != 401 {
			t.Errorf("token %q: %d, want 401", tok, code)
		}
	}

	// Tracing: status, off, on; rules; a rule off and on; sinks.
	var st struct {
		Enabled bool
		Rules   []struct {
			Name    string
			Enabled bool
		}
	}
	o.must(t, "GET", "/api/v1/tracing", "", 200, &st)
	if !st.Enabled || len(st.Rules) != 2 {
		t.Fatalf("tracing %+v", st)
	}
	o.must(t, "POST", "/api/v1/tracing/off", "", 200, &st)
	o.must(t, "GET", "/api/v1/tracing", "", 200, &st)
	if st.Enabled {
		t.Fatal("still on after off")
	}
	o.must(t, "POST", "/api/v1/tracing/on", "", 200, nil)
	o.must(t, "POST", "/api/v1/rules/sends/off", "", 200, nil)
	o.must(t, "POST", "/api/v1/rules/nosuch/off", "", 404, nil)
	var rules struct {
		Rules []struct {
			Name    string
			Enabled bool
		}
	}
	o.must(t, "GET", "/api/v1/rules", "", 200, &rules)
	if len(rules.Rules) != 2 || rules.Rules[1].Name != "sends" || rules.Rules[1].Enabled {
		t.Fatalf("rules %+v", rules)
	}
	var sinks struct{ Sinks []sinkJSON }
	o.must(t, "GET", "/api/v1/sinks", "", 200, &sinks)
	if len(sinks.Sinks) != 2 || sinks.Sinks[0].Name != "homer" || sinks.Sinks[1].State != "ok" {
		t.Fatalf("sinks %+v", sinks)
	}

	// With rule "sends" off, a SEND reaches no HEP collector; on again, it does.
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	if err := sendTo(t, a, useA, b, useB, "rule-off"); err != nil {
		t.Fatal(err)
	}
	o.must(t, "POST", "/api/v1/rules/sends/on", "", 200, nil)
	if err := sendTo(t, a, useA, b, useB, "rule-on"); err != nil {
		t.Fatal(err)
	}
	homer.waitFor(t, "rule-on", 2, payloadHas("rule-on"))
	if n := homer.count(payloadHas("rule-off")); n != 0 {
		t.Errorf("%d HEP packets of a SEND sent while its rule was off", n)
	}

	// Sessions and connections: paging and filters.
	type sessionJSON struct {
		ID, User   string
		Connection uint64
		FramesIn   uint64 `json:"frames_in"`
		FramesOut  uint64 `json:"frames_out"`
	}
	var sp struct {
		Items []sessionJSON
		Total int
		Next  string
	}
	o.must(t, "GET", "/api/v1/sessions?limit=1", "", 200, &sp)
	if sp.Total != 2 || len(sp.Items) != 1 || sp.Next == "" {
		t.Fatalf("sessions page 1: %+v", sp)
	}
	first := sp.Items[0]
	o.must(t, "GET", "/api/v1/sessions?limit=1&cursor="+sp.Next, "", 200, &sp)
	if len(sp.Items) != 1 || sp.Items[0].ID == first.ID || sp.Next != "" {
		t.Fatalf("sessions page 2: %+v", sp)
	}
	o.must(t, "GET", "/api/v1/sessions?session="+sidOf(useA), "", 200, &sp)
	if sp.Total != 1 || sp.Items[0].FramesIn != 2 || sp.Items[0].User != "demo" {
		t.Fatalf("session A: %+v", sp)
	}
	connA := sp.Items[0].Connection
	var cp struct {
		Items []struct {
			ID        uint64
			Direction string
			Sessions  []string
		}
		Total int
		Next  string
	}
	o.must(t, "GET", "/api/v1/connections?limit=1&remote=127.0.0.1/32&transport=msrp", "", 200, &cp)
	if cp.Total != 2 || len(cp.Items) != 1 || cp.Next == "" || cp.Items[0].Direction != "in" {
		t.Fatalf("connections: %+v", cp)
	}
	o.must(t, "GET", "/api/v1/connections?remote=192.0.2.0/24", "", 200, &cp)
	if cp.Total != 0 {
		t.Fatalf("connections from 192.0.2.0/24: %+v", cp)
	}

	// Dynamic traces: a session, a user, a CIDR; list; stop.
	var ids []string
	for _, body := range []string{
		`{"session":"` + sidOf(useA) + `","for":"10m","sinks":["homer"]}`,
		`{"user":"demo","for":"1m"}`,
		`{"cidr":"127.0.0.0/8"}`,
	} {
		var tr struct {
			ID    string
			Sinks []string
		}
		o.must(t, "POST", "/api/v1/traces", body, 201, &tr)
		ids = append(ids, tr.ID)
	}
	o.must(t, "POST", "/api/v1/traces", `{"session":"x","sinks":["nosuch"]}`, 400, nil)
	var tl struct {
		Traces []struct {
			ID, Session, User, CIDR string
			Sinks                   []string
		}
	}
	o.must(t, "GET", "/api/v1/traces", "", 200, &tl)
	if len(tl.Traces) != 3 || tl.Traces[0].Session != sidOf(useA) || tl.Traces[1].User != "demo" ||
		tl.Traces[2].CIDR != "127.0.0.0/8" || len(tl.Traces[2].Sinks) != 2 {
		t.Fatalf("traces %+v", tl)
	}
	for _, id := range ids {
		o.must(t, "DELETE", "/api/v1/traces/"+id, "", 204, nil)
	}
	o.must(t, "DELETE", "/api/v1/traces/"+ids[0], "", 404, nil)

	// Stats and reload.
	var stats struct{ Forwarded, Sessions int64 }
	o.must(t, "GET", "/api/v1/stats", "", 200, &stats)
	if stats.Forwarded < 2 || stats.Sessions != 2 {
		t.Fatalf("stats %+v", stats)
	}
	o.must(t, "POST", "/api/v1/reload", "", 200, nil)
	o.logs.waitN(t, "configuration reloaded", 1)
	o.must(t, "GET", "/api/v1/rules", "", 200, &rules) // the run-time rule state survives the reload
	if !rules.Rules[1].Enabled {
		t.Fatal("rule sends off after reload")
	}

	// Kill A's session: its next SEND gets 481; then B's connection.
	o.must(t, "DELETE", "/api/v1/sessions/"+sidOf(useA), "", 204, nil)
	o.must(t, "DELETE", "/api/v1/sessions/"+sidOf(useA), "", 404, nil)
	err := sendTo(t, a, useA, b, useB, "after kill")
	if err == nil || !strings.Contains(err.Error(), "481") {
		t.Fatalf("SEND on a killed session: %v, want 481", err)
	}
	o.must(t, "GET", "/api/v1/connections?session="+sidOf(useB), "", 200, &cp)
	if cp.Total != 1 {
		t.Fatalf("B's connection: %+v", cp)
	}
	o.must(t, "DELETE", fmt.Sprintf("/api/v1/connections/%d", cp.Items[0].ID), "", 204, nil)
	select {
	case <-b.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("B's connection not closed")
	}
	o.logs.until(t, "admin-kill close", func(s string) bool { return strings.Contains(s, "reason=admin-kill") })
	o.must(t, "DELETE", fmt.Sprintf("/api/v1/connections/%d", cp.Items[0].ID), "", 404, nil)
	o.must(t, "DELETE", "/api/v1/connections/x", "", 400, nil)
	o.must(t, "GET", "/api/v1/connections", "", 200, &cp)
	if cp.Total != 1 || cp.Items[0].ID != connA {
		t.Fatalf("connections after kill: %+v", cp)
	}
}

// The global switch under load: off stops HEP and pcap output at once (the
// records of frames relayed after it do not grow), on resumes it.
func TestTracingOffStopsOutputUnderLoad(t *testing.T) {
	pcapDir := t.TempDir()
	homer := newHEPCollector(t)
	o := startOpsRun(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
tracing:
  enabled: true
  rules: [{name: all, frames: true, to: [pcap, homer]}]
sinks:
  pcap: {type: pcap, dir: "%s"}
  homer: {type: hep, addr: "%s"}
`, pcapDir, homer.addr()), "")
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	c, useC := o.demo(t)
	d, useD := o.demo(t)
	// Load: A sends to B until stopped, reporting each delivered SEND.
	stop := make(chan struct{})
	sent := make(chan struct{}, 1) // at most one stale token: waitSends(n) sees n-1 new SENDs at least
	var loadErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := sendTo(t, a, useA, b, useB, fmt.Sprintf("load-%d", i)); err != nil {
				loadErr.Store(err)
				return
			}
			select {
			case sent <- struct{}{}:
			default:
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	waitSends := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-sent:
			case <-time.After(30 * time.Second):
				t.Fatalf("load stalled: %v", loadErr.Load())
			}
		}
	}
	waitSends(20)
	homer.waitFor(t, "load", 20, payloadHas("load-"))

	o.must(t, "POST", "/api/v1/tracing/off", "", 200, nil)
	if err := sendTo(t, c, useC, d, useD, "marker-off"); err != nil {
		t.Fatal(err)
	}
	waitSends(20) // frames in flight at the switch are done
	before := o.drained(t)
	hepBefore := len(homer.snapshot())
	waitSends(50)
	after := o.drained(t)
	if hepAfter := len(homer.snapshot()); hepAfter != hepBefore {
		t.Errorf("tracing off: HEP packets %d → %d under load", hepBefore, hepAfter)
	}
	if before["pcap"] != after["pcap"] || before["homer"] != after["homer"] {
		t.Errorf("tracing off: records sent %v → %v under load", before, after)
	}
	if n := homer.count(payloadHas("marker-off")); n != 0 {
		t.Errorf("%d HEP packets of a SEND relayed while tracing was off", n)
	}

	o.must(t, "POST", "/api/v1/tracing/on", "", 200, nil)
	if err := sendTo(t, c, useC, d, useD, "marker-on"); err != nil {
		t.Fatal(err)
	}
	homer.waitFor(t, "marker-on", 2, payloadHas("marker-on"))
	waitSends(20)
	if resumed := o.drained(t); resumed["pcap"] <= after["pcap"] {
		t.Errorf("tracing on: pcap records %d → %d", after["pcap"], resumed["pcap"])
	}
	if text := pcapText(t, pcapDir); strings.Contains(text, "marker-off") {
		t.Error("the pcap holds a SEND relayed while tracing was off")
	}
}

// A session trace with the global switch off traces that session's frames
// and nothing else.
func TestSessionTraceWithTracingOff(t *testing.T) {
	homer := newHEPCollector(t)
	o := startOpsRun(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
tracing:
  enabled: false
  rules: [{name: all, events: true, frames: true, to: [homer]}]
sinks:
  homer: {type: hep, addr: "%s"}
`, homer.addr()), "")
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	c, useC := o.demo(t)
	d, useD := o.demo(t)
	if err := sendTo(t, a, useA, b, useB, "before-trace"); err != nil {
		t.Fatal(err)
	}
	o.must(t, "POST", "/api/v1/traces", `{"session":"`+sidOf(useA)+`","for":"5m"}`, 201, nil)
	if err := sendTo(t, c, useC, d, useD, "other-session"); err != nil {
		t.Fatal(err)
	}
	if err := sendTo(t, a, useA, b, useB, "traced-session"); err != nil {
		t.Fatal(err)
	}
	// The SEND in from A and its copy out to B.
	homer.waitFor(t, "traced-session", 2, payloadHas("traced-session"))
	if err := sendTo(t, a, useA, b, useB, "traced-2"); err != nil {
		t.Fatal(err)
	}
	homer.waitFor(t, "traced-2", 2, payloadHas("traced-2"))
	for _, p := range homer.snapshot() {
		if !strings.Contains(string(p.CorrelationID), sidOf(useA)) {
			t.Errorf("traced a frame of another session: correlation %q, payload %.60q", p.CorrelationID, p.Payload)
		}
	}
	if n := homer.count(payloadHas("before-trace")) + homer.count(payloadHas("other-session")); n != 0 {
		t.Errorf("%d packets of untraced SENDs", n)
	}
}

// /metrics scraped before and after traffic: the frame counters rise by
// exactly the frames relayed (parsed with the Prometheus text parser).
func TestMetricsCountFramesRelayed(t *testing.T) {
	o := startOpsRun(t, `
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0", token: tok, metrics_auth: true}
tracing: {enabled: false}
`, "tok")
	if code, _ := o.callToken(t, "GET", "/metrics", "", ""); code != 401 {
		t.Fatalf("/metrics without token with metrics_auth: %d", code)
	}
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		code, body := o.call(t, "GET", "/metrics", "")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		return fams
	}
	value := func(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
		return 0
	}
	sendIn := map[string]string{"method": "SEND", "direction": "in"}
	sendOut := map[string]string{"method": "SEND", "direction": "out"}
	fwd := map[string]string{"event": "forwarded"}
	before := scrape()
	if v := value(before, "msrpscope_sessions", nil); v != 2 {
		t.Errorf("msrpscope_sessions %v, want 2", v)
	}
	const n = 7
	for i := range n {
		if err := sendTo(t, a, useA, b, useB, fmt.Sprintf("metric-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	after := scrape()
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"msrpscope_frames_total", sendIn}, {"msrpscope_frames_total", sendOut}, {"msrpscope_relay_events_total", fwd},
	} {
		if d := value(after, c.name, c.labels) - value(before, c.name, c.labels); d != n {
			t.Errorf("%s%v rose by %v, want %d", c.name, c.labels, d, n)
		}
	}
	// Bytes: what the session listing counted for A's SENDs.
	var sp struct {
		Items []struct {
			BytesIn uint64 `json:"bytes_in"`
		}
	}
	o.must(t, "GET", "/api/v1/sessions?session="+sidOf(useA), "", 200, &sp)
	if d := value(after, "msrpscope_frame_bytes_total", sendIn) - value(before, "msrpscope_frame_bytes_total", sendIn); d != float64(sp.Items[0].BytesIn) {
		t.Errorf("SEND bytes in rose by %v, session A counted %d", d, sp.Items[0].BytesIn)
	}
}

// /readyz's answer: not ready while the relay's listeners do not serve
// (before serve, after stop), ready in between with every sink ok.
func TestReadiness(t *testing.T) {
	t.Chdir(t.TempDir()) // the default pcap sink writes to "."
	fc, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracer.New(context.Background(), fc.tracerConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())
	o := &ops{}
	r := readiness{o: o, tr: tr}
	if got := r.NotReady(); len(got) != 1 || got[0] != "relay: listeners not serving" {
		t.Fatalf("before serve: %q", got)
	}
	o.serve()
	if got := r.NotReady(); len(got) != 0 {
		t.Fatalf("serving: %q", got)
	}
	o.stop()
	if got := r.NotReady(); len(got) != 1 {
		t.Fatalf("after stop: %q", got)
	}
}

// A user trace (the tracer learns sessions' users from the relay) takes
// the frames of that user's sessions only, with the global switch off.
func TestUserTraceWithTracingOff(t *testing.T) {
	homer := newHEPCollector(t)
	users := writeFile(t, "users.yaml", "users:\n  - {name: alice, password: a-pw}\n  - {name: bob, password: b-pw}\n")
	o := startOpsRun(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
relay: {auth: {users_file: %s}}
tracing:
  enabled: false
  rules: [{name: all, frames: true, to: [homer]}]
sinks:
  homer: {type: hep, addr: "%s"}
`, users, homer.addr()), "")
	a, useA := o.user(t, "alice", "a-pw")
	b1, useB1 := o.user(t, "bob", "b-pw")
	b2, useB2 := o.user(t, "bob", "b-pw")
	o.must(t, "POST", "/api/v1/traces", `{"user":"alice"}`, 201, nil)
	if err := sendTo(t, b1, useB1, b2, useB2, "bob-to-bob"); err != nil {
		t.Fatal(err)
	}
	if err := sendTo(t, b1, useB1, a, useA, "bob-to-alice"); err != nil {
		t.Fatal(err)
	}
	homer.waitFor(t, "bob-to-alice", 2, payloadHas("bob-to-alice"))
	if n := homer.count(payloadHas("bob-to-bob")); n != 0 {
		t.Errorf("%d packets of a SEND between two of bob's sessions", n)
	}
	var tl struct{ Traces []struct{ Matched uint64 } }
	o.must(t, "GET", "/api/v1/traces", "", 200, &tl)
	if len(tl.Traces) != 1 || tl.Traces[0].Matched < 2 {
		t.Errorf("traces %+v", tl)
	}
}
