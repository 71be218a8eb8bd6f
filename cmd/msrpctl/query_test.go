package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/msrpscope/msrpscope/internal/clickhouse"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/storage"
)

// framesOut is msrpctl's --json answer of a frames query.
type framesOut struct {
	Session       string      `json:"session"`
	MessageID     string      `json:"message_id"`
	CorrelationID string      `json:"correlation_id"`
	IP            string      `json:"ip"`
	Since         string      `json:"since"`
	Until         string      `json:"until"`
	Port          int         `json:"port"`
	Frames        []frameJSON `json:"frames"`
	Truncated     bool        `json:"truncated"`
}

// Trace queries on a real ClickHouse 18.16 filled by a real msrpscope run.
func TestTraceQueries(t *testing.T) {
	clearEnv(t)
	srv := clickhouse.Start(t, clickhouse.Options{})
	d := startDaemon(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
tracing:
  rules:
    - {name: all, events: true, frames: true, to: [ch]}
sinks:
  ch: {type: clickhouse, addr: %q, batch_age: 100ms, node: relay-ctl}
`, srv.Addr()))
	a, b := d.demo(t), d.demo(t)
	msgs := []string{send(t, a, b, "one"), send(t, a, b, "two")}
	back := send(t, b, a, "back") // A answers B's SEND: the relay has read B's 200s before
	wrongPasswordAUTH(t, d)
	d.stop(t) // SIGTERM: the sink writes out what it holds
	t.Setenv("MSRPSCOPE_CLICKHOUSE", srv.Addr())

	// The session: its frames in order, each A's or sent to A.
	var s framesOut
	okJSON(t, &s, "trace", "session", a.sid)
	if s.Session != a.sid || s.Truncated {
		t.Fatalf("trace session --json: %+v", s)
	}
	var reqs []string
	responses := 0
	for i, f := range s.Frames {
		if f.SessionID != a.sid && f.PeerSessionID != a.sid {
			t.Errorf("frame %d is not session %s's: %+v", i, a.sid, f)
		}
		if len(f.TS) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("frame %d: ts %q is not RFC 3339 with microseconds", i, f.TS)
		}
		if i > 0 && mustTime(t, f.TS).Before(mustTime(t, s.Frames[i-1].TS)) {
			t.Errorf("frame %d (%s) before frame %d (%s)", i, f.TS, i-1, s.Frames[i-1].TS)
		}
		if f.Method != "" {
			reqs = append(reqs, f.Method+" "+f.Direction+" "+f.MessageID)
		} else if f.Status == 200 {
			responses++
		}
	}
	want := []string{"AUTH in ", "SEND in " + msgs[0], "SEND out " + msgs[0], "SEND in " + msgs[1], "SEND out " + msgs[1],
		"SEND in " + back, "SEND out " + back}
	if strings.Join(reqs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("session %s's requests:\n%s\nwant\n%s", a.sid, strings.Join(reqs, "\n"), strings.Join(want, "\n"))
	}
	if responses != 7 {
		t.Errorf("session %s: %d 200s, want 7 (the AUTH's, one in and one out per SEND)", a.sid, responses)
	}
	// The ladder shows the same frames, in the same order.
	out := ok(t, "trace", "session", a.sid)
	t.Logf("msrpctl trace session %s:\n%s", a.sid, out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2+len(s.Frames) || !strings.HasPrefix(lines[0], fmt.Sprintf("session %s: %d frames (", a.sid, len(s.Frames))) ||
		!strings.HasPrefix(lines[1], "TIME ") {
		t.Fatalf("trace session:\n%s", out)
	}
	for i, f := range s.Frames {
		from, to := f.Remote, f.Local
		if f.Direction == "out" {
			from, to = f.Local, f.Remote
		}
		label := fmt.Sprint(f.Status)
		if f.AuthResponse {
			label += " (AUTH)"
		}
		if f.Method != "" {
			label = f.Method + " " + f.Flag
		}
		wantLine := fmt.Sprintf("%s %d %s -> %s %s %s %d", f.Direction, f.ConnID, from, to, label, f.TransactID, f.Size)
		at := mustTime(t, f.TS)
		// The line starts with the time (after the date when the frames span days).
		clock := at.Format("15:04:05.000000")
		_, rest, found := strings.Cut(lines[2+i], clock+" ")
		if got := strings.Join(strings.Fields(rest), " "); !found || !strings.HasPrefix(got, wantLine) {
			t.Errorf("ladder line %d: %q, want %q", i, lines[2+i], wantLine)
		}
	}
	if out := ok(t, "trace", "session", "no-such-session"); out != "session no-such-session: no frames stored\n" {
		t.Errorf("trace session of nothing: %q", out)
	}
	okJSON(t, &s, "trace", "session", a.sid, "--limit", "2")
	if len(s.Frames) != 2 || !s.Truncated {
		t.Errorf("trace session --limit 2: %d frames, truncated %v", len(s.Frames), s.Truncated)
	}

	// A message across hops: its SENDs and the 200s to them.
	var m framesOut
	okJSON(t, &m, "trace", "message", msgs[0], "--body")
	// The relay answers A's SEND hop by hop (RFC 4976 section 6.1): its
	// 200 to A and B's 200 to it may come in either order.
	got := map[string]bool{}
	for _, f := range m.Frames {
		got[fmt.Sprintf("%s%d %s conn=%d tid=%s body=%q", f.Method, f.Status, f.Direction, f.ConnID, f.TransactID, f.Body)] = true
	}
	if len(m.Frames) == 4 {
		in, out := m.Frames[0], m.Frames[1]
		for _, w := range []string{
			fmt.Sprintf("SEND0 in conn=%d tid=%s body=%q", in.ConnID, in.TransactID, "one"),
			fmt.Sprintf("SEND0 out conn=%d tid=%s body=%q", out.ConnID, out.TransactID, "one"),
			fmt.Sprintf("200 out conn=%d tid=%s body=%q", in.ConnID, in.TransactID, ""),
			fmt.Sprintf("200 in conn=%d tid=%s body=%q", out.ConnID, out.TransactID, ""),
		} {
			if !got[w] {
				t.Errorf("trace message %s: no frame %s", msgs[0], w)
			}
		}
	}
	if m.MessageID != msgs[0] || len(m.Frames) != 4 || len(got) != 4 {
		t.Fatalf("trace message %s: %+v", msgs[0], m)
	}
	if out := ok(t, "trace", "message", msgs[0]); !strings.Contains(out, msgs[0]) || strings.Count(out, "SEND $") != 2 {
		t.Errorf("trace message:\n%s", out)
	}

	// An address: every frame of the run, AUTHs too.
	var ip framesOut
	okJSON(t, &ip, "trace", "ip", "127.0.0.1/32", "--since", "1h")
	methods := map[string]int{}
	for _, f := range ip.Frames {
		methods[f.Method]++
	}
	if ip.IP != "127.0.0.1/32" || methods["AUTH"] != 6 || methods["SEND"] != 6 || len(ip.Frames) <= len(s.Frames) {
		t.Fatalf("trace ip: %d frames, by method %v", len(ip.Frames), methods)
	}
	if out := ok(t, "trace", "ip", "127.0.0.1", "--since", "1h"); !strings.HasPrefix(out, "ip 127.0.0.1/32 since ") ||
		strings.Count(out, "\n") != 2+len(ip.Frames) {
		t.Errorf("trace ip table (%d frames):\n%s", len(ip.Frames), out)
	}
	okJSON(t, &ip, "trace", "ip", "192.0.2.0/24", "--since", "1h")
	if len(ip.Frames) != 0 {
		t.Errorf("trace ip 192.0.2.0/24: %d frames", len(ip.Frames))
	}
	okJSON(t, &ip, "trace", "ip", "127.0.0.1/32", "--since", "1h", "--until", "30m")
	if len(ip.Frames) != 0 {
		t.Errorf("trace ip --until 30m: %d frames from the last minutes", len(ip.Frames))
	}

	// Top talkers, failures, failed AUTHs.
	var top struct {
		Since   string `json:"since"`
		Talkers []struct {
			Addr          string `json:"addr"`
			Frames, Bytes uint64
		} `json:"talkers"`
	}
	okJSON(t, &top, "trace", "top", "--since", "1h")
	if len(top.Talkers) != 1 || top.Talkers[0].Addr != "127.0.0.1" || top.Talkers[0].Frames == 0 {
		t.Fatalf("trace top: %+v", top)
	}
	if out := ok(t, "trace", "top"); rowWith(out, "127.0.0.1") == "" {
		t.Errorf("trace top:\n%s", out)
	}
	var af struct {
		Since        string `json:"since"`
		AuthFailures []struct {
			User     string `json:"user"`
			Addr     string `json:"addr"`
			Failures uint64 `json:"failures"`
		} `json:"auth_failures"`
	}
	okJSON(t, &af, "trace", "auth-failures")
	if len(af.AuthFailures) != 1 || af.AuthFailures[0].User != "demo" || af.AuthFailures[0].Failures != 1 {
		t.Fatalf("trace auth-failures: %+v", af)
	}
	if out := ok(t, "trace", "auth-failures"); !strings.Contains(rowWith(out, "demo"), "127.0.0.1") {
		t.Errorf("trace auth-failures:\n%s", out)
	}
	var fl struct {
		Since    string `json:"since"`
		Failures []struct {
			Status    uint16 `json:"status"`
			Direction string `json:"direction"`
			Responses uint64 `json:"responses"`
		} `json:"failures"`
	}
	okJSON(t, &fl, "trace", "failures")
	if len(fl.Failures) == 0 || fl.Failures[0].Status != 401 {
		t.Fatalf("trace failures: %+v", fl)
	}
	if out := ok(t, "trace", "failures"); rowWith(out, "401") == "" {
		t.Errorf("trace failures:\n%s", out)
	}

	// Errors: a database that is not there, a server that is not there.
	fails(t, exitFail, `^msrpctl: ClickHouse at `+srv.Addr()+`: database nosuch does not exist`, "trace", "session", a.sid, "--database", "nosuch")
	fails(t, exitFail, `^msrpctl: ClickHouse at `+srv.Addr()+` refused the login \(code 192\): set --ch-user/--ch-password`, "trace", "top", "--ch-user", "nosuch")
	t.Setenv("MSRPSCOPE_CLICKHOUSE_PASSWORD", "wrong")
	fails(t, exitFail, `^msrpctl: ClickHouse at `+srv.Addr()+` refused the login \(code 193\)`, "trace", "top")
	t.Setenv("MSRPSCOPE_CLICKHOUSE_PASSWORD", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	fails(t, exitFail, `^msrpctl: ClickHouse at `+closed+` unreachable: connection refused$`, "trace", "session", a.sid, "--clickhouse", closed)
	fails(t, exitUsage, `^msrpctl: --clickhouse "nohost": want host:port`, "trace", "top", "--clickhouse", "nohost")
}

// wrongPasswordAUTH makes one AUTH with credentials the relay refuses.
func wrongPasswordAUTH(t *testing.T, d *daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := msrpclient.Dial(ctx, d.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Auth(ctx, d.uri, "demo", "not-the-password", 0)
	var se *msrpclient.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("AUTH with a wrong password: %v", err)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("ts %q: %v", s, err)
	}
	return at
}

// Trace queries over the native protocol's TLS port of 18.16: verified
// with --ch-cacert; refused in one line with the system roots alone.
func TestTraceQueriesTLS(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	secure := l.Addr().String()
	l.Close()
	srv := clickhouse.Start(t, clickhouse.Options{ExtraConfig: fmt.Sprintf(`
    <tcp_port_secure>%d</tcp_port_secure>
    <openSSL><server>
        <certificateFile>%s</certificateFile><privateKeyFile>%s</privateKeyFile>
        <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
        <disableProtocols>sslv2,sslv3</disableProtocols>
    </server></openSSL>`, l.Addr().(*net.TCPAddr).Port, certFile, keyFile)})
	conn, err := ch.Open(&ch.Options{Addr: []string{srv.Addr()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := storage.Migrate(context.Background(), conn, storage.Schema{Database: "msrpscope", Flavor: storage.Old, Topology: storage.Single}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MSRPSCOPE_CLICKHOUSE", secure)
	if out := ok(t, "trace", "top", "--ch-cacert", caFile); out != "no frames stored in that time\n" {
		t.Fatalf("trace top over TLS: %q", out)
	}
	fails(t, exitFail, `^msrpctl: ClickHouse at `+secure+`: its certificate is not trusted \(.*\): give its CA with --ch-cacert$`, "trace", "top", "--ch-tls")
	fails(t, exitFail, `^msrpctl: --ch-cacert: storage: tls ca `, "trace", "top", "--ch-cacert", filepath.Join(dir, "ca.key"))
}
