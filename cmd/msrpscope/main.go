// Command msrpscope runs the MSRP relay (RFC 4975, RFC 4976).
//
//	msrpscope [-config FILE] [-log-level LEVEL]
//	msrpscope -check-config FILE
//	msrpscope -version | -h
//
// With no configuration it relays on 127.0.0.1:2855 with one user "demo",
// whose password comes from MSRPSCOPE_DEMO_PASSWORD or is generated and
// logged once. SIGTERM or SIGINT shut it down gracefully.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/hep/hepsink"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/tracer"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "msrpscope:", err)
		os.Exit(1)
	}
}

// run is main without the process: flags, config, relay, signals.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("msrpscope", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // -h and errors are printed below
	configPath := fs.String("config", "", "YAML configuration `file` (every key has an embedded default)")
	checkPath := fs.String("check-config", "", "check the configuration `file` (listeners, certificates, users) and exit")
	logLevel := fs.String("log-level", "", "override log.level (debug, info, warn, error)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	out := stderr // what was asked for (-h, -version) goes to standard output
	if stderr == io.Writer(os.Stderr) {
		out = os.Stdout
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(out, fs)
			return nil
		}
		return fmt.Errorf("%w (msrpscope -h lists the flags)", err)
	}
	if *showVersion {
		fmt.Fprintln(out, version())
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	path := *configPath
	if *checkPath != "" {
		path = *checkPath
	}
	su, err := prepare(path, *logLevel, stderr, *checkPath == "")
	if err != nil {
		return err
	}
	if *checkPath != "" {
		fmt.Fprintf(stderr, "%s: configuration OK\n", *checkPath)
		return nil
	}
	fc, log, rc := su.fc, su.log, su.rc

	tr, err := tracer.New(ctx, fc.tracerConfig(), log)
	if err != nil {
		return err
	}
	defer func() {
		// Sinks write out what they hold; a collector that does not take it within this is given up.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tr.Close(cctx); err != nil {
			log.Warn("closing trace sinks", slog.String("error", err.Error()))
		}
		logTraceStats(log, tr.Stats())
	}()
	m, err := newMetrics(fc.Metrics)
	if err != nil {
		return err
	}
	if m != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := m.Shutdown(sctx); err != nil {
				log.Warn("metrics shutdown", slog.String("error", err.Error()))
			}
		}()
	}
	rc.Observer = relayObserver(tr, m)
	r, err := relay.New(rc)
	if err != nil {
		return err
	}
	tr.SetSessionUser(r.SessionUser) // user traces
	for i, u := range r.URIs() {
		log.Info("listening", slog.String("uri", u.String()), slog.String("addr", r.Addrs()[i].String()))
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rl := &reloader{path: path, logLevel: *logLevel, log: log, tracer: tr, relay: r, admin: fc.Admin, metrics: fc.Metrics}
	op, err := startOps(fc.Admin, m, tr, r, rl, flowsFor(fc, recentRings), log)
	if err != nil {
		// The relay's listeners are bound: a Serve that stops at once closes them.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_ = r.Serve(cctx)
		return err
	}
	op.serve()
	reloads := make(chan struct{})
	go func() { // owned by run: ends with ctx, before run returns
		defer close(reloads)
		for {
			select {
			case <-hup:
				_ = rl.reload(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	err = r.Serve(ctx)
	op.stop() // the admin API stops with the relay
	<-reloads
	st := r.Stats()
	log.Info("stopped", slog.Int64("forwarded", st.Forwarded), slog.Int64("accepted", st.Accepted),
		slog.Int64("auth_ok", st.AuthOK))
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// usage is the -h text.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `msrpscope is an MSRP relay (RFC 4975, RFC 4976) that traces its connections and frames
to HEP collectors (Homer), pcap files and ClickHouse.

Usage:
  msrpscope [-config FILE] [-log-level LEVEL]  run the relay; without a file it relays on
                                               127.0.0.1:2855 for one user, demo (password:
                                               $MSRPSCOPE_DEMO_PASSWORD, or generated and logged)
  msrpscope -check-config FILE                 check a configuration, offline, and exit
  msrpscope -version                           print the version and exit

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprint(w, `
SIGTERM or SIGINT stop it gracefully; SIGHUP reloads the configuration file.
Every configuration key: docs/CONFIG.md.
`)
}

// version describes the binary from its build information: the module
// version, the VCS revision and time when built from a checkout, the Go
// version and platform.
func version() string {
	v := "(devel)"
	var rev, at, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+modified"
				}
			}
		}
	}
	s := "msrpscope " + v
	if rev != "" {
		s += " " + rev + modified
		if at != "" {
			s += " " + at
		}
	}
	return s + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func logTraceStats(log *slog.Logger, st tracer.Stats) {
	for _, s := range st.Sinks {
		log.Info("trace sink", slog.String("sink", s.Name), slog.String("type", s.Type),
			slog.Uint64("sent", s.Sent), slog.Uint64("dropped", s.Dropped), slog.Uint64("errors", s.Errors),
			slog.String("state", s.State))
	}
}

// reloader applies the configuration file again (SIGHUP, the admin API):
// through the same validation as start-up, then to the tracer, whose rules
// and sinks change without dropping a connection or a queued record of a
// sink that stays. A configuration that does not pass changes nothing.
type reloader struct {
	path, logLevel string
	log            *slog.Logger
	tracer         *tracer.Tracer
	relay          *relay.Relay
	admin          adminSection   // as started: changes need a restart
	metrics        metricsSection //
	mu             sync.Mutex     // one reload at a time
}

// badConfigError is a reload refused because the configuration does not
// pass the start-up checks (the admin API answers 400).
type badConfigError struct{ err error }

func (e *badConfigError) Error() string { return e.err.Error() }
func (e *badConfigError) Unwrap() error { return e.err }

func (rl *reloader) reload(ctx context.Context) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	su, err := prepare(rl.path, rl.logLevel, io.Discard, false)
	if err != nil {
		err = &badConfigError{err}
	}
	if err == nil {
		if err = rl.tracer.Reload(ctx, su.fc.tracerConfig()); errors.Is(err, tracer.ErrConfig) {
			err = &badConfigError{err}
		}
	}
	var needRestart []string
	if err == nil {
		rc := su.rc
		if rc.Auth.UsersFile == "" {
			rc.Users = nil // the demo user keeps the password it was started with
		}
		needRestart, err = rl.relay.Reload(rc)
		if !reflect.DeepEqual(su.fc.Admin, rl.admin) {
			needRestart = append(needRestart, "admin")
		}
		if !reflect.DeepEqual(su.fc.Metrics, rl.metrics) {
			needRestart = append(needRestart, "metrics")
		}
	}
	if err != nil {
		rl.log.Error("reload refused: the running configuration stays", slog.String("config", rl.path), slog.String("error", err.Error()))
		return err
	}
	if len(needRestart) > 0 {
		rl.log.Warn("reload: these keys changed and need a restart", slog.String("keys", strings.Join(needRestart, ", ")))
	}
	rl.log.Info("configuration reloaded", slog.String("config", rl.path), slog.Uint64("generation", rl.tracer.Stats().Generation))
	return nil
}

