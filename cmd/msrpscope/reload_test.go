package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
)

// SIGHUP under load: the rules and sinks change while clients keep sending;
// no connection is dropped, no message is lost, a sink that stays loses
// nothing, a removed sink writes out what it holds, and each message is
// traced by the rules in force when it was sent (before the signal: the old
// ones only; after the "configuration reloaded" line: the new ones only).
func TestReloadUnderLoad(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	dirA, dirB := t.TempDir(), t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	write := func(rules string) {
		t.Helper()
		body := "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nadmin: {addr: \"127.0.0.1:0\"}\n" +
			"sinks:\n  a: {type: pcap, dir: \"" + dirA + "\"}\n  b: {type: pcap, dir: \"" + dirB + "\"}\n" +
			"tracing:\n  rules:\n" + rules
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	toA := "    - {name: to-a, frames: true, to: [a]}\n"
	toB := "    - {name: to-b, frames: true, to: [b]}\n"
	write(toA)

	logs := newLogWatch()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-config", cfgPath, "-log-level", "info"}, logs) }()
	m := logs.wait(t, regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`))
	uri, addr := m[1], m[2]

	tctx, tcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer tcancel()
	const pairs = 2
	type pair struct {
		a, b *msrpclient.Client
		path []string
	}
	var ps [pairs]pair
	for i := range ps {
		var uses [2]string
		var cs [2]*msrpclient.Client
		for j := range cs {
			c, err := msrpclient.Dial(tctx, addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if uses[j], _, err = c.Auth(tctx, uri, "demo", "demo-secret", 0); err != nil {
				t.Fatal(err)
			}
			cs[j] = c
		}
		ps[i] = pair{cs[0], cs[1], []string{uses[0], uses[1], cs[1].LocalURI()}}
	}

	// Each message records when it was sent relative to the reloads.
	type sent struct {
		body     string
		phase    int  // reloads done (log line seen) before it was sent
		inFlight bool // a SIGHUP was sent and not yet reloaded while it was on its way
	}
	answered := make(chan struct{}, 1)
	var (
		mu     sync.Mutex
		msgs   []sent
		hups   atomic.Int32 // SIGHUPs sent
		loaded atomic.Int32 // reloads logged
		stop   atomic.Bool
		seq    atomic.Int64
		wg     sync.WaitGroup
	)
	for i := range ps {
		p := ps[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				hBefore, lBefore := hups.Load(), loaded.Load()
				body := fmt.Sprintf("reload-msg-%06d", seq.Add(1))
				if _, err := p.a.Send(tctx, p.path, msrpclient.Message{Body: []byte(body), ContentType: "text/plain"}); err != nil {
					t.Errorf("send %s: %v", body, err)
					return
				}
				hAfter := hups.Load()
				mu.Lock()
				msgs = append(msgs, sent{body: body, phase: int(lBefore), inFlight: hBefore != hAfter || lBefore != hBefore})
				mu.Unlock()
				select {
				case answered <- struct{}{}:
				default:
				}
			}
		}()
	}
	var received atomic.Int64
	arrived := make(chan struct{}, 1<<20)
	for i := range ps {
		go func(c *msrpclient.Client) {
			for r := range c.Incoming() {
				if r.Method == "SEND" {
					received.Add(1)
					arrived <- struct{}{}
				}
			}
		}(ps[i].b)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(msgs) }
	waitCount := func(n int) {
		t.Helper()
		for count() < n {
			select {
			case <-answered:
			case <-tctx.Done():
				t.Fatal("load stalled")
			}
		}
	}
	reload := func(rules string) {
		t.Helper()
		write(rules)
		want := int(hups.Add(1))
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		logs.waitN(t, "configuration reloaded", want)
		loaded.Store(int32(want))
	}
	waitCount(300)
	reload(toA + toB) // a stays (same config): nothing lost; b starts
	waitCount(count() + 300)
	reload(toB) // a is removed: it writes out what it holds
	waitCount(count() + 300)
	stop.Store(true)
	wg.Wait()
	// Every message was answered and delivered before the relay stops.
	for n := 0; n < len(msgs); n++ {
		select {
		case <-arrived:
		case <-tctx.Done():
			t.Fatalf("%d of %d messages delivered", n, len(msgs))
		}
	}
	for i := range ps {
		for _, c := range []*msrpclient.Client{ps[i].a, ps[i].b} {
			select {
			case <-c.Done():
				t.Fatalf("pair %d: a connection was dropped: %v", i, c.Err())
			default:
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	a, b := pcapText(t, dirA), pcapText(t, dirB)
	for _, m := range msgs {
		inA, inB := strings.Count(a, m.body), strings.Count(b, m.body)
		if m.inFlight {
			if inA+inB < 2 || inA > 2 || inB > 2 {
				t.Errorf("%s (sent across a reload): %d frames in a, %d in b", m.body, inA, inB)
			}
			continue
		}
		wantA, wantB := 2, 0 // frame in + frame out
		switch m.phase {
		case 1:
			wantB = 2
		case 2:
			wantA, wantB = 0, 2
		}
		if inA != wantA || inB != wantB {
			t.Errorf("%s (after %d reloads): %d frames in a, %d in b; want %d and %d", m.body, m.phase, inA, inB, wantA, wantB)
		}
	}
	if n := received.Load(); n != int64(len(msgs)) {
		t.Errorf("%d messages delivered, %d answered 200", n, len(msgs))
	}
	t.Logf("%d messages across 2 reloads", len(msgs))
}

// logWatch is a run's log output that tests wait on.
type logWatch struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	signal chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{signal: make(chan struct{}, 1)} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *logWatch) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// until waits (at most 30 s) until ok holds for the log so far.
func (w *logWatch) until(t *testing.T, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !ok(w.text()) {
		select {
		case <-w.signal:
		case <-deadline:
			t.Fatalf("no %s in the log:\n%s", what, w.text())
		}
	}
}

func (w *logWatch) wait(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	w.until(t, re.String(), func(s string) bool { m = re.FindStringSubmatch(s); return m != nil })
	return m
}

func (w *logWatch) waitN(t *testing.T, s string, n int) {
	t.Helper()
	w.until(t, fmt.Sprintf("%d × %q", n, s), func(l string) bool { return strings.Count(l, s) >= n })
}

// pcapText is every pcap file of dir, concatenated.
func pcapText(t *testing.T, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}
