package promtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/dashboards"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/internal/proc"
	"github.com/msrpscope/msrpscope/internal/testenv"
)

// process is a child process whose stderr is watched line by line.
type process struct {
	cmd    *exec.Cmd
	proc   *proc.Proc
	mu     sync.Mutex
	lines  []string
	signal chan struct{}
	done   chan struct{} // closed when its stderr has been read to the end
}

// start runs name with args in a process group of its own; Cleanup stops
// it with SIGTERM (SIGKILL to the group after 20 s) and, when the test
// failed, logs its output.
func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), signal: make(chan struct{}, 1), done: make(chan struct{})}
	// A pipe of our own rather than StderrPipe: proc reaps the process
	// while the scanner below may still be reading.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, w
	p.proc, err = proc.Start(p.cmd, nil)
	w.Close()
	if err != nil {
		stderr.Close()
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer stderr.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.signal <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		if p.proc.Stop(20 * time.Second) {
			t.Errorf("%s did not stop on SIGTERM", name)
		}
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s output:\n%s", filepath.Base(name), strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// wait returns the submatches of the first output line matching re.
func (p *process) wait(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for seen := 0; ; {
		p.mu.Lock()
		lines := p.lines[seen:]
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		select {
		case <-p.signal:
		case <-p.done:
			t.Fatalf("%s exited before logging %s", p.cmd.Path, re)
		case <-deadline:
			t.Fatalf("%s did not log %s within 60s", p.cmd.Path, re)
		}
	}
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePort is a loopback address free a moment ago (Prometheus does not report a :0 port).
func freePort(t *testing.T) string {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// promResult is the answer of Prometheus's /api/v1/query.
type promResult struct {
	Status, Error string
	Data          struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		} `json:"result"`
	}
}

func promQuery(t *testing.T, base, expr string) promResult {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r promResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	if r.Status != "success" {
		t.Fatalf("%s: %s %s", expr, r.Status, r.Error)
	}
	return r
}

// ready waits until Prometheus answers /-/ready with 200, for at most a minute.
func ready(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus not ready within a minute: %v", err)
		}
		<-tick.C
	}
}

// poll waits until ok holds for expr's result, polling every 200 ms for at most a minute.
func poll(t *testing.T, base, what, expr string, ok func(promResult) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if r := promQuery(t, base, expr); ok(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: no %s within a minute (%s)", what, expr)
		}
		<-tick.C
	}
}

// The relay-health dashboard's every PromQL target, with Grafana's variables substituted
// ($instance All and one instance; $__rate_interval 1m), returns at least one series from a
// real Prometheus (Debian's 2.42) that scraped a running msrpscope after real traffic: AUTHs
// (one failed, closing its connection by the max_auth_failures limit) and SENDs alice to bob.
func TestPanelsOnPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "prometheus not found (apt-get install prometheus)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "msrpscope")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/msrpscope/msrpscope/cmd/msrpscope")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	users := write(t, dir, "users.yaml", "users:\n  - {name: alice, password: alice-pw}\n  - {name: bob, password: bob-pw}\n")
	pcapDir := filepath.Join(dir, "pcap")
	if err := os.Mkdir(pcapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := write(t, dir, "msrpscope.yaml", fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
relay:
  auth: {users_file: %q}
  limits: {max_auth_failures: 1}
tracing:
  enabled: true
  rules: [{name: all, events: true, frames: true, to: [pcap]}]
sinks:
  pcap: {type: pcap, dir: %q}
admin: {addr: "127.0.0.1:0"}
`, users, pcapDir))
	relayProc := start(t, bin, "-config", cfg)
	m := relayProc.wait(t, regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`))
	uri, relayAddr := m[1], m[2]
	admin := relayProc.wait(t, regexp.MustCompile(`msg="admin listening" addr=(\S+)`))[1]

	promAddr := freePort(t)
	promCfg := write(t, dir, "prometheus.yml", fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: msrpscope
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs: [{targets: [%q]}]
`, admin))
	start(t, promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=info")
	base := "http://" + promAddr

	// Traffic: a failed AUTH (the connection is closed: limit), alice and bob, SENDs.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(user, pw string) (*msrpclient.Client, string, error) {
		c, err := msrpclient.Dial(ctx, relayAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		use, _, err := c.Auth(ctx, uri, user, pw, 0)
		return c, use, err
	}
	if _, _, err := dial("alice", "wrong"); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	a, useA, err := dial("alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	b, useB, err := dial("bob", "bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		res, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{
			Body: []byte(fmt.Sprintf("hello %d", i)), ContentType: "text/plain"})
		if err != nil || res.Chunks[0].Code != 200 {
			t.Fatalf("SEND %d: %+v, %v", i, res, err)
		}
	}
	// Prometheus is up and has scraped the relay after the traffic (the limit hit is the last
	// series to appear) at least three times: rates over a minute have samples.
	ready(t, base)
	poll(t, base, "scrapes after the traffic", "count_over_time(msrpscope_limit_hits_total[1m]) >= 3",
		func(r promResult) bool { return len(r.Data.Result) > 0 })

	d := dashboards.RelayHealth()
	// The instance variable's options: label_values(msrpscope_sessions, instance).
	var opts struct{ Data []string }
	resp, err := http.Get(base + "/api/v1/label/instance/values?match[]=msrpscope_sessions")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&opts)
	resp.Body.Close()
	if err != nil || len(opts.Data) != 1 || opts.Data[0] != admin {
		t.Fatalf("instance options %v (%v), want [%s]", opts.Data, err, admin)
	}
	checked := 0
	for _, state := range []struct {
		name string
		v    dashboards.Var
	}{
		{"all", dashboards.Var{All: true, AllValue: ".*", Values: opts.Data}},
		{"one", dashboards.Var{Values: opts.Data}},
		{"other", dashboards.Var{Values: []string{"127.0.0.1:1"}}},
	} {
		for _, q := range dashboards.Queries(d) {
			expr, err := dashboards.ExpandPromQL(q.Query, time.Minute, 15*time.Second, time.Hour,
				map[string]dashboards.Var{"instance": state.v})
			if err != nil {
				t.Fatalf("%s: %v", q.Panel, err)
			}
			r := promQuery(t, base, expr)
			if r.Data.ResultType != "vector" {
				t.Errorf("%s (%s): result type %s", q.Panel, state.name, r.Data.ResultType)
			}
			if state.name == "other" {
				if len(r.Data.Result) != 0 {
					t.Errorf("%s: series for another instance: %v", q.Panel, r.Data.Result)
				}
				continue
			}
			if len(r.Data.Result) == 0 {
				t.Errorf("%s (%s): no series\n%s", q.Panel, state.name, expr)
			}
			if state.name == "all" {
				checked++
			}
		}
	}
	// The limit hit is the failed AUTH's.
	r := promQuery(t, base, `msrpscope_limit_hits_total`)
	if len(r.Data.Result) != 1 || r.Data.Result[0].Metric["limit"] != "limit" {
		t.Errorf("limit hits %v, want one series limit=limit", r.Data.Result)
	}
	t.Logf("%d PromQL targets of %d panels checked", checked, len(d.Panels))
}
