// Package bench is `msrpload bench`: msrpscope and Kamailio 5.6 started on
// loopback, driven by msrpload processes, compared in tables (BENCHMARKS.md).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Scenario names for -only.
const (
	ScenarioSmall  = "small"
	ScenarioPairs  = "pairs"
	ScenarioChunks = "chunks"
	ScenarioLarge  = "large"
)

// options are Main's flags.
type options struct {
	msrpload, msrpscope string
	only                []string
	tracing             []string
	floor               []string // floor forwarder modes (rows); none: empty
	rounds              int
	duration            time.Duration
	kamailio            bool
	kamChildren         []int
	kamChunk            int
	pairCounts          []int
	smallPairs          int
	smallWindow         int
	largeCount          int
	asJSON              bool
	keep                bool
	from                string
	save                string
	sustain             sustainOpts
}

// Main runs the bench mode with args (the flags after "msrpload bench")
// and returns the exit status: 0 when every run completed and msrpscope
// delivered everything it acknowledged, 1 otherwise, 2 for bad flags.
func Main(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "msrpload bench:", err)
		return 2
	}
	if o.from != "" {
		return renderSaved(o.from, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o, stderr)
	if res != nil {
		res.Command = strings.TrimSpace("msrpload bench " + strings.Join(args, " "))
	}
	if err != nil {
		fmt.Fprintln(stderr, "msrpload bench:", err)
		if res == nil {
			return 1
		}
	}
	code := 0
	if err != nil || !res.OK {
		code = 1
	}
	js, jerr := json.MarshalIndent(res, "", "  ")
	if jerr != nil {
		// Never lose the measurements to an encoding problem: the
		// tables still print.
		fmt.Fprintln(stderr, "msrpload bench: encoding JSON:", jerr)
		code = 1
	}
	if o.save != "" && jerr == nil {
		if err := os.WriteFile(o.save, append(js, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "msrpload bench: -save:", err)
			code = 1
		}
	}
	if o.asJSON && jerr == nil {
		if _, err := stdout.Write(append(js, '\n')); err != nil {
			return 1
		}
		return code
	}
	render(stdout, res)
	return code
}

const usage = `usage: msrpload bench [flags]

Starts msrpscope (tracing off, the embedded default, every frame to HEP over
UDP) and Kamailio 5.6 on 127.0.0.1, runs msrpload against each in turn,
round by round, and prints per relay: SEND/s or MB/s, the relay's CPU per
SEND (all its processes), delivered/acknowledged, RSS, and msrpscope/Kamailio
ratios from the same run. Scenarios: small (100-byte SENDs), pairs (10, 200
and 2,000 pairs), sustained (the same pair counts with every relay at one
offered rate, Kamailio's highest sustained one, relay CPU per SEND over a
steady-state window, and each relay's highest sustained rate), chunks (1 MB
messages in 64 KiB chunks), large (10 MB messages in 64 KiB chunks, against
msrpload -direct, A to B with no relay, raw loopback TCP and raw TCP through
a minimal copying proxy). The small, pairs and sustained tables have a floor
row: msrpload forward, a forwarder that reads and writes every frame and
does nothing else, driven with the same frames (msrpload -direct -via).

`

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("msrpload bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	o := &options{}
	fs.StringVar(&o.msrpload, "msrpload", "", "msrpload binary to drive the load with (default: this program)")
	fs.StringVar(&o.msrpscope, "msrpscope", "", "msrpscope binary (default: msrpscope next to the msrpload binary, else $PATH)")
	only := fs.String("only", "small,pairs,chunks,large", "scenarios to run, comma-separated: small, pairs, sustained, chunks, large (sustained is not in the default: about 6 minutes on 2 cores)")
	tracing := fs.String("tracing", "off,default,hep", "msrpscope tracing setups: off, default (embedded: everything to pcap), hep (everything to HEP over UDP), hep-gro (the same, the harness's UDP socket with UDP_GRO: a second figure)")
	floor := fs.String("floor", FloorGoroutine, "floor rows in the small, pairs and sustained scenarios: msrpload forward, a minimal forwarder with no parsing, in these modes: goroutine (Go's netpoller, as msrpscope), epoll (event loops of its own); none: no floor row")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every relay once, in alternating order")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "load phase of each duration-bound run (CPU time is counted in 10 ms ticks)")
	fs.BoolVar(&o.kamailio, "kamailio", true, "run Kamailio 5.6 too (kamailio and kamailio-extra-modules installed)")
	children := fs.String("kamailio-children", "2,4", "Kamailio TCP worker counts to try in the small scenario; the best (median delivered/s) is used for the others (without small: the last)")
	fs.IntVar(&o.kamChunk, "kamailio-chunk", 8192, "chunk size Kamailio runs the chunks and large scenarios at (it cannot relay 64 KiB chunks); 0: do not run it there")
	pairs := fs.String("pair-counts", "10,200,2000", "pair counts of the pairs scenario")
	fs.IntVar(&o.smallPairs, "small-pairs", 2, "pairs of the small scenario")
	fs.IntVar(&o.smallWindow, "small-window", 64, "SENDs in flight per pair in the small scenario")
	fs.IntVar(&o.largeCount, "large-count", 20, "10 MB messages per large run")
	fs.BoolVar(&o.asJSON, "json", false, "print the whole result as JSON instead of tables")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, logs, pcap files)")
	fs.DurationVar(&o.sustain.probe, "sustained-probe", 6*time.Second, "sustained: sending time of each step of the search for a relay's highest sustained rate (Kamailio's losses grow with time: as long as -sustained-duration)")
	fs.DurationVar(&o.sustain.duration, "sustained-duration", 6*time.Second, "sustained: sending time of each equal-rate run")
	fs.DurationVar(&o.sustain.warmup, "sustained-warmup", 2*time.Second, "sustained: start of the steady-state window after the sending started (set-up is never in it)")
	fs.IntVar(&o.sustain.steps, "sustained-steps", 4, "sustained: fixed-rate steps of each bisection")
	fs.IntVar(&o.sustain.rounds, "sustained-rounds", 1, "sustained: equal-rate runs per relay, in alternating order")
	fs.Float64Var(&o.sustain.rate, "sustained-rate", 0, "sustained: the offered rate in SEND/s for every pair count; 0: Kamailio's highest sustained fixed rate (without Kamailio: half the lowest relay's)")
	fs.StringVar(&o.save, "save", "", "also write the whole result as JSON to `file`")
	fs.StringVar(&o.from, "from", "", "print the tables of a saved -json result `file` instead of running")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	scenarios := []string{ScenarioSmall, ScenarioPairs, ScenarioSustained, ScenarioChunks, ScenarioLarge}
	if o.only, err = splitList(*only, scenarios); err != nil {
		return nil, fmt.Errorf("-only: %w", err)
	}
	// Always in this order: small picks Kamailio's worker count for the rest.
	slices.SortFunc(o.only, func(a, b string) int { return slices.Index(scenarios, a) - slices.Index(scenarios, b) })
	if o.tracing, err = splitList(*tracing, []string{TracingOff, TracingDefault, TracingHEP, TracingHEPGRO}); err != nil {
		return nil, fmt.Errorf("-tracing: %w", err)
	}
	if *floor != "none" {
		if o.floor, err = splitList(*floor, []string{FloorGoroutine, FloorEpoll}); err != nil {
			return nil, fmt.Errorf("-floor: %w", err)
		}
		if slices.Contains(o.floor, FloorEpoll) && !floorEpollOK {
			return nil, errors.New("-floor epoll: Linux only")
		}
	}
	if o.kamChildren, err = splitInts(*children); err != nil {
		return nil, fmt.Errorf("-kamailio-children: %w", err)
	}
	if o.pairCounts, err = splitInts(*pairs); err != nil {
		return nil, fmt.Errorf("-pair-counts: %w", err)
	}
	if o.rounds < 1 || o.duration <= 0 || o.smallPairs < 1 || o.smallWindow < 1 || o.largeCount < 1 || o.kamChunk < 0 {
		return nil, errors.New("-rounds, -duration, -small-pairs, -small-window and -large-count must be positive")
	}
	if so := o.sustain; so.probe <= 0 || so.steps < 1 || so.rounds < 1 || so.rate < 0 || so.warmup < 0 ||
		so.duration < so.warmup+2*time.Second {
		return nil, errors.New("-sustained-probe, -sustained-steps and -sustained-rounds must be positive, -sustained-rate not negative, and -sustained-duration at least -sustained-warmup + 2s (two progress lines a second apart in the window)")
	}
	return o, nil
}

