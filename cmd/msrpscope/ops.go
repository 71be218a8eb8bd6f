package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/internal/admin"
	"github.com/msrpscope/msrpscope/internal/fanout"
	"github.com/msrpscope/msrpscope/internal/metrics"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// adminSection is the "admin" key (docs/CONFIG.md, docs/ADMIN.md).
type adminSection struct {
	Addr        string `yaml:"addr"` // "" disables the admin API
	Token       string `yaml:"token"`
	TokenFile   string `yaml:"token_file"`
	MetricsAuth bool   `yaml:"metrics_auth"`
	TLSCert     string `yaml:"tls_cert"`
	TLSKey      string `yaml:"tls_key"`
}

// metricsSection is the "metrics" key.
type metricsSection struct {
	Enabled      bool              `yaml:"enabled"`
	OTLPEndpoint string            `yaml:"otlp_endpoint"`
	OTLPInterval time.Duration     `yaml:"otlp_interval"`
	OTLPHeaders  map[string]string `yaml:"otlp_headers"`
}

func (a adminSection) config() admin.Config {
	return admin.Config{Addr: a.Addr, Token: a.Token, TokenFile: a.TokenFile, MetricsAuth: a.MetricsAuth,
		TLSCert: a.TLSCert, TLSKey: a.TLSKey}
}

func (m metricsSection) config() metrics.Config {
	return metrics.Config{OTLPEndpoint: m.OTLPEndpoint, OTLPInterval: m.OTLPInterval, OTLPHeaders: m.OTLPHeaders}
}

// checkOps checks the admin and metrics sections offline, as admin.New and
// metrics.New will at start (prepare calls it, so -check-config gives the
// same verdict): a token set twice or unreadable, a non-loopback address
// without a token, TLS files, the OTLP endpoint.
func checkOps(a adminSection, m metricsSection) error {
	if a.Addr != "" {
		host, port, err := net.SplitHostPort(a.Addr)
		if err != nil || port == "" {
			return fmt.Errorf("admin.addr %q: want host:port (127.0.0.1:8055), or empty to disable the admin API", a.Addr)
		}
		token := a.Token
		switch {
		case a.Token != "" && a.TokenFile != "":
			return errors.New("admin: set admin.token or admin.token_file, not both")
		case a.TokenFile != "":
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("admin: token file: %w", err)
			}
			if token = strings.TrimSpace(string(b)); token == "" {
				return fmt.Errorf("admin: token file %s is empty", a.TokenFile)
			}
		}
		// The same rule as admin.New's: a loopback IP or "localhost".
		ip, perr := netip.ParseAddr(host)
		loop := strings.EqualFold(host, "localhost") || perr == nil && ip.Unmap().IsLoopback()
		if token == "" && !loop {
			return fmt.Errorf("admin: %s is not a loopback address: set admin.token or admin.token_file, or listen on 127.0.0.1", a.Addr)
		}
		if a.TLSCert != "" || a.TLSKey != "" {
			if a.TLSCert == "" || a.TLSKey == "" {
				return errors.New("admin: TLS needs both admin.tls_cert and admin.tls_key")
			}
			if _, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey); err != nil {
				return fmt.Errorf("admin: TLS certificate: %w", err)
			}
		}
	}
	if m.Enabled && m.OTLPEndpoint != "" {
		if u, err := url.Parse(m.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("metrics.otlp_endpoint %q: want http://host:port[/path] or https://...", m.OTLPEndpoint)
		}
	}
	if m.OTLPInterval < 0 {
		return fmt.Errorf("metrics.otlp_interval %s: must not be negative", m.OTLPInterval)
	}
	return nil
}

// newMetrics starts the metrics, or returns nil when metrics.enabled is false.
func newMetrics(m metricsSection) (*metrics.Metrics, error) {
	if !m.Enabled {
		return nil, nil
	}
	return metrics.New(m.config())
}

// relayObserver is what the relay reports to: the tracer alone, or the
// tracer and the metrics through a fan-out, whose Wire() tells the relay to
// copy wire bytes only while the tracer (or a dynamic trace) is on.
func relayObserver(tr *tracer.Tracer, m *metrics.Metrics) event.Observer {
	if m == nil {
		return tr
	}
	return fanout.New(tr, m.Observer())
}

// ops is the admin server of one run.
type ops struct {
	srv     *admin.Server // nil: the admin API is off
	serving atomic.Bool   // the relay serves (its listeners are up)
	done    chan error
	log     *slog.Logger
}

