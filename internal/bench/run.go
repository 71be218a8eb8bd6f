package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/proc"
)

// Result is the whole outcome of a bench run (-json prints it).
type Result struct {
	Started  time.Time `json:"started"`
	Command  string    `json:"command"`
	Settings Settings  `json:"settings"`
	Tables   []*Table  `json:"tables"`
	// Sustained are the sustained scenario's tables (one per pair count).
	Sustained []*SustainedTable `json:"sustained,omitempty"`
	Runs      []*Run            `json:"runs"`
	Notes     []string          `json:"notes"`
	// OK is false when a process failed or msrpscope delivered less than
	// it acknowledged in some run.
	OK       bool     `json:"ok"`
	Failures []string `json:"failures,omitempty"`
}

// Settings are the parameters every table shares.
type Settings struct {
	Rounds            int    `json:"rounds"`
	Duration          string `json:"duration"`
	ScopeLimits       string `json:"msrpscope_limits"`
	KamailioTuning    string `json:"kamailio_tuning,omitempty"`
	KamailioChildren  int    `json:"kamailio_children,omitempty"` // chosen for pairs, chunks, large
	KamailioChildNote string `json:"kamailio_children_note,omitempty"`
	SustainedRounds   int    `json:"sustained_rounds,omitempty"`
}

// Run is one msrpload run against one relay (or one raw TCP measurement).
type Run struct {
	Table string `json:"table"`
	Relay string `json:"relay"`
	Round int    `json:"round"`
	// Load is msrpload's report; nil for the raw TCP rows.
	Load *LoadReport `json:"load,omitempty"`
	// MsrploadExit is the driver's exit status.
	MsrploadExit int `json:"msrpload_exit"`
	// DriverCPUSeconds is msrpload's user+system time (wait4).
	DriverCPUSeconds float64 `json:"driver_cpu_seconds"`
	// RelayCPUSeconds is the relay's utime+stime (all its processes)
	// between just before msrpload started and just after it exited.
	RelayCPUSeconds float64 `json:"relay_cpu_seconds"`
	// SetupCPUSeconds (pairs scenario) is the relay's CPU for the same
	// pairs connecting, AUTHing, sending one message each and closing, in
	// a run just before; RelayCPUSeconds already has it subtracted, and
	// GrossCPUSeconds is the load run's CPU before the subtraction.
	SetupCPUSeconds float64 `json:"setup_cpu_seconds,omitempty"`
	GrossCPUSeconds float64 `json:"gross_cpu_seconds,omitempty"`
	Mem             memInfo `json:"relay_mem"`
	// HEPSent is the hep sink's records sent during the run (msrpscope's
	// metrics), HEPReceived the datagrams the harness's receiver read.
	HEPSent     int64   `json:"hep_sent,omitempty"`
	HEPReceived int64   `json:"hep_received,omitempty"`
	RawMBPerSec float64 `json:"raw_mb_per_sec,omitempty"`
	// OfferedPerSec and Steady: the sustained scenario's equal-rate runs
	// (RelayCPUSeconds is then the steady-state window's).
	OfferedPerSec float64 `json:"offered_per_sec,omitempty"`
	Steady        *Steady `json:"steady,omitempty"`
	Err           string  `json:"error,omitempty"`
}

// target is a running relay the harness measures.
type target struct {
	name     string
	kind     string // "msrpscope", "kamailio" or "raw"
	children int
	uri      string
	user     string
	password string
	pid      int
	tree     bool // CPU and memory summed over the pid's descendants
	scope    *scopeProc
	kam      *kamailio.Instance
	floor    *proc.Proc // the floor forwarder (kindFloor)
	hep      *udpCounter
	dead     error
}

// loadArgs are msrpload's flags that point it at t: the relay and its
// user, or for the floor -direct through the forwarder.
func (t *target) loadArgs() []string {
	if t.kind == kindFloor {
		return []string{"-direct", "-via", t.uri}
	}
	return []string{"-relay", t.uri, "-user", t.user, "-password", t.password}
}

