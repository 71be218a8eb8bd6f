package metrics

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// scrape fetches /metrics over real HTTP and parses it with the
// Prometheus text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// find returns the metric of family name whose labels include want
// (exactly those label names besides none else), or nil.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		for _, l := range m.Label {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(fams, name, labels)
	if m == nil {
		return math.NaN()
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither counter nor gauge", name, labels)
	return 0
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func conn(id uint64, transport string, dir event.Direction) event.ConnInfo {
	return event.ConnInfo{ID: id, Transport: transport, Dir: dir,
		Local: netip.MustParseAddrPort("127.0.0.1:2855"), Remote: netip.MustParseAddrPort("127.0.0.1:40000")}
}

func frame(kind event.Kind, c event.ConnInfo, at time.Duration, method, tid, msgID string, status int, size int64) *event.Event {
	dir := event.DirIn
	if kind == event.FrameOut {
		dir = event.DirOut
	}
	fi := &event.FrameInfo{Dir: dir, TransactID: []byte(tid), Status: status, MessageID: []byte(msgID), Size: size, Flag: '$'}
	if method != "" {
		fi.Method = []byte(method)
	}
	return &event.Event{Kind: kind, Time: t0.Add(at), Conn: c, Frame: fi}
}

// paired sets e's Paired (the time of the frame the relay pairs it with,
// at after t0) and Answers (a response's request method, "" for none).
func paired(e *event.Event, at time.Duration, answers string) *event.Event {
	e.Frame.Paired = t0.Add(at)
	if answers != "" {
		e.Frame.Answers = answers
	}
	return e
}

// answers sets a response's Answers.
func answers(e *event.Event, method string) *event.Event {
	e.Frame.Answers = method
	return e
}

func TestObserverCounts(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(t.Context())
	err = m.RegisterSnapshot(func() Snapshot {
		return Snapshot{Sessions: 3, Relay: RelayCounters{Forwarded: 7, QueueFull: 2},
			Sinks: []SinkStats{{Name: "homer", Type: "hep", Sent: 11, Dropped: 1, Errors: 2, Queued: 4, Degraded: true},
				{Name: "disk", Type: "clickhouse", Sent: 5, Spooled: 9, SpoolBytes: 4096}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2, c3 := conn(1, "msrp", event.DirIn), conn(2, "msrps", event.DirIn), conn(3, "msrp", event.DirOut)
	o := m.Observer()
	for _, e := range []*event.Event{
		{Kind: event.Accepted, Conn: c1},
		{Kind: event.Accepted, Conn: c2},
		{Kind: event.TLSHandshake, Conn: c2, TLS: &event.TLSInfo{OK: true}},
		{Kind: event.ConnectStart, Conn: c3},
		{Kind: event.Connected, Conn: c3},
		{Kind: event.ConnectFailed, Conn: conn(4, "msrps", event.DirOut), Err: errors.New("refused")},
		// AUTH challenged, then granted (RFC 4976 §5).
		frame(event.FrameIn, c1, 0, "AUTH", "a1", "", 0, 200),
		answers(frame(event.FrameOut, c1, time.Millisecond, "", "a1", "", 401, 300), "AUTH"),
		frame(event.FrameIn, c1, 2*time.Millisecond, "AUTH", "a2", "", 0, 400),
		answers(frame(event.FrameOut, c1, 3*time.Millisecond, "", "a2", "", 200, 250), "AUTH"),
		// A SEND relayed c1 → c3 in 2ms, its 200 back from c3 after 28ms.
		frame(event.FrameIn, c1, 10*time.Millisecond, "SEND", "s1", "m1", 0, 1000),
		paired(frame(event.FrameOut, c3, 12*time.Millisecond, "SEND", "x1", "m1", 0, 1100), 10*time.Millisecond, ""),
		paired(frame(event.FrameIn, c3, 40*time.Millisecond, "", "x1", "", 200, 40), 12*time.Millisecond, "SEND"),
		answers(frame(event.FrameOut, c1, 41*time.Millisecond, "", "s1", "", 200, 40), "SEND"),
		// A SEND rejected: no latency sample.
		frame(event.FrameIn, c1, 50*time.Millisecond, "SEND", "s2", "m2", 0, 10),
		answers(frame(event.FrameOut, c1, 51*time.Millisecond, "", "s2", "", 481, 40), "SEND"),
		frame(event.FrameIn, c1, 60*time.Millisecond, "BOGUS", "b1", "m3", 0, 5),
		{Kind: event.Closed, Conn: c2, Reason: event.CloseIdleTimeout},
		{Kind: event.Closed, Conn: c3, Reason: event.CloseLimit},
	} {
		o.Observe(e)
	}
	f := scrape(t, m)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"msrpscope_connections_open", l("direction", "in", "transport", "msrp"), 1},
		{"msrpscope_connections_open", l("direction", "in", "transport", "msrps"), 0},
		{"msrpscope_connections_open", l("direction", "out", "transport", "msrp"), 0},
		{"msrpscope_connections_opened_total", l("direction", "in", "transport", "msrp"), 1},
		{"msrpscope_connections_opened_total", l("direction", "in", "transport", "msrps"), 1},
		{"msrpscope_connections_opened_total", l("direction", "out", "transport", "msrp"), 1},
		{"msrpscope_connect_failures_total", l("transport", "msrps"), 1},
		{"msrpscope_tls_handshakes_total", l("direction", "in", "result", "ok"), 1},
		{"msrpscope_connections_closed_total", l("direction", "in", "reason", "idle-timeout"), 1},
		{"msrpscope_connections_closed_total", l("direction", "out", "reason", "limit"), 1},
		{"msrpscope_limit_hits_total", l("limit", "idle-timeout"), 1},
		{"msrpscope_limit_hits_total", l("limit", "limit"), 1},
		{"msrpscope_frames_total", l("method", "AUTH", "direction", "in"), 2},
		{"msrpscope_frames_total", l("method", "SEND", "direction", "in"), 2},
		{"msrpscope_frames_total", l("method", "SEND", "direction", "out"), 1},
		{"msrpscope_frames_total", l("method", "other", "direction", "in"), 1},
		{"msrpscope_frames_total", l("method", "response", "direction", "out"), 4},
		{"msrpscope_frames_total", l("method", "response", "direction", "in"), 1},
		{"msrpscope_frame_bytes_total", l("method", "AUTH", "direction", "in"), 600},
		{"msrpscope_frame_bytes_total", l("method", "SEND", "direction", "in"), 1010},
		{"msrpscope_frame_bytes_total", l("method", "SEND", "direction", "out"), 1100},
		{"msrpscope_frame_bytes_total", l("method", "response", "direction", "out"), 630},
		{"msrpscope_responses_total", l("class", "2xx", "direction", "out"), 2},
		{"msrpscope_responses_total", l("class", "4xx", "direction", "out"), 2},
		{"msrpscope_responses_total", l("class", "2xx", "direction", "in"), 1},
		{"msrpscope_auth_results_total", l("result", "challenge", "direction", "out"), 1},
		{"msrpscope_auth_results_total", l("result", "ok", "direction", "out"), 1},
		{"msrpscope_sessions", l(), 3},
		{"msrpscope_relay_events_total", l("event", "forwarded"), 7},
		{"msrpscope_relay_events_total", l("event", "queue_full"), 2},
		{"msrpscope_trace_records_sent_total", l("sink", "homer", "type", "hep"), 11},
		{"msrpscope_trace_records_dropped_total", l("sink", "homer", "type", "hep"), 1},
		{"msrpscope_trace_sink_errors_total", l("sink", "homer", "type", "hep"), 2},
		{"msrpscope_trace_records_queued", l("sink", "homer", "type", "hep"), 4},
		{"msrpscope_trace_records_spooled_total", l("sink", "disk", "type", "clickhouse"), 9},
		{"msrpscope_trace_spool_bytes", l("sink", "disk", "type", "clickhouse"), 4096},
		{"msrpscope_trace_sink_degraded", l("sink", "homer", "type", "hep"), 1},
		{"msrpscope_trace_sink_degraded", l("sink", "disk", "type", "clickhouse"), 0},
	} {
		if got := value(t, f, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// The AUTH results are this relay's decisions only: no other series.
	if n := len(f["msrpscope_auth_results_total"].GetMetric()); n != 2 {
		t.Errorf("auth results: %d series, want 2", n)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		sum    float64
		bucket float64 // an upper bound that holds the sample, and the one below it must not
		below  float64
	}{
		{"msrpscope_relay_latency_seconds", l("method", "SEND"), 0.002, 0.0025, 0.001},
		{"msrpscope_send_response_time_seconds", l(), 0.028, 0.05, 0.025},
	} {
		m := find(f, tc.name, tc.labels)
		if m == nil || m.Histogram == nil {
			t.Errorf("%s%v: no histogram", tc.name, tc.labels)
			continue
		}
		h := m.Histogram
		if h.GetSampleCount() != 1 || math.Abs(h.GetSampleSum()-tc.sum) > 1e-9 {
			t.Errorf("%s: count %d sum %v, want 1 and %v", tc.name, h.GetSampleCount(), h.GetSampleSum(), tc.sum)
		}
		for _, b := range h.Bucket {
			want := uint64(0)
			if b.GetUpperBound() >= tc.bucket {
				want = 1
			}
			if b.GetUpperBound() <= tc.below && b.GetCumulativeCount() != 0 || b.GetUpperBound() >= tc.bucket && b.GetCumulativeCount() != want {
				t.Errorf("%s: bucket le=%v has %d", tc.name, b.GetUpperBound(), b.GetCumulativeCount())
			}
		}
	}
	if len(f["msrpscope_relay_latency_seconds"].GetMetric()) != 1 {
		t.Errorf("relay latency: want one series (the rejected SEND and AUTH have none)")
	}
}

// TestObserverConcurrent feeds frames from several goroutines, as the
// relay's connections do, and checks the counters add up exactly.
func TestObserverConcurrent(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(t.Context())
	o := m.Observer()
	const workers, per = 4, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			in, out := conn(uint64(2*w+1), "msrp", event.DirIn), conn(uint64(2*w+2), "msrp", event.DirOut)
			for i := range per {
				id := fmt.Sprintf("w%di%d", w, i)
				o.Observe(frame(event.FrameIn, in, 0, "SEND", id, id, 0, 100))
				o.Observe(paired(frame(event.FrameOut, out, time.Millisecond, "SEND", "x"+id, id, 0, 110), 0, ""))
				o.Observe(paired(frame(event.FrameIn, out, 2*time.Millisecond, "", "x"+id, "", 200, 30), time.Millisecond, "SEND"))
			}
		})
	}
	wg.Wait()
	f := scrape(t, m)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"msrpscope_frames_total", l("method", "SEND", "direction", "in"), workers * per},
		{"msrpscope_frames_total", l("method", "SEND", "direction", "out"), workers * per},
		{"msrpscope_frames_total", l("method", "response", "direction", "in"), workers * per},
		{"msrpscope_frame_bytes_total", l("method", "SEND", "direction", "in"), workers * per * 100},
		{"msrpscope_frame_bytes_total", l("method", "SEND", "direction", "out"), workers * per * 110},
	} {
		if got := value(t, f, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// One sample per paired frame, none lost, none counted twice.
	for _, name := range []string{"msrpscope_relay_latency_seconds", "msrpscope_send_response_time_seconds"} {
		var n uint64
		for _, mm := range f[name].GetMetric() {
			n += mm.Histogram.GetSampleCount()
		}
		if n != workers*per {
			t.Errorf("%s: %d samples, want %d", name, n, workers*per)
		}
	}
}

func TestNewOTLP(t *testing.T) {
	if _, err := New(Config{OTLPEndpoint: "::not a url"}); err == nil {
		t.Error("a bad OTLP endpoint was accepted")
	}
	m, err := New(Config{OTLPEndpoint: "http://127.0.0.1:1/v1/metrics", OTLPInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Shutdown pushes once to a closed port: the error is reported, not hidden.
	ctx, cancel := t.Context(), func() {}
	defer cancel()
	_ = m.Shutdown(ctx)
}

// TestLatencyFromPairs: the latencies come from the times the relay pairs
// frames with, whatever order they are reported in: a forwarded request's
// relay latency from the request read, a SEND's response time from its
// 200. A non-200 answer, a 200 to another method and a frame with no pair
// give none.
func TestLatencyFromPairs(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(t.Context())
	o := m.Observer()
	c1, c3 := conn(1, "msrp", event.DirIn), conn(3, "msrp", event.DirOut)
	for _, e := range []*event.Event{
		frame(event.FrameIn, c1, 0, "SEND", "s1", "m1", 0, 10),
		paired(frame(event.FrameOut, c3, 1*time.Millisecond, "SEND", "x1", "m1", 0, 10), 0, ""),
		paired(frame(event.FrameIn, c3, 11*time.Millisecond, "", "x1", "", 200, 10), time.Millisecond, "SEND"),
		// Reported out of order: the 200 before the SEND out.
		paired(frame(event.FrameIn, c3, 111*time.Millisecond, "", "x2", "", 200, 10), 101*time.Millisecond, "SEND"),
		paired(frame(event.FrameOut, c3, 101*time.Millisecond, "SEND", "x2", "m2", 0, 10), 100*time.Millisecond, ""),
		// A 481: no SEND→200 sample; its SEND still has a relay latency.
		paired(frame(event.FrameOut, c3, 201*time.Millisecond, "SEND", "x3", "m3", 0, 10), 200*time.Millisecond, ""),
		paired(frame(event.FrameIn, c3, 205*time.Millisecond, "", "x3", "", 481, 10), 201*time.Millisecond, "SEND"),
		// A REPORT forwarded: its own method's series.
		paired(frame(event.FrameOut, c3, 303*time.Millisecond, "REPORT", "x4", "m4", 0, 10), 300*time.Millisecond, ""),
		// No pair known: no sample.
		frame(event.FrameOut, c3, 312*time.Millisecond, "SEND", "x5", "m5", 0, 10),
		answers(frame(event.FrameIn, c3, 320*time.Millisecond, "", "x5", "", 200, 10), "SEND"),
		frame(event.FrameIn, c3, 321*time.Millisecond, "", "x6", "", 200, 10),
		// A 200 to a NICKNAME relayed: no SEND→200 sample.
		paired(frame(event.FrameIn, c3, 330*time.Millisecond, "", "x7", "", 200, 10), 325*time.Millisecond, "NICKNAME"),
	} {
		o.Observe(e)
	}
	f := scrape(t, m)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		count  uint64
		sum    float64
	}{
		{"msrpscope_relay_latency_seconds", l("method", "SEND"), 3, 0.003},
		{"msrpscope_relay_latency_seconds", l("method", "REPORT"), 1, 0.003},
		{"msrpscope_send_response_time_seconds", l(), 2, 0.020},
	} {
		h := find(f, tc.name, tc.labels).GetHistogram()
		if h.GetSampleCount() != tc.count || math.Abs(h.GetSampleSum()-tc.sum) > 1e-9 {
			t.Errorf("%s: count %d sum %v, want %d and %v", tc.name, h.GetSampleCount(), h.GetSampleSum(), tc.count, tc.sum)
		}
	}
}
