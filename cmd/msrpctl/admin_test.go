package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/admin"
)

const adminConfig = `
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0", token: s3cret}
tracing:
  enabled: true
  rules:
    - {name: all, events: true, frames: true, to: [pcap]}
sinks:
  pcap: {type: pcap, dir: %q}
`

// clearEnv keeps the caller's MSRPSCOPE_* settings out of a test.
func clearEnv(t *testing.T) {
	for _, k := range []string{"MSRPSCOPE_ADMIN", "MSRPSCOPE_TOKEN", "MSRPSCOPE_TOKEN_FILE", "MSRPSCOPE_CLICKHOUSE",
		"MSRPSCOPE_DATABASE", "MSRPSCOPE_CLICKHOUSE_USER", "MSRPSCOPE_CLICKHOUSE_PASSWORD"} {
		t.Setenv(k, "")
	}
}

// Every admin command of msrpctl against a running msrpscope.
func TestAdminCommands(t *testing.T) {
	clearEnv(t)
	d := startDaemon(t, fmt.Sprintf(adminConfig, t.TempDir()))
	t.Setenv("MSRPSCOPE_ADMIN", d.admin)
	t.Setenv("MSRPSCOPE_TOKEN", "s3cret")

	// The global switch.
	if out := ok(t, "trace", "status"); !strings.HasPrefix(out, "tracing: on\n") || rowWith(out, "all") == "" {
		t.Fatalf("trace status:\n%s", out)
	}
	if out := ok(t, "trace", "off"); out != "tracing: off\n" {
		t.Fatalf("trace off: %q", out)
	}
	var st admin.TracingStatus
	okJSON(t, &st, "trace", "status")
	if st.Enabled || len(st.Rules) != 1 || st.Rules[0].Name != "all" {
		t.Fatalf("after trace off: %+v", st)
	}
	if out := ok(t, "trace", "status"); !strings.HasPrefix(out, "tracing: off\n") {
		t.Fatalf("trace status after off:\n%s", out)
	}
	var sw struct{ Enabled bool }
	okJSON(t, &sw, "trace", "on")
	okJSON(t, &st, "trace", "status")
	if !sw.Enabled || !st.Enabled {
		t.Fatalf("after trace on: %+v, status %+v", sw, st)
	}

	// Rules and sinks.
	if out := ok(t, "rules"); !strings.Contains(rowWith(out, "all"), " on ") {
		t.Fatalf("rules:\n%s", out)
	}
	if out := ok(t, "rule", "all", "off"); out != "rule all: off\n" {
		t.Fatalf("rule all off: %q", out)
	}
	var rules struct{ Rules []admin.Rule }
	okJSON(t, &rules, "rules")
	if len(rules.Rules) != 1 || rules.Rules[0].Enabled {
		t.Fatalf("rules after rule all off: %+v", rules)
	}
	ok(t, "rule", "all", "on")
	fails(t, exitFail, `^msrpctl: rule nope: 404 Not Found: rule "nope": not found`, "rule", "nope", "on")
	fails(t, exitUsage, `^msrpctl: rule all: say on or off`, "rule", "all", "maybe")
	if out := ok(t, "sinks"); !strings.Contains(rowWith(out, "pcap"), " pcap ") {
		t.Fatalf("sinks:\n%s", out)
	}
	var sinks struct{ Sinks []admin.Sink }
	okJSON(t, &sinks, "sinks")
	if len(sinks.Sinks) != 1 || sinks.Sinks[0].Name != "pcap" || sinks.Sinks[0].Type != "pcap" {
		t.Fatalf("sinks: %+v", sinks)
	}

	// Sessions: two demo clients, one SEND between them.
	a, b := d.demo(t), d.demo(t)
	send(t, a, b, "hello")
	out := ok(t, "sessions")
	for _, c := range []*client{a, b} {
		if row := rowWith(out, c.sid); !strings.Contains(row, " demo ") {
			t.Fatalf("sessions: no row for %s:\n%s", c.sid, out)
		}
	}
	var page listPage[admin.Session]
	okJSON(t, &page, "sessions", "--session", a.sid)
	if len(page.Items) != 1 || page.Total != 1 || page.Items[0].ID != a.sid || page.Items[0].User != "demo" ||
		page.Items[0].FramesIn != 1 {
		t.Fatalf("sessions --session %s: %+v", a.sid, page)
	}
	// Paging: one a page; --all follows the cursor.
	okJSON(t, &page, "sessions", "--user", "demo", "--limit", "1")
	if len(page.Items) != 1 || page.Total != 2 || page.Next == "" {
		t.Fatalf("sessions --limit 1: %+v", page)
	}
	first := page.Items[0].ID
	if out := ok(t, "sessions", "--limit", "1"); !strings.Contains(out, "1 of 2 sessions; next page: --cursor "+page.Next) {
		t.Fatalf("sessions --limit 1 table:\n%s", out)
	}
	okJSON(t, &page, "sessions", "--limit", "1", "--cursor", page.Next)
	if len(page.Items) != 1 || page.Items[0].ID == first || page.Next != "" {
		t.Fatalf("sessions second page: %+v", page)
	}
	okJSON(t, &page, "--timeout", "20s", "sessions", "--all", "--limit", "1") // common flags on both sides of the command
	if len(page.Items) != 2 || page.Total != 2 {
		t.Fatalf("sessions --all: %+v", page)
	}
	okJSON(t, &page, "sessions", "--user", "nobody")
	if len(page.Items) != 0 || page.Total != 0 {
		t.Fatalf("sessions --user nobody: %+v", page)
	}
	fails(t, exitFail, `^msrpctl: 400 Bad Request: limit: "5000" is not a number from 1 to 1000$`, "sessions", "--limit", "5000")

	// Connections.
	var conns listPage[admin.Connection]
	okJSON(t, &conns, "connections", "--session", a.sid)
	if len(conns.Items) != 1 || conns.Items[0].Direction != "in" || conns.Items[0].Remote.Port() != localPort(t, a) {
		t.Fatalf("connections --session %s: %+v", a.sid, conns)
	}
	aConn := conns.Items[0].ID
	out = ok(t, "connections", "--remote", "127.0.0.1/32")
	if row := rowWith(out, fmt.Sprint(aConn)); !strings.Contains(row, a.sid) || !strings.Contains(row, " msrp ") {
		t.Fatalf("connections: no row for connection %d:\n%s", aConn, out)
	}

	// Statistics.
	if out := ok(t, "stats"); !strings.HasSuffix(rowWith(out, "Sessions"), " 2") {
		t.Fatalf("stats:\n%s", out)
	}
	var stats map[string]any
	okJSON(t, &stats, "stats")
	if stats["Sessions"] != 2.0 || stats["Forwarded"].(float64) < 1 {
		t.Fatalf("stats --json: %v", stats)
	}

	// Dynamic traces.
	var tr admin.Trace
	okJSON(t, &tr, "trace", "on", "--session", b.sid, "--for", "5m", "--to", "pcap")
	if tr.ID == "" || tr.Session != b.sid || len(tr.Sinks) != 1 || tr.Sinks[0] != "pcap" || time.Until(tr.Until) > 5*time.Minute {
		t.Fatalf("trace on --session: %+v", tr)
	}
	out = ok(t, "trace", "on", "--cidr", "192.0.2.0/24")
	if !strings.Contains(out, "cidr 192.0.2.0/24") {
		t.Fatalf("trace on --cidr:\n%s", out)
	}
	out = ok(t, "trace", "list")
	if row := rowWith(out, tr.ID); !strings.Contains(row, "session "+b.sid) || !strings.Contains(row, "pcap") {
		t.Fatalf("trace list:\n%s", out)
	}
	if out := ok(t, "trace", "status"); rowWith(out, tr.ID) == "" {
		t.Fatalf("trace status does not show trace %s:\n%s", tr.ID, out)
	}
	if out := ok(t, "trace", "stop", tr.ID); out != "trace "+tr.ID+" stopped\n" {
		t.Fatalf("trace stop: %q", out)
	}
	var traces struct{ Traces []admin.Trace }
	okJSON(t, &traces, "trace", "list")
	if len(traces.Traces) != 1 || traces.Traces[0].CIDR != "192.0.2.0/24" {
		t.Fatalf("trace list after stop: %+v", traces)
	}
	fails(t, exitFail, `^msrpctl: trace stop `+tr.ID+`: 404 Not Found: trace "`+tr.ID+`": not found`, "trace", "stop", tr.ID)
	fails(t, exitFail, `^msrpctl: trace on: 400 Bad Request: .*nosuch`, "trace", "on", "--user", "demo", "--to", "nosuch")
	fails(t, exitUsage, `^msrpctl: trace on: give one of --session, --user and --cidr$`, "trace", "on", "--user", "demo", "--session", "x")
	fails(t, exitUsage, `^msrpctl: trace status does not take --since$`, "trace", "status", "--since", "1h")

	// kill session: gone from the list, requests naming it get 481.
	var killed map[string]string
	okJSON(t, &killed, "kill", "session", b.sid)
	if killed["killed"] != "session" || killed["id"] != b.sid {
		t.Fatalf("kill session --json: %v", killed)
	}
	if out := ok(t, "sessions"); rowWith(out, b.sid) != "" || rowWith(out, a.sid) == "" {
		t.Fatalf("sessions after kill session %s:\n%s", b.sid, out)
	}
	fails(t, exitFail, `^msrpctl: kill session `+b.sid+`: 404 Not Found: session "`+b.sid+`": not found`, "kill", "session", b.sid)

	// kill connection: the client sees its connection closed.
	if out := ok(t, "kill", "connection", fmt.Sprint(aConn)); out != fmt.Sprintf("connection %d killed\n", aConn) {
		t.Fatalf("kill connection: %q", out)
	}
	select {
	case <-a.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("client A's connection is still open after kill connection")
	}
	if out := ok(t, "connections", "--session", a.sid); out != "no connections\n" {
		t.Fatalf("connections after kill:\n%s", out)
	}
	fails(t, exitUsage, `^msrpctl: kill connection: "abc" is not a connection ID`, "kill", "connection", "abc")
	fails(t, exitFail, `^msrpctl: kill connection 999999: 404 Not Found:`, "kill", "connection", "999999")

	// reload re-reads the file: a rule added there shows in rules.
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "  rules:\n", "  rules:\n    - {name: sends, match: 'method == \"SEND\"', frames: true, to: [pcap]}\n", 1))
	if err := os.WriteFile(d.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ok(t, "reload"); out != "configuration reloaded\n" {
		t.Fatalf("reload: %q", out)
	}
	if out := ok(t, "rules"); rowWith(out, "sends") == "" {
		t.Fatalf("rules after reload:\n%s", out)
	}
	if err := os.WriteFile(d.config, []byte("listen: [nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fails(t, exitFail, `^msrpctl: reload: 400 Bad Request: `, "reload")

	// Health.
	if out := ok(t, "health"); out != "ready\n" {
		t.Fatalf("health: %q", out)
	}
}

// The token from each place msrpctl takes it, and the one-line 401s.
func TestToken(t *testing.T) {
	clearEnv(t)
	d := startDaemon(t, fmt.Sprintf(adminConfig, t.TempDir()))
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok(t, "--admin", d.admin, "--token", "s3cret", "stats")
	ok(t, "stats", "--admin", d.admin, "--token-file", good)
	fails(t, exitFail, `^msrpctl: token refused \(401\): set --token, --token-file or MSRPSCOPE_TOKEN$`, "--admin", d.admin, "stats")
	fails(t, exitFail, `^msrpctl: token refused \(401\): the token from --token is wrong$`, "--admin", d.admin, "--token", "wrong", "trace", "off")
	fails(t, exitFail, `^msrpctl: token refused \(401\): the token from --token-file is wrong$`, "--admin", d.admin, "--token-file", bad, "sessions")
	fails(t, exitUsage, `^msrpctl: --token and --token-file: give one$`, "--admin", d.admin, "--token", "x", "--token-file", good, "stats")
	fails(t, exitFail, `^msrpctl: token file \(--token-file\): open `, "--admin", d.admin, "--token-file", filepath.Join(dir, "none"), "stats")

	// The environment, and the flags over it.
	t.Setenv("MSRPSCOPE_ADMIN", d.admin)
	t.Setenv("MSRPSCOPE_TOKEN", "wrong")
	fails(t, exitFail, `^msrpctl: token refused \(401\): the token from MSRPSCOPE_TOKEN is wrong$`, "stats")
	ok(t, "stats", "--token", "s3cret")
	t.Setenv("MSRPSCOPE_TOKEN", "")
	t.Setenv("MSRPSCOPE_TOKEN_FILE", good)
	ok(t, "stats")
	t.Setenv("MSRPSCOPE_TOKEN", "s3cret")
	t.Setenv("MSRPSCOPE_TOKEN_FILE", "")
	var st admin.TracingStatus
	okJSON(t, &st, "trace", "status")
	if !st.Enabled {
		t.Fatalf("trace status: %+v", st)
	}
	// Tracing is not switched by a refused request.
	fails(t, exitFail, `token refused \(401\)`, "trace", "off", "--token", "wrong")
	okJSON(t, &st, "trace", "status")
	if !st.Enabled {
		t.Fatal("a refused trace off switched tracing off")
	}
}

// An admin API nobody listens on: one line, exit 1.
func TestAdminUnreachable(t *testing.T) {
	clearEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{{"trace", "off"}, {"sessions"}, {"stats"}, {"kill", "connection", "1"}, {"health"}} {
		fails(t, exitFail, `^msrpctl: admin API at `+addr+` unreachable: connection refused$`, append([]string{"--admin", addr}, args...)...)
	}
	t.Setenv("MSRPSCOPE_ADMIN", ln.Addr().String()) // host:port without a scheme
	fails(t, exitFail, `^msrpctl: admin API at `+addr+` unreachable: connection refused$`, "reload")
}

// Usage: -h exits 0 with the usage on stdout; a bad command line exits 2
// with the usage on stderr.
func TestUsage(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"sessions", "-h"}} {
		r := ctl(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "msrpctl drives") || r.stderr != "" {
			t.Errorf("msrpctl %v: exit %d, stdout %.40q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--nope", "stats"}, "flag provided but not defined: -nope"},
		{[]string{"stats", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"trace"}, "trace: say status"},
		{[]string{"trace", "sideways"}, `trace: unknown subcommand "sideways"`},
		{[]string{"trace", "session"}, "trace session: want 1 argument, got 0"},
		{[]string{"trace", "ip", "not-an-ip"}, `trace ip "not-an-ip": not an address or CIDR`},
		{[]string{"trace", "ip", "127.0.0.1", "--since", "yesterday"}, `--since "yesterday": want a duration`},
		{[]string{"trace", "on", "--for", "5m"}, "trace on --for/--to: give --session, --user or --cidr"},
		{[]string{"kill", "everything", "now"}, `kill: say session ID or connection ID, not "everything"`},
		{[]string{"rule", "all"}, "missing arguments"},
		{[]string{"--admin", "ftp://x", "stats"}, `admin address "ftp://x": want http://host:port`},
	} {
		r := ctl(t, c.args...)
		if r.code != exitUsage || r.stdout != "" || !strings.HasPrefix(r.stderr, "msrpctl: "+c.msg) || !strings.Contains(r.stderr, "Usage: msrpctl") {
			t.Errorf("msrpctl %q: exit %d, stdout %q, stderr %.200q; want exit 2 and %q with the usage", c.args, r.code, r.stdout, r.stderr, c.msg)
		}
	}
}