// renderSaved prints the tables of a -json result read from path.
func renderSaved(path string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "msrpload bench:", err)
		return 1
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintf(stderr, "msrpload bench: %s: %v\n", path, err)
		return 1
	}
	render(stdout, &res)
	return 0
}

func splitList(s string, allowed []string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (want %s)", f, strings.Join(allowed, ", "))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func splitInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// binaries resolves the msrpload and msrpscope paths.
func binaries(o *options) (msrpload, msrpscope string, err error) {
	msrpload = o.msrpload
	if msrpload == "" {
		if msrpload, err = os.Executable(); err != nil {
			return "", "", fmt.Errorf("finding msrpload (-msrpload): %w", err)
		}
	}
	msrpscope = o.msrpscope
	if msrpscope == "" {
		next := filepath.Join(filepath.Dir(msrpload), "msrpscope")
		if st, e := os.Stat(next); e == nil && !st.IsDir() {
			msrpscope = next
		} else if msrpscope, err = exec.LookPath("msrpscope"); err != nil {
			return "", "", fmt.Errorf("msrpscope not found next to %s nor in $PATH (-msrpscope PATH; go build -o bin/ ./cmd/msrpscope ./cmd/msrpload)", msrpload)
		}
	}
	// The relays run in their own directories: relative paths would break.
	if msrpload, err = filepath.Abs(msrpload); err != nil {
		return "", "", err
	}
	if msrpscope, err = filepath.Abs(msrpscope); err != nil {
		return "", "", err
	}
	return msrpload, msrpscope, nil
}

// kamailioTuning is what the Kamailio runs add to internal/kamailio's cmap
// config: connections for 2,000 pairs (4,000 client connections and its
// own to itself), write queues large enough not to drop under a
// pipelined load, and the open-files limit for all of them (up to the
// hard limit: an unprivileged or containerised Kamailio cannot go past it
// and refuses to start).
func kamailioTuning() string {
	files := uint64(65536)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Max < files {
		files = rl.Max
	}
	return fmt.Sprintf("tcp_max_connections=16384\ntcp_conn_wq_max=16777216\ntcp_wq_max=1073741824\nopen_files_limit=%d\n", files)
}

// kamailioShmMB is its shared memory (-m), where the write queues live.
const kamailioShmMB = 2048
