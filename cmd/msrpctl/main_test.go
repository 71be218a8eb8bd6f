package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// msrpscopeBin is the real daemon, built once by TestMain.
var msrpscopeBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "msrpctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	msrpscopeBin = filepath.Join(dir, "msrpscope")
	build := exec.Command("go", "build", "-o", msrpscopeBin, "github.com/msrpscope/msrpscope/cmd/msrpscope")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building msrpscope: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// logWatch collects a process's log and signals each write.
type logWatch struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	signal chan struct{}
}

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

// wait waits (at most 60 s, or until the process exits) for re in the log.
func (w *logWatch) wait(t *testing.T, re *regexp.Regexp, exited <-chan struct{}) []string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		if m := re.FindStringSubmatch(w.text()); m != nil {
			return m
		}
		select {
		case <-w.signal:
		case <-exited:
			if m := re.FindStringSubmatch(w.text()); m != nil {
				return m
			}
			t.Fatalf("msrpscope exited before logging %s:\n%s", re, w.text())
		case <-deadline:
			t.Fatalf("no %s in the log:\n%s", re, w.text())
		}
	}
}

// daemon is a running msrpscope process.
type daemon struct {
	cmd       *exec.Cmd
	log       *logWatch
	exited    chan struct{}
	waitErr   error
	uri, addr string // the relay's listener
	admin     string // http://host:port
	config    string // the config file's path
}

const demoPassword = "demo-pw"

// startDaemon runs msrpscope with config (YAML) and waits until its relay
// and admin API listen.
func startDaemon(t *testing.T, config string) *daemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msrpscope.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: &logWatch{signal: make(chan struct{}, 1)}, exited: make(chan struct{}), config: path}
	d.cmd = exec.Command(msrpscopeBin, "-config", path, "-log-level", "info")
	d.cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD="+demoPassword)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("msrpscope log:\n%s", d.log.text())
		}
	})
	m := d.log.wait(t, regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`), d.exited)
	d.uri, d.addr = m[1], m[2]
	a := d.log.wait(t, regexp.MustCompile(`msg="admin listening" addr=(\S+)`), d.exited)
	d.admin = "http://" + a[1]
	return d
}

// stop ends the daemon with SIGTERM (it flushes its sinks) and waits; it
// is killed after 60 s.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.waitErr != nil {
			t.Errorf("msrpscope: %v", d.waitErr)
		}
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("msrpscope did not stop on SIGTERM")
	}
}

// client is a demo user's connection through the relay.
type client struct {
	*msrpclient.Client
	use, sid string // Use-Path and its session ID
}

func (d *daemon) demo(t *testing.T) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := msrpclient.Dial(ctx, d.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	use, _, err := c.Auth(ctx, d.uri, "demo", demoPassword, 0)
	if err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	u, err := msrp.ParseURI(strings.Fields(use)[0])
	if err != nil || u.SessionID == "" {
		t.Fatalf("Use-Path %q: %v", use, err)
	}
	return &client{Client: c, use: use, sid: u.SessionID}
}

// send relays body from a to b and waits until b has it; it returns the
// Message-ID.
func send(t *testing.T, a, b *client, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.Send(ctx, []string{a.use, b.use, b.LocalURI()}, msrpclient.Message{Body: []byte(body), ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("SEND %q: %v", body, err)
	}
	for {
		select {
		case r, ok := <-b.Incoming():
			if !ok {
				t.Fatal("receiver closed")
			}
			if r.Method == "SEND" && string(r.Body) == body {
				return res.MessageID
			}
		case <-ctx.Done():
			t.Fatalf("%q not delivered", body)
		}
	}
}

// result is one msrpctl run.
type result struct {
	code           int
	stdout, stderr string
}

// ctl runs msrpctl's run() with args.
func ctl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// ok runs msrpctl and fails the test unless it exits 0 with nothing on stderr.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := ctl(t, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("msrpctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// okJSON runs msrpctl with --json and decodes its output into v.
func okJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := ok(t, append(args, "--json")...)
	reflect.ValueOf(v).Elem().SetZero() // fields absent from this answer must not keep the last one's
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("msrpctl %s --json: %v in\n%s", strings.Join(args, " "), err, out)
	}
	if dec.More() {
		t.Fatalf("msrpctl %s --json: more than one JSON value:\n%s", strings.Join(args, " "), out)
	}
}

// fails runs msrpctl, wants exit code and exactly one stderr line matching re.
func fails(t *testing.T, code int, re string, args ...string) {
	t.Helper()
	r := ctl(t, args...)
	if r.code != code {
		t.Fatalf("msrpctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if code == exitFail && len(lines) != 1 {
		t.Errorf("msrpctl %s: %d stderr lines, want one:\n%s", strings.Join(args, " "), len(lines), r.stderr)
	}
	if !regexp.MustCompile(re).MatchString(lines[0]) {
		t.Errorf("msrpctl %s: stderr %q does not match %q", strings.Join(args, " "), lines[0], re)
	}
	if r.stdout != "" {
		t.Errorf("msrpctl %s: stdout on failure:\n%s", strings.Join(args, " "), r.stdout)
	}
}

// rowWith returns the table line whose first column is first ("" when none).
func rowWith(out, first string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return l
		}
	}
	return ""
}