// setup is a checked configuration, ready to start.
type setup struct {
	fc  *fileConfig
	log *slog.Logger
	rc  relay.Config
}

// prepare loads the configuration at path over the embedded defaults and
// checks all of it: the one validation path that both -check-config and
// start-up take, so that a configuration -check-config passes can only fail
// at start for what a check cannot see offline (a port in use). announce
// logs how the demo user may AUTH (not when only checking).
func prepare(path, logLevel string, stderr io.Writer, announce bool) (*setup, error) {
	fc, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	if logLevel != "" {
		fc.Log.Level = logLevel
	}
	log, err := newLogger(fc.Log, stderr)
	if err != nil {
		return nil, err
	}
	rc := fc.relayConfig()
	rc.Logger = log
	if rc.Auth.UsersFile == "" {
		users, pw, generated, err := demoUsers()
		if err != nil {
			return nil, err
		}
		rc.Users = users
		if announce {
			if generated {
				log.Warn("no auth.users_file: user demo may AUTH with a generated password (set MSRPSCOPE_DEMO_PASSWORD to choose it)",
					slog.String("user", "demo"), slog.String("password", pw))
			} else {
				log.Info("no auth.users_file: user demo may AUTH with the password in MSRPSCOPE_DEMO_PASSWORD", slog.String("user", "demo"))
			}
		}
	}
	if err := relay.CheckConfig(rc); err != nil {
		return nil, err
	}
	if err := tracer.CheckConfig(fc.tracerConfig()); err != nil {
		return nil, err
	}
	if err := checkOps(fc.Admin, fc.Metrics); err != nil {
		return nil, err
	}
	if !announce {
		// -check-config: warnings, not errors. At start the relay and the sinks log them.
		for _, w := range insecureWarnings(fc) {
			fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
		}
	}
	return &setup{fc: fc, log: log, rc: rc}, nil
}

// insecureWarnings names the TLS connections fc makes without verifying the
// peer (insecure_skip_verify): the relay's and those of the sinks a rule uses.
func insecureWarnings(fc *fileConfig) []string {
	var ws []string
	if fc.Relay.Outbound.InsecureSkipVerify {
		ws = append(ws, "relay.outbound.insecure_skip_verify is on: msrps next hops are not verified (tests only)")
	}
	used := map[string]bool{}
	for _, r := range fc.Tracing.Rules {
		for _, n := range r.To {
			used[n] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(fc.Sinks)) {
		b := fc.Sinks[name]
		var hc hepsink.Config
		if !used[name] || b.Type != "hep" || b.decode(&hc) != nil || !hc.Insecure() {
			continue
		}
		ws = append(ws, fmt.Sprintf("sinks.%s.insecure_skip_verify is on: the HEP collector is not verified (tests only)", name))
	}
	return ws
}

// demoUsers makes the users of a configuration without users_file: "demo"
// with MSRPSCOPE_DEMO_PASSWORD, or a random password.
func demoUsers() (*auth.Users, string, bool, error) {
	pw := os.Getenv("MSRPSCOPE_DEMO_PASSWORD")
	generated := pw == ""
	if generated {
		pw = rand.Text()[:16]
	}
	u := auth.NewUsers()
	if err := u.Add(auth.User{Name: "demo", Password: pw}); err != nil {
		return nil, "", false, err
	}
	return u, pw, generated, nil
}