// startOps registers the metrics snapshot and binds the admin API (when
// admin.addr is set) over the relay, the tracer, the reloader and the web
// view's flow source; it serves
// from serve on.
func startOps(a adminSection, m *metrics.Metrics, tr *tracer.Tracer, r *relay.Relay, rl *reloader, flows admin.Flows, log *slog.Logger) (*ops, error) {
	o := &ops{log: log}
	if m != nil {
		if err := m.RegisterSnapshot(func() metrics.Snapshot { return snapshot(r, tr) }); err != nil {
			return nil, err
		}
	}
	if a.Addr == "" {
		return o, nil
	}
	deps := admin.Deps{
		Tracing:   tracingAdapter{tr},
		Traces:    tracesAdapter{tr},
		Relay:     relayAdapter{r},
		Reloader:  reloaderAdapter{rl},
		Readiness: readiness{o: o, tr: tr},
		Flows:     flows,
		Log:       log,
	}
	if m != nil {
		deps.Metrics = m.Handler()
	}
	srv, err := admin.New(a.config(), deps)
	if err != nil {
		return nil, err
	}
	o.srv = srv
	log.Info("admin listening", slog.String("addr", srv.Addr().String()), slog.Bool("token", a.Token != "" || a.TokenFile != ""),
		slog.Bool("tls", a.TLSCert != ""))
	return o, nil
}

// serve runs the admin server until stop.
func (o *ops) serve() {
	o.serving.Store(true)
	if o.srv == nil {
		return
	}
	o.done = make(chan error, 1)
	go func() { o.done <- o.srv.Serve(context.Background()) }() // owned by o: ends in stop
}

// stop ends the admin server, letting running requests finish (5s).
func (o *ops) stop() {
	o.serving.Store(false)
	if o.srv == nil || o.done == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil {
		o.log.Warn("admin shutdown", slog.String("error", err.Error()))
	}
	if err := <-o.done; err != nil {
		o.log.Warn("admin server", slog.String("error", err.Error()))
	}
}

// snapshot is what the metrics report at each collection.
func snapshot(r *relay.Relay, tr *tracer.Tracer) metrics.Snapshot {
	st := r.Stats()
	s := metrics.Snapshot{Sessions: st.Sessions, Relay: metrics.RelayCounters{
		Accepted: st.Accepted, Refused: st.Refused, Dialled: st.Dialled, DialFailed: st.DialFailed,
		Forwarded: st.Forwarded, ForwardFailed: st.ForwardFailed, Rejected: st.Rejected, BadFrames: st.BadFrames,
		AuthOK: st.AuthOK, AuthFailed: st.AuthFailed, ReportsSent: st.ReportsSent, ReportsDropped: st.ReportsDropped,
		UnmatchedResponses: st.UnmatchedResponses, TxnTimeouts: st.TxnTimeouts, QueueFull: st.QueueFull,
	}}
	for _, k := range tr.Stats().Sinks {
		s.Sinks = append(s.Sinks, metrics.SinkStats{Name: k.Name, Type: k.Type, Sent: int64(k.Sent), Dropped: int64(k.Dropped),
			Errors: int64(k.Errors), Spooled: int64(k.Spooled), Queued: int64(k.Queued), SpoolBytes: int64(k.SpoolBytes),
			Degraded: k.State != sink.StateOK})
	}
	return s
}

// tracingAdapter is the tracer as admin.Tracing: Enabled is the global
// switch alone (the tracer's own Enabled is also true while a dynamic
// trace runs).
type tracingAdapter struct{ tr *tracer.Tracer }

func (a tracingAdapter) Enabled() bool      { return a.tr.Stats().Enabled }
func (a tracingAdapter) SetEnabled(on bool) { a.tr.SetEnabled(on) }

func (a tracingAdapter) Rules() []admin.Rule {
	var out []admin.Rule
	for _, r := range a.tr.Stats().Rules {
		out = append(out, admin.Rule{Name: r.Name, Enabled: r.Enabled, Matched: r.Matched})
	}
	return out
}

func (a tracingAdapter) SetRuleEnabled(name string, on bool) error {
	err := a.tr.SetRuleEnabled(name, on)
	if errors.Is(err, tracer.ErrNoRule) {
		return admin.ErrNotFound // the route names the rule
	}
	return err
}

func (a tracingAdapter) Sinks() []admin.Sink {
	var out []admin.Sink
	for _, s := range a.tr.Stats().Sinks {
		k := admin.Sink{Name: s.Name, Type: s.Type, State: s.State, LastError: s.LastError, Sent: s.Sent, Dropped: s.Dropped,
			Errors: s.Errors, Queued: int64(s.Queued), Spooled: s.Spooled, SpoolBytes: int64(s.SpoolBytes)}
		if len(s.Counters) > 0 {
			k.Counters = make(map[string]uint64, len(s.Counters))
			for _, c := range s.Counters {
				k.Counters[c.Name] = c.Value
			}
		}
		out = append(out, k)
	}
	return out
}

