// Package metrics owns msrpscope's OpenTelemetry metrics: the instruments, a
// Prometheus registry and handler, optional OTLP export, and an event.Observer.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
)

// Config says where metrics go besides the Prometheus handler.
type Config struct {
	// OTLPEndpoint is an OTLP/HTTP collector URL ("http://host:4318" or
	// "https://host:4318/v1/metrics"); empty: no OTLP export.
	OTLPEndpoint string
	// OTLPInterval is the push interval; zero: 30s.
	OTLPInterval time.Duration
	// OTLPHeaders are sent with every push (e.g. an auth header).
	OTLPHeaders map[string]string
}

// Latency buckets, seconds: relaying is sub-millisecond when healthy; a
// SEND's 200 comes back after a network round trip and the far side.
var (
	relayBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
	rttBuckets   = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// Metrics owns the meter provider, the Prometheus registry and the Observer.
type Metrics struct {
	reg      *prometheus.Registry
	provider *sdkmetric.MeterProvider
	meter    metric.Meter
	obs      *Observer
	handler  http.Handler
}

// meterName is the instrumentation scope of msrpscope's metrics.
const meterName = "github.com/msrpscope/msrpscope"

// New builds the instruments, a Prometheus exporter on its own registry
// (never the global one) and, when cfg.OTLPEndpoint is set, an OTLP/HTTP
// periodic exporter. The latency histograms come from a producer of both
// readers (histogram.go).
func New(cfg Config) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	hists := newHistProducer(meterName)
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithProducer(hists),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
		// Set explicitly: the exporter's default is changing. A counter
		// "msrpscope_frames" is scraped as msrpscope_frames_total, unit "s"
		// adds _seconds.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("metrics: prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{
		sdkmetric.WithReader(exp),
		// No exemplars: frames carry no trace context, and sampling one
		// would cost the hot path.
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter),
	}
	if cfg.OTLPEndpoint != "" {
		// The exporter only logs a bad URL and falls back to localhost.
		if u, err := url.Parse(cfg.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("metrics: OTLP endpoint %q: want http://host:port[/path] or https://...", cfg.OTLPEndpoint)
		}
		hopts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpointURL(cfg.OTLPEndpoint)}
		if len(cfg.OTLPHeaders) > 0 {
			hopts = append(hopts, otlpmetrichttp.WithHeaders(cfg.OTLPHeaders))
		}
		oexp, err := otlpmetrichttp.New(context.Background(), hopts...)
		if err != nil {
			return nil, fmt.Errorf("metrics: OTLP exporter %q: %w", cfg.OTLPEndpoint, err)
		}
		interval := cfg.OTLPInterval
		if interval <= 0 {
			interval = 30 * time.Second
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(oexp, sdkmetric.WithInterval(interval), sdkmetric.WithProducer(hists))))
	}
	m := &Metrics{reg: reg, provider: sdkmetric.NewMeterProvider(opts...)}
	m.meter = m.provider.Meter(meterName)
	if m.obs, err = newObserver(m.meter, hists); err != nil {
		return nil, errors.Join(err, m.provider.Shutdown(context.Background()))
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m, nil
}

// Observer is the event.Observer that records connection and frame metrics.
func (m *Metrics) Observer() *Observer { return m.obs }

// Handler serves the Prometheus text exposition of every metric.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry is the Prometheus registry the exporter writes to.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Shutdown flushes a last OTLP push and stops the readers.
func (m *Metrics) Shutdown(ctx context.Context) error {
	if err := m.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}

// Snapshot is what the snapshot callback reports at each collection: the
// relay's and the tracer's state. cmd builds it from relay.Stats and the
// tracer's Stats.
type Snapshot struct {
	Sessions int
	Relay    RelayCounters
	Sinks    []SinkStats
}

