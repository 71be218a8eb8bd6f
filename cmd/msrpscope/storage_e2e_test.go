package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/clickhouse"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
)

// running is one msrpscope started by run() with a config file.
type running struct {
	uri, addr string
	logs      *logWatch
	cancel    context.CancelFunc
	done      chan error
}

func startRelayRun(t *testing.T, cfgPath string) *running {
	t.Helper()
	r := &running{logs: newLogWatch(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- run(ctx, []string{"-config", cfgPath}, r.logs) }()
	m := r.logs.wait(t, regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`))
	r.uri, r.addr = m[1], m[2]
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the run as SIGTERM does and waits for it (sinks write out
// what they hold within the run's own bound).
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("run did not stop; log:\n%s", r.logs.text())
	}
}

// sendN relays n SENDs A → B through the run, each answered and delivered.
func (r *running) sendN(t *testing.T, n int, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cs [2]*msrpclient.Client
	var uses [2]string
	for i := range cs {
		c, err := msrpclient.Dial(ctx, r.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if uses[i], _, err = c.Auth(ctx, r.uri, "demo", "demo-secret", 0); err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	for i := range n {
		body := fmt.Sprintf("%s-%d", tag, i)
		if _, err := cs[0].Send(ctx, []string{uses[0], uses[1], cs[1].LocalURI()}, msrpclient.Message{Body: []byte(body), ContentType: "text/plain"}); err != nil {
			t.Fatalf("SEND %s: %v", body, err)
		}
		select {
		case got := <-cs[1].Incoming():
			if string(got.Body) != body {
				t.Fatalf("B got %q, want %q", got.Body, body)
			}
		case <-ctx.Done():
			t.Fatalf("%s not delivered", body)
		}
	}
	// B answers one SEND back: once A has it, the relay has read B's 200 to
	// the last SEND (it came first on B's connection), so its row is due.
	if _, err := cs[1].Send(ctx, []string{uses[1], uses[0], cs[0].LocalURI()}, msrpclient.Message{Body: []byte("back-" + tag), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cs[0].Incoming():
	case <-ctx.Done():
		t.Fatal("back SEND not delivered")
	}
}

// Traces stored in a real ClickHouse 18.16 through the relay: every frame
// is a row, exactly once, across a SIGKILL of ClickHouse in the middle of
// the run and across a relay restart while batches wait in the spool.
func TestStorageEndToEnd(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	ch := clickhouse.Start(t, clickhouse.Options{})
	spoolDir := filepath.Join(t.TempDir(), "spool")
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	cfg := "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\n" +
		"sinks:\n  ch:\n    type: clickhouse\n    addr: \"" + ch.Addr() + "\"\n    spool_dir: \"" + spoolDir + "\"\n" +
		"    batch_age: 100ms\n    node: relay-e2e\n    dial_timeout: 1s\n    insert_timeout: 5s\n" +
		"tracing:\n  rules:\n    - {name: all, events: true, frames: true, to: [ch]}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	count := func(where string) int {
		t.Helper()
		out := strings.TrimSpace(ch.MustQuery(t, "SELECT count() FROM msrpscope.frames WHERE "+where))
		n, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("count %q: %v", out, err)
		}
		return n
	}

	// 1. ClickHouse killed in the middle of a run, then back.
	r1 := startRelayRun(t, cfgPath)
	r1.sendN(t, 150, "before-kill")
	ch.Kill()
	r1.sendN(t, 150, "while-down")
	ch.Restart()
	r1.sendN(t, 150, "after-restart")
	r1.stop(t) // ClickHouse is up: the spool drains before the run ends
	if n := count("method = 'SEND' AND direction = 'in' AND body NOT LIKE 'back-%'"); n != 450 {
		t.Fatalf("after a ClickHouse kill: %d SEND rows in, want 450", n)
	}

	// 2. The relay stops while ClickHouse is down: batches stay in the
	// spool; the next start stores them.
	ch.Kill()
	r2 := startRelayRun(t, cfgPath)
	r2.sendN(t, 100, "relay-restart")
	r2.stop(t) // gives up after its bound: the batches wait on disk
	ch.Restart()
	r3 := startRelayRun(t, cfgPath)
	r3.sendN(t, 10, "after-relay-restart")
	r3.stop(t)

	const sends = 450 + 100 + 10
	const relayed = "(SELECT transact_id FROM msrpscope.frames WHERE method = 'SEND' AND direction = 'out' AND body NOT LIKE 'back-%')"
	checks := []struct {
		where string
		want  int
	}{
		{"method = 'SEND' AND direction = 'in' AND body NOT LIKE 'back-%'", sends},
		{"method = 'SEND' AND direction = 'out' AND body NOT LIKE 'back-%'", sends},
		{"method = 'SEND' AND body LIKE 'back-%'", 2 * 5},
		{"status = 200 AND direction = 'in' AND transact_id IN " + relayed, sends}, // B's 200s
		{"method = '' AND status = 200 AND auth_response = 1", 2 * 5},              // the AUTHs' 200s: two clients, five rounds
		{"method = 'SEND' AND body LIKE 'relay-restart-%'", 2 * 100},
		{"node != 'relay-e2e'", 0},
	}
	for _, c := range checks {
		if n := count(c.where); n != c.want {
			t.Errorf("%s: %d rows, want %d", c.where, n, c.want)
		}
	}
	// No row twice: every (connection, transact-id, direction) once.
	dup := strings.TrimSpace(ch.MustQuery(t, "SELECT count() - uniqExact(conn_id, transact_id, direction) FROM msrpscope.frames"))
	if dup != "0" {
		t.Errorf("%s duplicated frame rows", dup)
	}
	// A session's frames carry its id: A's SENDs name A's session.
	if n := count("method = 'SEND' AND session_id = '' AND direction = 'in'"); n != 0 {
		t.Errorf("%d SEND rows without a session id", n)
	}
	events := strings.TrimSpace(ch.MustQuery(t, "SELECT count() FROM msrpscope.events WHERE event = 'accepted'"))
	if events != strconv.Itoa(2*5) { // two clients in each of five rounds
		t.Errorf("%s accepted events, want 10", events)
	}
}