// tracesAdapter is the tracer's dynamic traces as admin.Traces.
type tracesAdapter struct{ tr *tracer.Tracer }

func (a tracesAdapter) Traces() []admin.Trace {
	var out []admin.Trace
	for _, t := range a.tr.ListTraces() {
		out = append(out, traceOf(t))
	}
	return out
}

func traceOf(t tracer.TraceStats) admin.Trace {
	at := admin.Trace{ID: t.ID, Session: t.Session, User: t.User, Until: t.Until, Sinks: t.To, Matched: t.Matched}
	if t.Remote.IsValid() {
		at.CIDR = t.Remote.String()
	}
	return at
}

// StartTrace starts a trace to the sinks named, or to every open sink (every
// sink a rule uses) when none is.
func (a tracesAdapter) StartTrace(spec admin.TraceSpec) (admin.Trace, error) {
	to := spec.Sinks
	if len(to) == 0 {
		for _, s := range a.tr.Stats().Sinks {
			to = append(to, s.Name)
		}
		if len(to) == 0 {
			return admin.Trace{}, fmt.Errorf("%w: no sink is open (no rule names one)", admin.ErrInvalid)
		}
	}
	t := tracer.Trace{Session: spec.Session, User: spec.User, Remote: spec.CIDR, Until: time.Now().Add(spec.For), To: to}
	id, err := a.tr.AddTrace(t)
	if err != nil {
		return admin.Trace{}, fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	for _, ts := range a.tr.ListTraces() {
		if ts.ID == id {
			return traceOf(ts), nil
		}
	}
	t.ID = id
	return traceOf(tracer.TraceStats{Trace: t}), nil // ended already
}

func (a tracesAdapter) StopTrace(id string) error {
	if !a.tr.RemoveTrace(id) {
		return admin.ErrNotFound // the route names the trace
	}
	return nil
}

// relayAdapter is the relay as admin.Relay.
type relayAdapter struct{ r *relay.Relay }

func (a relayAdapter) Sessions() iter.Seq[admin.Session] {
	return func(yield func(admin.Session) bool) {
		for _, s := range a.r.Sessions() {
			if !yield(admin.Session{ID: s.ID, User: s.User, ConnID: s.ConnID, Transport: s.Transport, Remote: s.Remote,
				Created: s.Created, Expires: s.Expires, FramesIn: s.FramesIn, FramesOut: s.FramesOut,
				BytesIn: s.BytesIn, BytesOut: s.BytesOut}) {
				return
			}
		}
	}
}

func (a relayAdapter) Connections() iter.Seq[admin.Connection] {
	return func(yield func(admin.Connection) bool) {
		for _, c := range a.r.Connections() {
			if !yield(admin.Connection{ID: c.ID, Transport: c.Transport, Direction: c.Dir.String(), Local: c.Local,
				Remote: c.Remote, TLSSubject: c.TLSSubject, Created: c.Created, QueueDepth: c.QueueDepth,
				Users: c.Users, Sessions: c.Sessions}) {
				return
			}
		}
	}
}

func (a relayAdapter) KillSession(id string) error    { return notFound(a.r.KillSession(id)) }
func (a relayAdapter) KillConnection(id uint64) error { return notFound(a.r.KillConnection(id)) }
func (a relayAdapter) Stats() any                     { return a.r.Stats() }

// notFound maps the relay's not-found to admin's; the route names the item.
func notFound(err error) error {
	if errors.Is(err, relay.ErrNotFound) {
		return admin.ErrNotFound
	}
	return err
}

// reloaderAdapter is SIGHUP's reload as admin.Reloader: a configuration
// that does not pass its checks is ErrInvalid (400), the running one stays.
type reloaderAdapter struct{ rl *reloader }

func (a reloaderAdapter) Reload(ctx context.Context) error {
	err := a.rl.reload(ctx)
	var bad *badConfigError
	if errors.As(err, &bad) {
		return fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	return err
}

// readiness answers /readyz: the relay's listeners serve, and every sink
// is in state ok.
type readiness struct {
	o  *ops
	tr *tracer.Tracer
}

func (r readiness) NotReady() []string {
	var why []string
	if !r.o.serving.Load() {
		why = append(why, "relay: listeners not serving")
	}
	for _, s := range r.tr.Stats().Sinks {
		if s.State != sink.StateOK {
			msg := "sink " + s.Name + ": " + s.State
			if s.LastError != "" {
				msg += ": " + s.LastError
			}
			why = append(why, msg)
		}
	}
	slices.Sort(why)
	return why
}