// localPort is the client's own port: the relay's remote port for it.
func localPort(t *testing.T, c *client) uint16 {
	t.Helper()
	u := c.LocalURI() // msrp://127.0.0.1:PORT/...
	var port uint16
	if _, err := fmt.Sscanf(u[strings.LastIndexByte(u[:strings.LastIndexByte(u, '/')], ':')+1:], "%d", &port); err != nil {
		t.Fatalf("port of %s: %v", u, err)
	}
	return port
}

var _ = context.Background

// health: exit 1 with /readyz's reasons while a sink cannot reach its
// server (a ClickHouse sink: the HEP sink does not report a state).
func TestHealthNotReady(t *testing.T) {
	clearEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	d := startDaemon(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
tracing:
  rules:
    - {name: all, events: true, frames: true, to: [ch]}
sinks:
  ch: {type: clickhouse, addr: %q, dial_timeout: 1s, insert_timeout: 1s}
`, closed))
	t.Setenv("MSRPSCOPE_ADMIN", d.admin)
	d.demo(t) // a connection event for the sink to fail to send
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var r result
	for r = ctl(t, "health"); r.code == 0 && time.Now().Before(deadline); r = ctl(t, "health") {
		<-tick.C
	}
	if r.code != exitFail || r.stdout != "" || !strings.HasPrefix(r.stderr, "msrpctl: not ready: sink ch: ") ||
		strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("health with the collector down: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = ctl(t, "health", "--json")
	var body struct {
		Error   string   `json:"error"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &body); err != nil || r.code != exitFail || body.Error != "not ready" || len(body.Reasons) != 1 {
		t.Fatalf("health --json: exit %d, %v, stdout %q", r.code, err, r.stdout)
	}
}
