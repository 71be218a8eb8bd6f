package relay_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
	"github.com/msrpscope/msrpscope/relay"
)

// logLines parses the JSON log lines in s.
func logLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Logs are no attack surface (issue 14, defect 8): a flood of failed AUTHs
// writes Burst lines and one line counting the rest per interval, not a
// line each; a connection refused by max_connections_per_ip is logged,
// with the names the metrics use.
func TestLogsRateLimited(t *testing.T) {
	const burst, flood = 3, 200
	var buf syncBuffer
	cfg := relay.Config{
		Listen:  []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:   users(t),
		Logger:  slog.New(slog.NewJSONHandler(&buf, nil)), // INFO, as deployed
		LogRate: ratelog.Config{Burst: burst, Interval: time.Hour},
		Limits:  relay.Limits{MaxAuthFailures: flood + 1, MaxConnectionsPerIP: 1},
	}
	r, stop := runRelay(t, cfg)
	addr, uri := r.Addrs()[0].String(), r.URIs()[0].String()
	c := dialRawAuth(t, addr, uri)
	_, ch := c.auth("")
	for i := range flood {
		var code int
		if code, ch = c.auth(answerDigest(ch, "mallory", uri, "00000001")); code != 401 {
			t.Fatalf("failed AUTH %d: %d", i, code)
		}
	}
	// A second connection from the same IP is refused.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection over max_connections_per_ip: read %v, want EOF", err)
	}
	stop() // writes the pending counts

	lines := logLines(t, buf.String())
	var failed, counted, limitHits int
	for _, l := range lines {
		switch l["msg"] {
		case "AUTH failed":
			failed++
			if l["event"] != "auth_failed" {
				t.Errorf("AUTH failed line without event=auth_failed: %v", l)
			}
			if k, ok := l["suppressed"].(float64); ok {
				counted += int(k)
			}
		case "limit hit":
			limitHits++
			if l["limit"] != "max_connections_per_ip" || l["event"] != "refused" || l["reason"] != "limit" {
				t.Errorf("limit line %v", l)
			}
		}
	}
	if failed != burst+1 || counted != flood-burst {
		t.Errorf("%d AUTH failed lines counting %d more, want %d lines counting %d", failed, counted, burst+1, flood-burst)
	}
	if limitHits != 1 {
		t.Errorf("%d limit hit lines, want 1 (the refusal by max_connections_per_ip)", limitHits)
	}
	if len(lines) > 20 {
		t.Errorf("%d log lines for %d failed AUTHs and one refusal", len(lines), flood)
	}
	if t.Failed() {
		t.Logf("log:\n%s", buf.String())
	}
}

// The session limits and max_auth_failures are logged when hit, each
// under its own name.
func TestLimitHitsLogged(t *testing.T) {
	var buf syncBuffer
	cfg := relay.Config{
		Listen: []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:  users(t),
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)),
		Limits: relay.Limits{MaxAuthFailures: 2, MaxSessionsPerUser: 1},
	}
	r, stop := runRelay(t, cfg)
	addr, uri := r.Addrs()[0].String(), r.URIs()[0].String()
	c := dialRawAuth(t, addr, uri)
	for i, want := range []int{200, 403} { // alice's second session is one too many
		_, ch := c.auth("")
		if code, _ := c.auth(answerDigest(ch, "alice", uri, "00000001")); code != want {
			t.Fatalf("AUTH %d: %d, want %d", i, code, want)
		}
	}
	m := dialRawAuth(t, addr, uri)
	_, ch := m.auth("")
	for range 2 {
		_, ch = m.auth(answerDigest(ch, "mallory", uri, "00000001"))
	}
	if _, err := m.rd.ReadFrame(); err == nil {
		t.Fatal("connection open after max_auth_failures")
	}
	stop()
	hits := map[string]int{}
	for _, l := range logLines(t, buf.String()) {
		if l["msg"] == "limit hit" {
			hits[l["limit"].(string)]++
		}
	}
	if hits["max_sessions_per_user"] != 1 || hits["max_auth_failures"] != 1 || len(hits) != 2 {
		t.Fatalf("limit hit lines %v, want one each for max_sessions_per_user and max_auth_failures\n%s", hits, buf.String())
	}
}
