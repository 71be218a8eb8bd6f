// Command msrpload drives MSRP relays with pairs of clients: each pair
// authenticates (A along a chain of relays, B at the last one), then A SENDs
// to B as fast as the window allows or at a fixed -rate, and msrpload reports
// SEND/s, MB/s, SEND→200 and end-to-end latency, delivery (checked by hash at
// B) and errors by kind. The run is bounded (-duration, default 10s, and/or
// -count). Exit status: 0 when there was no error and every acknowledged
// message was delivered, 1 otherwise, 2 for usage errors. docs/MSRPLOAD.md.
//
//	msrpload -relay 'msrp://127.0.0.1:2855;tcp' -pairs 4 -window 64 -size 100 -duration 10s
//
// "msrpload bench" starts msrpscope and Kamailio 5.6 on loopback, runs
// msrpload against each and prints the comparison tables (internal/bench,
// BENCHMARKS.md).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/internal/bench"
	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "bench" {
		return bench.Main(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "forward" {
		return bench.ForwardMain(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("msrpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	relays := fs.String("relay", "msrp://127.0.0.1:2855;tcp", "the relay's MSRP URI (msrps:// for TLS); a comma-separated list is a chain A's SENDs cross in order, B attaches at the last")
	direct := fs.Bool("direct", false, "no relay: each A connects straight to its B, which listens on a loopback port (RFC 4975 peer to peer, no AUTH): the baseline of what msrpload alone reaches")
	via := fs.String("via", "", "with -direct: each A connects to this forwarder (msrpload forward) instead of its B, naming B's address in a first line: the bench's floor")
	addr := fs.String("addr", "", "host:port to dial for the first relay (default: from -relay)")
	insecure := fs.Bool("insecure", false, "TLS: do not verify the relay's certificate")
	caFile := fs.String("ca", "", "TLS: PEM file of CA certificates to verify the relay with")
	users := fs.String("user", "demo", "AUTH user, or a comma-separated list name[:password],... used round-robin by pairs")
	password := fs.String("password", "", "AUTH password of users without one (default: $MSRPSCOPE_DEMO_PASSWORD)")
	pairs := fs.Int("pairs", 1, "client pairs (two connections each)")
	window := fs.Int("window", 32, "outstanding SEND transactions per pair")
	size := fs.String("size", "100", "body bytes per message (suffixes KB, KiB, MB, MiB, GB, GiB)")
	chunk := fs.String("chunk", "0", "chunk size for large bodies, same suffixes (0: one chunk)")
	duration := fs.Duration("duration", 0, "how long to send (default 10s when -count is not given)")
	count := fs.Int("count", 0, "messages per pair (0: no count limit)")
	rate := fs.String("rate", "0", "messages per second in total, spread over the pairs on a fixed schedule (\"5000\" or \"5000/s\"); 0: as fast as possible")
	timeout := fs.Duration("timeout", 30*time.Second, "response timeout per SEND")
	drain := fs.Duration("drain", 5*time.Second, "after sending: how long to wait for outstanding responses and deliveries")
	asJSON := fs.Bool("json", false, "print only one JSON object on stdout (the text summary goes to stderr)")
	verbose := fs.Bool("v", false, "debug logs")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of msrpload itself to this file (go tool pprof)")
	progressJSON := fs.Bool("progress-json", false, "while sending, about once a second, write a line \"progress {JSON}\" to stderr: elapsed_ns, acked, delivered, errors (msrpload bench samples the relay's CPU at each)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "msrpload: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments %q", fs.Args())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *password == "" {
		*password = os.Getenv("MSRPSCOPE_DEMO_PASSWORD")
	}
	userList, err := parseUsers(*users, *password)
	if err != nil {
		return usage("-user: %v", err)
	}
	sz, err := parseSize(*size)
	if err != nil || sz < 1 {
		return usage("-size %q: want a positive size such as 100, 64KiB or 10MB", *size)
	}
	ck, err := parseSize(*chunk)
	if err != nil {
		return usage("-chunk %q: want a size such as 64KiB (0: one chunk)", *chunk)
	}
	rt, err := parseRate(*rate)
	if err != nil {
		return usage("-rate %q: %v", *rate, err)
	}
	if *pairs < 1 || *window < 1 || *count < 0 || *duration < 0 {
		return usage("-pairs and -window must be at least 1, -count and -duration not negative")
	}
	var chain []string
	if *direct {
		var relayFlags []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "relay", "addr", "user", "password", "ca", "insecure":
				relayFlags = append(relayFlags, "-"+f.Name)
			}
		})
		if len(relayFlags) > 0 {
			return usage("-direct has no relay: %s do not apply", strings.Join(relayFlags, ", "))
		}
		userList = nil
	} else if *via != "" {
		return usage("-via needs -direct")
	}
	if !*direct {
		chain = strings.Split(*relays, ",")
	}
	for i := range chain {
		chain[i] = strings.TrimSpace(chain[i])
		if u, err := msrp.ParseURI(chain[i]); err != nil || u.SessionID != "" {
			return usage("-relay %q: want the relay's own MSRP URI such as msrp://127.0.0.1:2855;tcp (comma-separated for a chain)", chain[i])
		}
	}
	opts := load.Options{
		Relays: chain, Addr: *addr, Users: userList, Direct: *direct, Via: *via,
		Pairs: *pairs, Window: *window, Size: int(sz), Chunk: int(ck), Rate: rt,
		Count: *count, Duration: *duration, ResponseTimeout: *timeout, Drain: *drain, Logger: logger,
	}
	for _, r := range chain {
		if strings.HasPrefix(strings.ToLower(r), "msrps://") {
			tc, err := tlsConfig(*insecure, *caFile)
			if err != nil {
				return usage("TLS: %v", err)
			}
			opts.TLS = tc
			break
		}
	}
	var prog *progressLine
	switch {
	case *progressJSON:
		opts.Progress = progressJSONWriter(stderr)
	case isTerminal(stderr):
		prog = &progressLine{w: stderr}
		opts.Progress = prog.show
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return usage("-cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return usage("-cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := load.Run(ctx, opts)
	prog.end()
	for _, h := range rep.Hints {
		fmt.Fprintln(stderr, "msrpload:", h)
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "msrpload:", runErr)
		rep.ExitStatus = 1
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintln(stderr, "msrpload: writing JSON:", err)
			return 1
		}
		if runErr == nil {
			fmt.Fprintln(stderr, rep.Summary())
		}
		return rep.ExitStatus
	}
	if runErr == nil {
		fmt.Fprintln(stdout, rep.Summary())
	}
	return rep.ExitStatus
}

func tlsConfig(insecure bool, caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // -insecure is explicit
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading -ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("no certificates in -ca file")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressPrefix starts each -progress-json line (internal/bench reads them).
const progressPrefix = "progress "

// progressJSONWriter returns the -progress-json callback: one line per
// snapshot, written whole in one Write so that log lines cannot cut it.
func progressJSONWriter(w io.Writer) func(load.Progress) {
	return func(pr load.Progress) {
		b, err := json.Marshal(struct {
			ElapsedNs int64 `json:"elapsed_ns"`
			Acked     int64 `json:"acked"`
			Delivered int64 `json:"delivered"`
			Errors    int64 `json:"errors"`
		}{int64(pr.Elapsed), pr.Acked, pr.Delivered, pr.Errors})
		if err != nil {
			return // four integers always encode
		}
		_, _ = w.Write(append(append([]byte(progressPrefix), b...), '\n'))
	}
}

// progressLine rewrites one status line on a terminal ("\r").
type progressLine struct {
	w     io.Writer
	shown bool
}

func (p *progressLine) show(pr load.Progress) {
	fmt.Fprintf(p.w, "\r%5.0fs %8.0f SEND/s  acked %d  delivered %d  errors %d  p99 %v\033[K",
		pr.Elapsed.Seconds(), pr.Rate, pr.Acked, pr.Delivered, pr.Errors, pr.SendP99.Round(time.Microsecond))
	p.shown = true
}

func (p *progressLine) end() {
	if p != nil && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