// mustDeliver: a row that fails the run when it delivers less than it
// acknowledged (msrpscope and the floor; Kamailio's losses are measured).
func (t *target) mustDeliver() bool { return t.kind == "msrpscope" || t.kind == kindFloor }

func (t *target) alive() error {
	switch {
	case t.scope != nil:
		return t.scope.alive()
	case t.kam != nil:
		select {
		case <-t.kam.Exited():
			return fmt.Errorf("%s exited; log:\n%s", t.name, t.kam.LogTail(20))
		default:
		}
	case t.floor != nil:
		if t.floor.Done() {
			return fmt.Errorf("%s exited: %s", t.name, t.floor.Cmd.ProcessState)
		}
	}
	return nil
}

func (t *target) stop() {
	if t.scope != nil {
		t.scope.stop()
	}
	if t.kam != nil {
		t.kam.Stop()
	}
	if t.floor != nil {
		t.floor.Stop(5 * time.Second)
	}
	if t.hep != nil {
		t.hep.close()
	}
}

// pids returns the processes whose CPU time counts as the relay's.
func (t *target) pids() ([]int, error) {
	if !t.tree {
		return []int{t.pid}, nil
	}
	return processTree(t.pid)
}

// row is one relay configuration of a table, run once per round.
type row struct {
	target *target
	label  string
	args   []string // msrpload flags besides -relay, -user, -password
	note   string
	raw    *rawSpec
	// setup: msrpload flags of a run measured just before the load run
	// whose relay CPU is subtracted from the load run's (the pairs'
	// connects and AUTHs); nil: none.
	setup []string
}

// rawSpec is the raw TCP baseline's parameters.
type rawSpec struct {
	bytes int64
	chunk int
	mode  string // rawDirect, rawProxy or rawSplice
}

// Kinds of the baseline rows of the large table (no relay, no msrpload).
const (
	kindRaw   = "raw"   // raw loopback TCP
	kindProxy = "proxy" // raw TCP through a minimal copying proxy
)

// isBaseline reports whether kind is a raw TCP row, with or without proxy.
func isBaseline(kind string) bool { return kind == kindRaw || kind == kindProxy }

// table is one scenario's table being measured.
type tableSpec struct {
	name, title string
	unit        string // "SEND" or "MB"
	rows        []*row
	notes       []string
}

type runner struct {
	o         *options
	msrpload  string
	msrpscope string
	dir       string
	log       io.Writer
	res       *Result
}