// RelayCounters are the relay's cumulative counters.
type RelayCounters struct {
	Accepted, Refused, Dialled, DialFailed        int64
	Forwarded, ForwardFailed, Rejected, BadFrames int64
	AuthOK, AuthFailed                            int64
	ReportsSent, ReportsDropped                   int64
	UnmatchedResponses, TxnTimeouts, QueueFull    int64
}

// SinkStats are one trace sink's counters.
type SinkStats struct {
	Name, Type                     string
	Sent, Dropped, Errors, Spooled int64 // records, cumulative
	Queued                         int64 // records waiting now
	SpoolBytes                     int64 // bytes on disk now
	Degraded                       bool  // its destination cannot be reached or written now (sink.StateDegraded)
}

// RegisterSnapshot calls snap at each collection (a Prometheus scrape or an
// OTLP push) and reports it as observable gauges and counters. It may be
// called once.
func (m *Metrics) RegisterSnapshot(snap func() Snapshot) error {
	mt := m.meter
	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := mt.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := mt.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	sessions := gauge("msrpscope_sessions", "{session}", "Relay sessions (AUTHed Use-Paths) held now.")
	relayEvents := counter("msrpscope_relay_events", "{event}", "Relay statistics by event, as the relay counts them.")
	sent := counter("msrpscope_trace_records_sent", "{record}", "Trace records a sink delivered.")
	dropped := counter("msrpscope_trace_records_dropped", "{record}", "Trace records a sink dropped.")
	sinkErrs := counter("msrpscope_trace_sink_errors", "{error}", "Trace sink errors.")
	spooled := counter("msrpscope_trace_records_spooled", "{record}", "Trace records a sink spooled to disk.")
	queued := gauge("msrpscope_trace_records_queued", "{record}", "Trace records waiting in a sink's queue now.")
	spoolBytes := gauge("msrpscope_trace_spool", "By", "Bytes in a sink's spool now.")
	degraded := gauge("msrpscope_trace_sink_degraded", "{state}", "1 while a sink's destination cannot be reached or written (it drops and retries), else 0.")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metrics: snapshot instruments: %w", err)
	}
	_, err := mt.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := snap()
		o.ObserveInt64(sessions, int64(s.Sessions))
		rc := s.Relay
		for _, kv := range [...]struct {
			name string
			v    int64
		}{
			{"accepted", rc.Accepted}, {"refused", rc.Refused}, {"dialled", rc.Dialled}, {"dial_failed", rc.DialFailed},
			{"forwarded", rc.Forwarded}, {"forward_failed", rc.ForwardFailed}, {"rejected", rc.Rejected},
			{"bad_frame", rc.BadFrames}, {"auth_ok", rc.AuthOK}, {"auth_failed", rc.AuthFailed},
			{"report_sent", rc.ReportsSent}, {"report_dropped", rc.ReportsDropped},
			{"unmatched_response", rc.UnmatchedResponses}, {"txn_timeout", rc.TxnTimeouts}, {"queue_full", rc.QueueFull},
		} {
			o.ObserveInt64(relayEvents, kv.v, metric.WithAttributes(attribute.String("event", kv.name)))
		}
		for _, sk := range s.Sinks {
			a := metric.WithAttributes(attribute.String("sink", sk.Name), attribute.String("type", sk.Type))
			o.ObserveInt64(sent, sk.Sent, a)
			o.ObserveInt64(dropped, sk.Dropped, a)
			o.ObserveInt64(sinkErrs, sk.Errors, a)
			o.ObserveInt64(spooled, sk.Spooled, a)
			o.ObserveInt64(queued, sk.Queued, a)
			o.ObserveInt64(spoolBytes, sk.SpoolBytes, a)
			var d int64
			if sk.Degraded {
				d = 1
			}
			o.ObserveInt64(degraded, d, a)
		}
		return nil
	}, sessions, relayEvents, sent, dropped, sinkErrs, spooled, queued, spoolBytes, degraded)
	if err != nil {
		return fmt.Errorf("metrics: snapshot callback: %w", err)
	}
	return nil
}
