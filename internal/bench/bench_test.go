package bench

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/msrpscope/msrpscope/internal/kamailio"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		line      string
		ppid      int
		ticks     uint64
		wantError bool
	}{
		{"plain", "20306 (cat) R 20303 20303 10536 0 -1 4194304 103 0 0 0 7 5 0 0 20 0 1 0 1040690 3133440 389", 20303, 12, false},
		{"name with spaces and parens", "42 (kam (tcp) x) S 1 42 42 0 -1 0 0 0 0 0 1234 56 0 0 20 0 1 0 1 1 1", 1, 1290, false},
		{"large counters", "7 (msrpscope) S 3 7 7 0 -1 0 0 0 0 0 18446744073709 1 0 0 20 0 1 0", 3, 18446744073710, false},
		{"no paren", "7 msrpscope S 3", 0, 0, true},
		{"truncated", "7 (x) S 3 7 7 0 -1 0 0 0 0 0 12", 0, 0, true},
		{"bad utime", "7 (x) S 3 7 7 0 -1 0 0 0 0 0 1x 2 0 0 20 0 1 0", 0, 0, true},
		{"bad ppid", "7 (x) S p 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf, err := parseStat([]byte(tc.line))
			if tc.wantError {
				if err == nil {
					t.Fatalf("parseStat(%q) = %+v, want an error", tc.line, sf)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sf.ppid != tc.ppid || sf.ticks != tc.ticks {
				t.Fatalf("parseStat = ppid %d ticks %d, want %d %d", sf.ppid, sf.ticks, tc.ppid, tc.ticks)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := []byte("Name:\tmsrpscope\nVmPeak:\t 1000 kB\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n")
	for _, tc := range []struct {
		key  string
		want int64
	}{{"VmHWM", 65536}, {"VmRSS", 40960}, {"VmSwap", -1}, {"Name", -1}} {
		if got := parseStatusKB(status, tc.key); got != tc.want {
			t.Errorf("parseStatusKB(%s) = %d, want %d", tc.key, got, tc.want)
		}
	}
	rollup := []byte("55d0-7ff [rollup]\nRss:   8000 kB\nPss:   3000 kB\n")
	if got := parseStatusKB(rollup, "Pss"); got != 3000 {
		t.Errorf("Pss = %d, want 3000", got)
	}
}

// TestProcessTreeCPU reads this process and a child's CPU from /proc.
func TestProcessTreeCPU(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep: %v", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	tree, err := processTree(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tree[0] != os.Getpid() || !contains(tree, cmd.Process.Pid) {
		t.Fatalf("processTree(%d) = %v, want it first and the child %d in it", os.Getpid(), tree, cmd.Process.Pid)
	}
	if _, err := cpuTicks(tree); err != nil {
		t.Fatal(err)
	}
	m, err := readMem(tree)
	if err != nil || m.RSSKB <= 0 || m.HWMKB <= 0 {
		t.Fatalf("readMem = %+v, %v; want positive sizes", m, err)
	}
	if _, err := cpuTicks([]int{1 << 30}); err == nil {
		t.Fatal("cpuTicks of a pid that does not exist: no error")
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds msrpscope and msrpload once for the package's tests.
func buildBinaries(t *testing.T) (msrpscope, msrpload string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "bench-test-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", buildDir+string(filepath.Separator),
			"github.com/msrpscope/msrpscope/cmd/msrpscope", "github.com/msrpscope/msrpscope/cmd/msrpload").CombinedOutput()
		if err != nil {
			buildErr = err
			buildDir = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildDir)
	}
	return filepath.Join(buildDir, "msrpscope"), filepath.Join(buildDir, "msrpload")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" && buildErr == nil {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestScopeConfigChecks runs the real msrpscope -check-config on each
// generated config, and on one with a misspelt key to show the check
// can fail.
func TestScopeConfigChecks(t *testing.T) {
	scope, _ := buildBinaries(t)
	dir := t.TempDir()
	check := func(name string, cfg []byte) error {
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(scope, "-check-config", p).CombinedOutput()
		if err != nil {
			t.Logf("%s:\n%s\n%s", name, cfg, out)
		}
		return err
	}
	for _, setup := range []string{TracingOff, TracingDefault, TracingHEP} {
		cfg, err := scopeConfig(setup, "127.0.0.1:28855", "127.0.0.1:28856", "127.0.0.1:9060")
		if err != nil {
			t.Fatal(err)
		}
		if err := check(setup, cfg); err != nil {
			t.Errorf("msrpscope -check-config rejects the %s config: %v", setup, err)
		}
		for _, want := range []string{"max_sessions_per_user: 8192", "max_connections_per_ip: 8192", `addr: "127.0.0.1:28856"`} {
			if !strings.Contains(string(cfg), want) {
				t.Errorf("%s config lacks %q:\n%s", setup, want, cfg)
			}
		}
		switch setup {
		case TracingOff:
			if !strings.Contains(string(cfg), "enabled: false") {
				t.Errorf("off config does not disable tracing:\n%s", cfg)
			}
		case TracingDefault:
			if strings.Contains(string(cfg), "tracing") || strings.Contains(string(cfg), "sinks") {
				t.Errorf("default config changes the tracing part:\n%s", cfg)
			}
		case TracingHEP:
			if !strings.Contains(string(cfg), `addr: "127.0.0.1:9060"`) || !strings.Contains(string(cfg), "transport: udp") {
				t.Errorf("hep config does not send to the collector over UDP:\n%s", cfg)
			}
		}
	}
	bad, _ := scopeConfig(TracingOff, "127.0.0.1:28855", "", "")
	if err := check("misspelt", bytes.Replace(bad, []byte("max_sessions_per_user"), []byte("max_session_per_user"), 1)); err == nil {
		t.Error("msrpscope -check-config accepts a misspelt key: the check proves nothing")
	}
	if _, err := scopeConfig("all", "127.0.0.1:1", "", ""); err == nil {
		t.Error("scopeConfig accepts an unknown setup")
	}
	if _, err := scopeConfig(TracingHEP, "127.0.0.1:1", "", ""); err == nil {
		t.Error("scopeConfig accepts hep without a collector address")
	}
}

func i64(v int64) *int64 { return &v }

// TestSummarizeAndRender checks medians, bests, ratios and the table text.
func TestSummarizeAndRender(t *testing.T) {
	scope := &target{kind: "msrpscope", name: "msrpscope, tracing off"}
	kam := &target{kind: "kamailio", name: "Kamailio 5.6, 2 children"}
	spec := &tableSpec{name: "small", title: "small SENDs", unit: "SEND", rows: []*row{
		{target: scope, label: scope.name},
		{target: kam, label: kam.name, note: "a note"},
	}}
	mk := func(relay string, sps float64, frames, recv int64, cpu float64) *Run {
		return &Run{Table: "small", Relay: relay, RelayCPUSeconds: cpu, DriverCPUSeconds: cpu / 2,
			Load: &LoadReport{SendFrames: frames, SendFramesPerSec: sps, Seconds: 5, ReceivedSends: i64(recv), Messages: frames},
			Mem:  memInfo{RSSKB: 40 << 10, HWMKB: 50 << 10}}
	}
	runs := []*Run{
		mk(scope.name, 90000, 450000, 450000, 4.5), // 10 µs/SEND
		mk(scope.name, 80000, 400000, 400000, 6.0), // 15
		mk(scope.name, 100000, 500000, 500000, 6.0),
		mk(kam.name, 50000, 250000, 100000, 7.5), // 30 µs/SEND
		mk(kam.name, 40000, 200000, 100000, 8.0), // 40
		mk(kam.name, 45000, 225000, 225000, 9.0), // 40
		{Table: "small", Relay: kam.name, Err: "relay died"},
	}
	runs[0].Load.Errors = map[string]int64{"timeout": 2}
	tb := summarize(spec, runs)
	s, k := tb.Rows[0], tb.Rows[1]
	if s.Runs != 3 || k.Runs != 3 {
		t.Fatalf("runs %d %d, want 3 3 (the failed one left out)", s.Runs, k.Runs)
	}
	if s.SendPerSecMedian != 90000 || s.SendPerSecBest != 100000 {
		t.Errorf("msrpscope SEND/s median %v best %v, want 90000 100000", s.SendPerSecMedian, s.SendPerSecBest)
	}
	if s.CPUPerSendUSMedian != 12 || s.CPUPerSendUSBest != 10 {
		t.Errorf("msrpscope CPU/SEND median %v best %v, want 12 10", s.CPUPerSendUSMedian, s.CPUPerSendUSBest)
	}
	if k.CPUPerSendUSMedian != 40 || k.Delivered != 425000 || k.Acked != 675000 {
		t.Errorf("Kamailio CPU/SEND median %v delivered %d acked %d, want 40 425000 675000", k.CPUPerSendUSMedian, k.Delivered, k.Acked)
	}
	if s.VsKamailioRate == nil || *s.VsKamailioRate != 2 || s.VsKamailioCPU == nil || *s.VsKamailioCPU != 0.3 {
		t.Errorf("ratios %v %v, want 2 and 0.3", ratio(s.VsKamailioRate), ratio(s.VsKamailioCPU))
	}
	if s.Errors != 2 {
		t.Errorf("errors %d, want 2", s.Errors)
	}
	var buf bytes.Buffer
	render(&buf, &Result{Settings: Settings{Rounds: 3}, Tables: []*Table{tb}, Failures: []string{"x: died\nlog"}})
	out := buf.String()
	for _, want := range []string{
		"### small SENDs",
		"| relay | SEND/s median | SEND/s best | delivered/s median | relay CPU µs/SEND median | best | relay CPU µs/delivered SEND |",
		"| msrpscope, tracing off | 90,000 | 100,000 | 90,000 | 12.0 | 10.0 | 12.0 | 2.00 | 4.50 | 0.30 | 0.16 | 100.0 % of 1,350,000 | 2 |",
		"| Kamailio 5.6, 2 children | 45,000 | 50,000 | 20,000 | 40.0 | 30.0 | 75.0 | 1.00 | 1.00 | 1.00 | 1.00 | 63.0 % of 675,000 | 0 |",
		"reference for the ratios: Kamailio 5.6, 2 children",
		"Kamailio 5.6, 2 children: a note",
		"### FAILED\n\n- x: died\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderMBAndRaw(t *testing.T) {
	scope := &target{kind: "msrpscope", name: "msrpscope, tracing off"}
	raw := &target{kind: kindRaw, name: "raw"}
	proxy := &target{kind: kindProxy, name: "proxy"}
	direct := &target{kind: kindDirect, name: directLabel}
	spec := &tableSpec{name: "large", title: "large", unit: "MB", rows: []*row{
		{target: scope, label: scope.name}, {target: direct, label: direct.name}, {target: raw, label: raw.name}, {target: proxy, label: proxy.name},
	}}
	tb := summarize(spec, []*Run{
		{Table: "large", Relay: scope.name, RelayCPUSeconds: 1, Load: &LoadReport{SendFrames: 3200, MBPerSec: 400, Seconds: 0.5, ReceivedSends: i64(3200), Messages: 20}},
		{Table: "large", Relay: direct.name, DriverCPUSeconds: 0.2, Load: &LoadReport{SendFrames: 3200, MBPerSec: 800, Seconds: 0.25, ReceivedSends: i64(3200), Messages: 20}},
		{Table: "large", Relay: raw.name, RawMBPerSec: 1600},
		{Table: "large", Relay: proxy.name, RawMBPerSec: 1000},
	})
	if p := tb.Rows[0].PctOfRaw; p == nil || *p != 25 {
		t.Fatalf("%% of raw = %v, want 25", p)
	}
	// The relay row's share of the direct row; the direct row's of raw TCP,
	// and no relay CPU or ratio of its own.
	if p := tb.Rows[0].PctOfDirect; p == nil || *p != 50 {
		t.Fatalf("%% of direct = %v, want 50", p)
	}
	if d := tb.Rows[1]; d.PctOfRaw == nil || *d.PctOfRaw != 50 || d.PctOfDirect != nil || d.CPUPerMBmsMedian != -1 {
		t.Fatalf("direct row %+v: want 50 %% of raw, no %% of direct, no relay CPU", d)
	}
	// The proxy row: its share of raw TCP; the others' share of it.
	if p := tb.Rows[3]; p.PctOfRaw == nil || *p.PctOfRaw != 62.5 || p.PctOfProxy != nil || p.PctOfDirect != nil {
		t.Fatalf("proxy row %+v: want 62.5 %% of raw and no %% of itself or of direct", p)
	}
	if p := tb.Rows[0].PctOfProxy; p == nil || *p != 40 {
		t.Fatalf("%% of proxy = %v, want 40", p)
	}
	if c := tb.Rows[0].CPUPerMBmsMedian; c != 5 {
		t.Fatalf("CPU per MB = %v ms, want 5", c)
	}
	// The raw row has no CPU, latency or SEND rate: JSON must still encode.
	if _, err := json.Marshal(tb); err != nil {
		t.Fatalf("the table does not encode as JSON: %v", err)
	}
	var buf bytes.Buffer
	render(&buf, &Result{Tables: []*Table{tb}})
	for _, want := range []string{
		"| msrpscope, tracing off | 400 | 400 | 25 % | 40 % | 50 % | 5.00 |",
		"| msrpload direct A→B, no relay | 800 | 800 | 50 % | 80 % | — | — | — |",
		"| raw | 1,600 | 1,600 | — | — | — | — | — |",
		"| proxy | 1,000 | 1,000 | 62 % | — | — | — | — | — | — | — | — | — | — |",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, buf.String())
		}
	}
	if want := "? of 20"; !strings.Contains(buf.String(), want) {
		t.Fatalf("messages delivered unknown: output lacks %q:\n%s", want, buf.String())
	}
}

func TestParseLoadJSON(t *testing.T) {
	out := []byte(`{"pairs": 2, "send_frames": 10, "received_sends": 9, "errors": {"timeout": 1},
"send_latency_ns": {"p50": 1, "p90": 2, "p99": 3, "max": 4}, "exit_status": 1, "future_field": [1]}
msrpload: summary line`)
	r, err := parseLoadJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pairs != 2 || r.SendFrames != 10 || *r.ReceivedSends != 9 || r.errorCount() != 1 || r.sendP99() != 3 || *r.ExitStatus != 1 || r.MessagesDelivered != nil {
		t.Fatalf("parsed %+v", r)
	}
	old, err := parseLoadJSON([]byte(`{"send_frames": 5, "latency_p99_ns": 7}`))
	if err != nil || old.sendP99() != 7 || old.ReceivedSends != nil {
		t.Fatalf("old format: %+v %v", old, err)
	}
	if _, err := parseLoadJSON([]byte("msrpload: load run failed")); err == nil {
		t.Fatal("no JSON: no error")
	}
}

func TestRawTCP(t *testing.T) {
	for _, mode := range []string{rawDirect, rawProxy, rawSplice} {
		// An odd total: the last write is short, and every byte must arrive.
		mbps, err := rawTCP(8<<20+123, 64<<10, mode)
		if err != nil || mbps <= 0 {
			t.Fatalf("rawTCP(mode %q) = %v, %v", mode, mbps, err)
		}
	}
}

// TestProxyOnceDialFails: a proxy that cannot reach the reader closes the
// writer's connection and returns the error (rawTCP then fails, never hangs).
func TestProxyOnceDialFails(t *testing.T) {
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	to := dead.Addr().String()
	dead.Close() // nothing listens there now
	done := make(chan error, 1)
	go func() { done <- proxyOnce(pl, to, 1024, rawProxy) }()
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-done; err == nil {
		t.Fatal("proxyOnce to a closed port: no error")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the writer's connection stayed open")
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"-only", "large,small,large", "-tracing", "hep,off"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.only, ",") != "small,large" || strings.Join(o.tracing, ",") != "hep,off" {
		t.Fatalf("-only %q -tracing %q: want small first (it picks Kamailio's worker count), no repeats", o.only, o.tracing)
	}
	if strings.Join(o.floor, ",") != FloorGoroutine {
		t.Fatalf("-floor by default %q, want %s", o.floor, FloorGoroutine)
	}
	if o, err := parseFlags([]string{"-floor", "none"}, &bytes.Buffer{}); err != nil || len(o.floor) != 0 {
		t.Fatalf("-floor none: %v %q, want no floor row", err, o.floor)
	}
	for _, args := range [][]string{
		{"-only", "small,huge"}, {"-tracing", "pcap"}, {"-rounds", "0"}, {"-kamailio-children", "2,x"}, {"extra"},
		{"-floor", "splice"}, {"-floor", ""},
	} {
		var stderr bytes.Buffer
		if code := Main(args, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("Main(%q) = %d, want 2; stderr %s", args, code, stderr.String())
		}
	}
}

// TestMainIntegration builds msrpscope and msrpload and runs the small
// scenario for one short round against the real relays.
func TestMainIntegration(t *testing.T) {
	scope, load := buildBinaries(t)
	base := []string{"-msrpscope", scope, "-msrpload", load, "-only", "small", "-duration", "1s", "-rounds", "1", "-json"}
	runMain := func(t *testing.T, args []string) *Result {
		var stdout, stderr bytes.Buffer
		code := Main(args, &stdout, &stderr)
		t.Logf("stderr:\n%s", stderr.String())
		var res Result
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("Main's -json output: %v\n%s", err, stdout.String())
		}
		if code != 0 || !res.OK {
			t.Fatalf("Main = %d, ok %v, failures %q", code, res.OK, res.Failures)
		}
		for _, s := range res.Tables[0].Rows {
			if s.Runs != 1 || s.Acked == 0 || s.CPUPerSendUSMedian <= 0 || s.RSSMB <= 0 {
				t.Errorf("%s: runs %d acked %d CPU/SEND %v RSS %v: want one run with SENDs, CPU and memory measured", s.Relay, s.Runs, s.Acked, s.CPUPerSendUSMedian, s.RSSMB)
			}
			if (s.Kind == "msrpscope" || s.Kind == kindFloor) && s.Delivered != s.Acked {
				t.Errorf("%s delivered %d of %d", s.Relay, s.Delivered, s.Acked)
			}
			if strings.Contains(s.Relay, "HEP") && (s.HEPSent == 0 || s.HEPReceived == 0) {
				t.Errorf("%s: HEP sent %d received %d, want both counted", s.Relay, s.HEPSent, s.HEPReceived)
			}
		}
		return &res
	}
	t.Run("msrpscope", func(t *testing.T) {
		res := runMain(t, append(base, "-kamailio=false", "-floor", "goroutine,epoll"))
		if len(res.Tables) != 1 || len(res.Tables[0].Rows) != 5 {
			t.Fatalf("%d tables, first with %d rows; want one with the 3 tracing setups and 2 floors", len(res.Tables), len(res.Tables[0].Rows))
		}
		for i, mode := range []string{FloorGoroutine, FloorEpoll} {
			if f := res.Tables[0].Rows[3+i]; f.Kind != kindFloor || f.Relay != floorLabel(mode) {
				t.Fatalf("row %d: %s %q, want the %s floor", 3+i, f.Kind, f.Relay, mode)
			}
		}
		if !slices.Contains(res.Tables[0].Notes, floorNote) {
			t.Fatalf("notes %q: want the floor's", res.Tables[0].Notes)
		}
	})
	t.Run("against Kamailio", func(t *testing.T) {
		kamailio.Binary(t, kamailio.DefaultModPath) // skips with the reason when it is not installed
		res := runMain(t, append(base, "-only", "small,large", "-large-count", "1", "-tracing", "off", "-kamailio-children", "2"))
		if len(res.Tables) != 2 {
			t.Fatalf("%d tables, want small and large", len(res.Tables))
		}
		rows := res.Tables[0].Rows
		if len(rows) != 3 || rows[1].Kind != kindFloor || rows[2].Kind != "kamailio" {
			t.Fatalf("rows %+v, want msrpscope, the floor and Kamailio", rows)
		}
		if rows[0].VsKamailioCPU == nil || rows[0].VsKamailioRate == nil || rows[1].VsKamailioCPU == nil {
			t.Fatal("no msrpscope/Kamailio or floor/Kamailio ratios")
		}
		large := res.Tables[1].Rows
		if len(large) != 6 || large[1].Kind != "kamailio" || !strings.Contains(large[1].Relay, "8 KiB chunks") ||
			large[2].Kind != kindDirect || large[3].Kind != kindRaw || large[4].Kind != kindProxy || large[5].Kind != kindProxy {
			t.Fatalf("large rows %+v, want msrpscope, Kamailio at 8 KiB chunks, msrpload direct, raw TCP and the two proxies", large)
		}
		if large[0].PctOfProxy == nil || large[4].MBPerSecMedian <= 0 || large[4].PctOfRaw == nil {
			t.Fatal("no proxy baseline")
		}
		if large[0].PctOfRaw == nil || large[3].MBPerSecMedian <= 0 {
			t.Fatal("no raw TCP baseline")
		}
		if d := large[2]; d.Runs != 1 || d.MBPerSecMedian <= 0 || d.MessagesDelivered != d.Messages || d.PctOfRaw == nil ||
			large[0].PctOfDirect == nil || large[1].PctOfDirect == nil {
			t.Fatalf("direct row %+v, relay rows' %% of direct %v %v", d, large[0].PctOfDirect, large[1].PctOfDirect)
		}
	})
}

func TestLogProblems(t *testing.T) {
	log := ` 0(100) WARNING: sl [../../modules/tm/tm_load.h:145]: load_tm_api(): Cannot import load_tm function from tm module
 7(107) WARNING: msrp [msrp_netio.c:159]: msrp_relay(): TCP/TLS connection not found
 6(106) WARNING: msrp [msrp_netio.c:159]: msrp_relay(): TCP/TLS connection not found
 6(106) ERROR: <core> [core/tcp_main.c:1]: _wbufq_add(): (1 bytes): write queue full or timeout
 5(105) INFO: <core> [core/tcp_main.c:2]: something normal
`
	got := logProblems(log, 3)
	want := "2 × `WARNING: msrp [msrp_netio.c:159]: msrp_relay(): TCP/TLS connection not found`; 1 × `ERROR: <core> [core/tcp_main.c:1]: _wbufq_add(): (1 bytes): write queue full or timeout`"
	if got != want {
		t.Fatalf("logProblems =\n%s\nwant\n%s", got, want)
	}
	if got := logProblems(" 0(1) INFO: <core> fine\n", 3); got != "" {
		t.Fatalf("logProblems of a clean log = %q", got)
	}
}

func TestShortfall(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    LoadReport
		want string
	}{
		{"all delivered", LoadReport{SendFrames: 10, ReceivedSends: i64(10), Messages: 5, MessagesDelivered: i64(5)}, ""},
		{"more received than acked (in flight at the end)", LoadReport{SendFrames: 10, ReceivedSends: i64(12)}, ""},
		{"unknown counts", LoadReport{SendFrames: 10, Messages: 5}, ""},
		{"SENDs lost", LoadReport{SendFrames: 10, ReceivedSends: i64(9)}, "delivered 9 SENDs of 10 acknowledged"},
		{"message lost", LoadReport{SendFrames: 10, ReceivedSends: i64(10), Messages: 2, MessagesDelivered: i64(1)}, "delivered 1 messages of 2"},
		{"errors", LoadReport{Errors: map[string]int64{"timeout": 1}}, "msrpload errors map[timeout:1]"},
	} {
		if got := shortfall(&tc.l); got != tc.want {
			t.Errorf("%s: shortfall = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseSinkSent(t *testing.T) {
	text := `# HELP msrpscope_trace_records_sent_total Trace records a sink delivered.
# TYPE msrpscope_trace_records_sent_total counter
msrpscope_trace_records_sent_total{sink="hep",type="hep"} 1.2345e+06
msrpscope_trace_records_sent_total{sink="hep2",type="hep"} 7
msrpscope_trace_records_sent_total{sink="pcap",type="pcap"} 99
msrpscope_trace_records_dropped_total{sink="hep",type="hep"} 5
`
	n, err := parseSinkSent(strings.NewReader(text), "hep")
	if err != nil || n != 1234500 {
		t.Fatalf("parseSinkSent = %d, %v; want 1234500", n, err)
	}
	if _, err := parseSinkSent(strings.NewReader(text), "ch"); err == nil {
		t.Fatal("a sink without a sample: no error")
	}
	if _, err := parseSinkSent(strings.NewReader(`msrpscope_trace_records_sent_total{sink="hep"} x`), "hep"); err == nil {
		t.Fatal("a sample that is not a number: no error")
	}
}

// FuzzParsers feeds arbitrary text to the harness's parsers of /proc files,
// msrpload's JSON, Prometheus text and Kamailio's log: none may panic.
func FuzzParsers(f *testing.F) {
	f.Add([]byte("20306 (cat) R 20303 20303 10536 0 -1 4194304 103 0 0 0 7 5 0 0 20 0 1 0"))
	f.Add([]byte("VmHWM:\t 65536 kB\nPss: 3 kB\n"))
	f.Add([]byte(`{"send_frames": 5, "send_latency_ns": {"p99": 7}, "errors": {"x": 1}}`))
	f.Add([]byte(`msrpscope_trace_records_sent_total{sink="hep",type="hep"} 12`))
	f.Add([]byte(" 7(107) WARNING: msrp [msrp_netio.c:159]: msrp_relay(): TCP/TLS connection not found\n"))
	f.Add([]byte(") ) ( :"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if sf, err := parseStat(b); err == nil && !bytes.Contains(b, []byte(")")) {
			t.Fatalf("parseStat accepted a line without ')': %+v", sf)
		}
		_ = parseStatusKB(b, "VmRSS")
		_ = parseStatusKB(b, "Pss")
		if r, err := parseLoadJSON(b); err == nil {
			_ = r.sendP99()
			_ = r.errorCount()
			_ = shortfall(r)
		}
		_, _ = parseSinkSent(bytes.NewReader(b), "hep")
		_ = logProblems(string(b), 3)
	})
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := median(nil); got == got {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}