func run(ctx context.Context, o *options, log io.Writer) (*Result, error) {
	msrpload, msrpscope, err := binaries(o)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "msrpload-bench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		fmt.Fprintf(log, "bench: keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &runner{o: o, msrpload: msrpload, msrpscope: msrpscope, dir: dir, log: log, res: &Result{
		Started: time.Now().UTC(),
		OK:      true,
		Settings: Settings{
			Rounds:          o.rounds,
			SustainedRounds: o.sustain.rounds,
			Duration:        o.duration.String(),
			ScopeLimits: fmt.Sprintf("relay.limits.max_sessions_per_user: %d, relay.limits.max_connections_per_ip: %d (defaults 64 and 256; raised so 2,000 pairs fit)",
				scopeMaxSessionsPerUser, scopeMaxConnectionsPerIP),
		},
	}}
	if o.kamailio {
		if _, err := kamailio.LookBinary(kamailio.DefaultModPath, "msrp.so"); err != nil {
			o.kamailio = false
			r.note("Kamailio not run: %v", err)
		} else {
			r.res.Settings.KamailioTuning = fmt.Sprintf("internal/kamailio's cmap config with %s, -m %d", oneLine(kamailioTuning()), kamailioShmMB)
		}
	}
	r.res.Settings.KamailioChildren = o.kamChildren[len(o.kamChildren)-1]
	for _, sc := range o.only {
		if err := ctx.Err(); err != nil {
			return r.res, err
		}
		var err error
		switch sc {
		case ScenarioSmall:
			err = r.small(ctx)
		case ScenarioPairs:
			for _, n := range o.pairCounts {
				if err = r.pairs(ctx, n); err != nil {
					break
				}
			}
		case ScenarioSustained:
			for _, n := range o.pairCounts {
				if e := r.sustained(ctx, n); e != nil {
					if ctx.Err() != nil {
						err = e
						break
					}
					r.fail("%s %d pairs: %v", sc, n, e)
				}
			}
		case ScenarioChunks:
			err = r.chunked(ctx, ScenarioChunks, 1<<20, 0)
		case ScenarioLarge:
			err = r.chunked(ctx, ScenarioLarge, 10<<20, o.largeCount)
		}
		if err != nil {
			r.fail("%s: %v", sc, err)
			if ctx.Err() != nil {
				return r.res, err
			}
		}
	}
	return r.res, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func (r *runner) note(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	r.res.Notes = append(r.res.Notes, s)
	fmt.Fprintln(r.log, "bench:", s)
}

func (r *runner) fail(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	r.res.OK = false
	r.res.Failures = append(r.res.Failures, s)
	fmt.Fprintln(r.log, "bench: FAIL:", s)
}

// startScope starts msrpscope with one tracing setup.
func (r *runner) startScope(ctx context.Context, setup string) (*target, error) {
	t := &target{kind: "msrpscope", name: "msrpscope, " + setupName(setup), user: "demo"}
	hepAddr := ""
	if setup == TracingHEP || setup == TracingHEPGRO {
		u, err := newUDPCounter(setup == TracingHEPGRO)
		if err != nil {
			return nil, err
		}
		t.hep = u
		hepAddr = u.addr()
	}
	s, err := startScope(ctx, r.msrpscope, r.dir, setup, hepAddr)
	if err != nil {
		if t.hep != nil {
			t.hep.close()
		}
		return nil, err
	}
	t.scope, t.uri, t.password, t.pid = s, s.uri(), s.password, s.pid()
	return t, nil
}

func setupName(setup string) string {
	switch setup {
	case TracingOff:
		return "tracing off"
	case TracingDefault:
		return "embedded default (pcap)"
	case TracingHEP:
		return "every frame → HEP UDP"
	case TracingHEPGRO:
		return "every frame → HEP UDP, collector socket with UDP_GRO"
	}
	return setup
}

// startKamailio starts Kamailio with children TCP workers and the tuning.
func (r *runner) startKamailio(children int) (*target, error) {
	k, err := kamailio.Launch(kamailio.Config{
		Children:     children,
		ExtraGlobals: kamailioTuning(),
		SharedMemMB:  kamailioShmMB,
		PkgMemMB:     32,
		ParentDir:    r.dir,
	})
	if err != nil {
		return nil, fmt.Errorf("kamailio (%d children): %w", children, err)
	}
	return &target{
		kind: "kamailio", name: fmt.Sprintf("Kamailio 5.6, %d children", children), children: children,
		uri: k.URI(), user: kamailio.User, password: kamailio.Password, pid: k.Pid(), tree: true, kam: k,
	}, nil
}

// startAll starts msrpscope in every -tracing setup, the floors and
// Kamailio with each of children. The caller stops them.
func (r *runner) startAll(ctx context.Context, children []int) ([]*target, error) {
	return r.start(ctx, children, true)
}

// start is startAll, with or without the floors.
func (r *runner) start(ctx context.Context, children []int, floors bool) ([]*target, error) {
	modes := r.o.floor
	if !floors {
		modes = nil
	}
	var ts []*target
	for _, setup := range r.o.tracing {
		t, err := r.startScope(ctx, setup)
		if err != nil {
			stopAll(ts)
			return nil, err
		}
		ts = append(ts, t)
	}
	for _, mode := range modes {
		t, err := r.startFloor(ctx, mode)
		if err != nil {
			stopAll(ts)
			return nil, err
		}
		ts = append(ts, t)
	}
	if r.o.kamailio {
		for _, c := range children {
			t, err := r.startKamailio(c)
			if err != nil {
				stopAll(ts)
				return nil, err
			}
			ts = append(ts, t)
		}
	}
	return ts, nil
}

// floorNotes explains the floor rows when there are some.
func (r *runner) floorNotes() []string {
	if len(r.o.floor) == 0 {
		return nil
	}
	return []string{floorNote}
}

func stopAll(ts []*target) {
	for _, t := range ts {
		t.stop()
	}
}

func (r *runner) durationArgs() []string { return []string{"-duration", r.o.duration.String()} }

// small: 100-byte SENDs, every tracing setup and every Kamailio child count.
func (r *runner) small(ctx context.Context) error {
	ts, err := r.startAll(ctx, r.o.kamChildren)
	if err != nil {
		return err
	}
	defer stopAll(ts)
	spec := &tableSpec{
		name: ScenarioSmall, unit: "SEND",
		title: fmt.Sprintf("small SENDs: 100-byte bodies, %d pairs × %d in flight, %s per run", r.o.smallPairs, r.o.smallWindow, r.o.duration),
	}
	args := append([]string{"-pairs", strconv.Itoa(r.o.smallPairs), "-window", strconv.Itoa(r.o.smallWindow), "-size", "100"}, r.durationArgs()...)
	for _, t := range ts {
		spec.rows = append(spec.rows, &row{target: t, label: t.name, args: args})
	}
	spec.notes = append(spec.notes, r.floorNotes()...)
	tb := r.measure(ctx, spec)
	// The best Kamailio child count (median delivered/s) serves the other scenarios.
	if best := tb.kamailioRef(); best != nil {
		for _, t := range ts {
			if t.name == best.Relay {
				r.res.Settings.KamailioChildren = t.children
				r.res.Settings.KamailioChildNote = fmt.Sprintf("Kamailio with %d children had the best median delivered/s in the small scenario; the other scenarios use it", t.children)
			}
		}
	}
	return ctx.Err()
}

// pairsWindow is the SENDs in flight per pair with n pairs: 16 for a few
// pairs, 4 for many (the pairs and sustained scenarios).
func pairsWindow(n int) int {
	if n <= 10 {
		return 16
	}
	return 4
}

// pairs: n pairs, relay CPU per SEND.
func (r *runner) pairs(ctx context.Context, n int) error {
	ts, err := r.startAll(ctx, []int{r.res.Settings.KamailioChildren})
	if err != nil {
		return err
	}
	defer stopAll(ts)
	window := pairsWindow(n)
	spec := &tableSpec{
		name: fmt.Sprintf("%s-%d", ScenarioPairs, n), unit: "SEND",
		title: fmt.Sprintf("%d pairs (%d connections) × %d in flight, 100-byte SENDs, %s per run", n, 2*n, window, r.o.duration),
	}
	args := append([]string{"-pairs", strconv.Itoa(n), "-window", strconv.Itoa(window), "-size", "100"}, r.durationArgs()...)
	setup := []string{"-pairs", strconv.Itoa(n), "-window", "1", "-size", "100", "-count", "1"}
	for _, t := range ts {
		spec.rows = append(spec.rows, &row{target: t, label: t.name, args: args, setup: setup})
	}
	spec.notes = append(spec.notes, fmt.Sprintf("relay CPU per SEND is net of set-up: before each run, msrpload with the same %d pairs sending one message each (connect, AUTH, close) is measured alone, and its relay CPU is subtracted from the run's (gross and set-up CPU are in -json)", n))
	spec.notes = append(spec.notes, r.floorNotes()...)
	r.measure(ctx, spec)
	return ctx.Err()
}

// chunked: messages of size in 64 KiB chunks; count 0 runs for -duration.
// The large scenario (count > 0) adds the raw TCP baseline.
func (r *runner) chunked(ctx context.Context, name string, size, count int) error {
	// No floor here: large has the raw TCP proxies.
	ts, err := r.start(ctx, []int{r.res.Settings.KamailioChildren}, false)
	if err != nil {
		return err
	}
	defer stopAll(ts)
	const chunk = 64 << 10
	bound := r.durationArgs()
	what := r.o.duration.String() + " per run"
	if count > 0 {
		bound = []string{"-count", strconv.Itoa(count)}
		what = fmt.Sprintf("%d messages (%d MB) per run", count, count*size>>20)
	}
	spec := &tableSpec{
		name: name, unit: "MB",
		title: fmt.Sprintf("%s: %d MB messages in 64 KiB chunks, 1 pair × 8 chunks in flight, %s", name, size>>20, what),
	}
	base := []string{"-pairs", "1", "-window", "8", "-size", strconv.Itoa(size)}
	for _, t := range ts {
		rw := &row{target: t, label: t.name}
		c := chunk
		if t.kind == "kamailio" {
			if r.o.kamChunk == 0 {
				spec.notes = append(spec.notes, t.name+": cannot: frames above ~16 KB close the connection")
				continue
			}
			c = r.o.kamChunk
			rw.label = fmt.Sprintf("%s, %d KiB chunks", t.name, c>>10)
			rw.note = "cannot relay 64 KiB chunks: frames above ~16 KB close the connection; run at " + strconv.Itoa(c>>10) + " KiB chunks"
		}
		rw.args = append(append(append([]string(nil), base...), "-chunk", strconv.Itoa(c)), bound...)
		spec.rows = append(spec.rows, rw)
	}
	if count > 0 {
		spec.rows = append(spec.rows, &row{
			target: &target{kind: kindDirect, name: directLabel},
			label:  directLabel,
			args:   append(append(append([]string(nil), base...), "-chunk", strconv.Itoa(chunk)), bound...),
		})
		total := int64(count) * int64(size)
		for _, b := range []struct{ kind, label, mode string }{
			{kindRaw, rawLabel, rawDirect},
			{kindProxy, proxyLabel, rawProxy},
			{kindProxy, spliceLabel, rawSplice},
		} {
			spec.rows = append(spec.rows, &row{
				target: &target{kind: b.kind, name: b.label}, label: b.label,
				raw: &rawSpec{bytes: total, chunk: chunk, mode: b.mode},
			})
		}
		spec.notes = append(spec.notes,
			directLabel+": msrpload -direct, the same messages, chunks and window with no relay (B listens, A connects to it): what the driver alone reaches; \"% of direct\" is a relay row's share of it",
			"raw loopback TCP: measured in the harness's own process, a writer and a reader goroutine on one 127.0.0.1 connection, the same bytes",
			"raw TCP through a minimal copying proxy: the same, with a proxy goroutine between writer and reader that accepts the writer's connection, dials the reader and copies the stream read by write through a 64 KiB buffer: two sockets, every byte read and written once by user space, as a relay must at the least; \"% of proxy\" is a row's share of it. The io.Copy row is the same proxy with io.Copy, which on Linux moves the bytes with splice(2) and never copies them into user space (a relay that parses MSRP cannot)")
	}
	r.measure(ctx, spec)
	return ctx.Err()
}

// measure runs every row once per round, in order on odd rounds and in
// reverse on even ones, and adds the table.
func (r *runner) measure(ctx context.Context, spec *tableSpec) *Table {
	var runs []*Run
	for round := 1; round <= r.o.rounds; round++ {
		order := slices.Clone(spec.rows)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, rw := range order {
			if ctx.Err() != nil {
				break
			}
			run := r.runOne(ctx, spec.name, round, rw)
			runs = append(runs, run)
			r.res.Runs = append(r.res.Runs, run)
		}
	}
	tb := summarize(spec, runs)
	for _, rw := range spec.rows {
		if k := rw.target.kam; k != nil {
			if sum := logProblems(k.Log(), 3); sum != "" {
				tb.Notes = append(tb.Notes, rw.label+" log, over all rounds: "+sum)
			}
		}
	}
	r.res.Tables = append(r.res.Tables, tb)
	return tb
}

func (r *runner) runOne(ctx context.Context, table string, round int, rw *row) *Run {
	t := rw.target
	run := &Run{Table: table, Relay: rw.label, Round: round}
	defer func() { fmt.Fprintln(r.log, "bench:", progressLine(run)) }()
	if rw.raw != nil {
		mbps, err := rawTCP(rw.raw.bytes, rw.raw.chunk, rw.raw.mode)
		if err != nil {
			run.Err = err.Error()
			r.fail("%s round %d: %v", rw.label, round, err)
		}
		run.RawMBPerSec = mbps
		return run
	}
	if t.kind == kindDirect {
		return r.runDirect(ctx, run, rw)
	}
	if t.dead != nil {
		run.Err = "relay not running: " + t.dead.Error()
		return run
	}
	if rw.setup != nil {
		cpu, err := r.relayCPU(ctx, t, rw.setup)
		if err != nil {
			run.Err = "set-up run: " + err.Error()
			r.fail("%s round %d: set-up run: %v", rw.label, round, err)
			return run
		}
		run.SetupCPUSeconds = cpu
	}
	pids, err := t.pids()
	if err != nil {
		return r.relayDied(run, t, err)
	}
	before, err := cpuTicks(pids)
	if err != nil {
		return r.relayDied(run, t, err)
	}
	var hepSent0, hepRecv0 int64
	if t.hep != nil {
		hepRecv0 = t.hep.packets.Load()
		if hepSent0, err = hepSent(ctx, t.scope.admin); err != nil {
			r.note("%s: %v", t.name, err)
		}
	}
	args := append(t.loadArgs(), rw.args...)
	lr, lerr := runLoad(ctx, r.msrpload, args)
	// The relay's CPU right after the driver exits; the process list
	// again, in case Kamailio forked meanwhile.
	if p2, err := t.pids(); err == nil {
		pids = p2
	}
	after, cerr := cpuTicks(pids)
	if lr != nil {
		run.MsrploadExit = lr.exitCode
		run.DriverCPUSeconds = lr.cpu.Seconds()
		run.Load = lr.report
	}
	if cerr == nil {
		run.RelayCPUSeconds = float64(after-before) / clkTck
		if rw.setup != nil {
			run.GrossCPUSeconds = run.RelayCPUSeconds
			run.RelayCPUSeconds = max(0, run.RelayCPUSeconds-run.SetupCPUSeconds)
		}
	}
	if m, err := readMem(pids); err == nil {
		run.Mem = m
	}
	if t.hep != nil {
		run.HEPReceived = t.hep.packets.Load() - hepRecv0
		if s, err := hepSent(ctx, t.scope.admin); err == nil {
			run.HEPSent = s - hepSent0
		}
	}
	if err := t.alive(); err != nil {
		return r.relayDied(run, t, err)
	}
	if lerr != nil {
		run.Err = lerr.Error()
		r.fail("%s round %d: %v", rw.label, round, lerr)
		return run
	}
	if t.mustDeliver() {
		if why := shortfall(run.Load); why != "" {
			r.fail("%s round %d: %s", rw.label, round, why)
		}
	}
	return run
}

// kindDirect is the row of msrpload -direct: A straight to B, no relay.
const (
	kindDirect  = "direct"
	directLabel = "msrpload direct A→B, no relay"
	rawLabel    = "raw loopback TCP, one stream, 64 KiB writes"
	proxyLabel  = "raw TCP through a minimal copying proxy (read/write, 64 KiB buffer)"
	spliceLabel = "raw TCP through a minimal proxy using io.Copy (splice, no user-space copy)"
)

// runDirect runs msrpload -direct: no relay, so no relay CPU or memory;
// like a msrpscope run it fails on any loss or msrpload error.
func (r *runner) runDirect(ctx context.Context, run *Run, rw *row) *Run {
	lr, err := runLoad(ctx, r.msrpload, append([]string{"-direct"}, rw.args...))
	if lr != nil {
		run.MsrploadExit = lr.exitCode
		run.DriverCPUSeconds = lr.cpu.Seconds()
		run.Load = lr.report
	}
	if err != nil {
		run.Err = err.Error()
		r.fail("%s round %d: %v", rw.label, run.Round, err)
		return run
	}
	if why := shortfall(run.Load); why != "" {
		r.fail("%s round %d: %s", rw.label, run.Round, why)
	}
	return run
}

// shortfall says what a msrpscope run lost or got wrong, or "": fewer
// SENDs delivered than acknowledged, fewer whole messages delivered (with
// the right hash, when msrpload reports it) than sent, or any msrpload
// error.
func shortfall(l *LoadReport) string {
	var why []string
	if l.ReceivedSends != nil && *l.ReceivedSends < l.SendFrames {
		why = append(why, fmt.Sprintf("delivered %d SENDs of %d acknowledged", *l.ReceivedSends, l.SendFrames))
	}
	if l.MessagesDelivered != nil && *l.MessagesDelivered < l.Messages {
		why = append(why, fmt.Sprintf("delivered %d messages of %d", *l.MessagesDelivered, l.Messages))
	}
	if n := l.errorCount(); n > 0 {
		why = append(why, fmt.Sprintf("msrpload errors %v", l.Errors))
	}
	return strings.Join(why, "; ")
}

// relayCPU runs msrpload with flags against t and returns the relay's
// CPU seconds meanwhile.
func (r *runner) relayCPU(ctx context.Context, t *target, flags []string) (float64, error) {
	pids, err := t.pids()
	if err != nil {
		return 0, err
	}
	before, err := cpuTicks(pids)
	if err != nil {
		return 0, err
	}
	args := append(t.loadArgs(), flags...)
	if _, err := runLoad(ctx, r.msrpload, args); err != nil {
		return 0, err
	}
	if p2, err := t.pids(); err == nil {
		pids = p2
	}
	after, err := cpuTicks(pids)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / clkTck, nil
}

func (r *runner) relayDied(run *Run, t *target, err error) *Run {
	t.dead = err
	run.Err = err.Error()
	r.fail("%s: %v", t.name, err)
	return run
}

// logProblems counts Kamailio's WARNING, ERROR and CRITICAL log lines by
// message (the process prefix cut) and returns the n most frequent, or "".
func logProblems(log string, n int) string {
	counts := map[string]int{}
	for line := range strings.Lines(log) {
		i := strings.Index(line, ": ")
		if i < 0 {
			continue
		}
		lvl := strings.TrimSpace(line[strings.LastIndexByte(line[:i], ')')+1 : i])
		if lvl != "WARNING" && lvl != "ERROR" && lvl != "CRITICAL" {
			continue
		}
		msg := strings.TrimSpace(line[i+2:])
		if strings.Contains(msg, "load_tm_api") || strings.Contains(msg, "TLS is mandatory") {
			continue // start-up notices of the config, not of the load
		}
		counts[lvl+": "+msg]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := counts[b] - counts[a]; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys[:min(n, len(keys))] {
		parts = append(parts, fmt.Sprintf("%s × `%s`", group(strconv.Itoa(counts[k])), k))
	}
	return strings.Join(parts, "; ")
}

func progressLine(run *Run) string {
	s := fmt.Sprintf("%s round %d: %s", run.Table, run.Round, run.Relay)
	switch {
	case run.Err != "":
		return s + ": " + run.Err
	case run.Load == nil:
		return fmt.Sprintf("%s: %.0f MB/s", s, run.RawMBPerSec)
	}
	l := run.Load
	s += fmt.Sprintf(": %.0f SEND/s, %.1f MB/s", l.SendFramesPerSec, l.MBPerSec)
	if run.Relay != directLabel {
		s += fmt.Sprintf(", relay CPU %.2f s", run.RelayCPUSeconds)
	}
	if l.ReceivedSends != nil {
		s += fmt.Sprintf(", delivered %d of %d acknowledged", *l.ReceivedSends, l.SendFrames)
	}
	if n := l.errorCount(); n > 0 {
		s += fmt.Sprintf(", errors %v", l.Errors)
	}
	return s
}
