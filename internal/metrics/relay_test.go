package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/msrpscope/msrpscope/internal/fanout"
	"github.com/msrpscope/msrpscope/internal/metrics"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// waiter follows the metrics Observer in the fan-out: when it has seen an
// event, the metrics have recorded it.
type waiter struct {
	mu     sync.Mutex
	ok200  int // 200 responses written by the relay
	in200  int // 200 responses read by the relay
	signal chan struct{}
}

func (w *waiter) Observe(e *event.Event) {
	if e.Frame == nil || e.Frame.Status != 200 {
		return
	}
	w.mu.Lock()
	if e.Kind == event.FrameOut {
		w.ok200++
	} else {
		w.in200++
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *waiter) wait(t *testing.T, out, in int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		w.mu.Lock()
		gotOut, gotIn := w.ok200, w.in200
		w.mu.Unlock()
		if gotOut >= out && gotIn >= in {
			return
		}
		select {
		case <-w.signal:
		case <-deadline:
			t.Fatalf("saw %d 200 responses out and %d in, want %d and %d", gotOut, gotIn, out, in)
		}
	}
}

func scrapeURL(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// get returns the value of name{labels} (a histogram's count), 0 when absent.
func get(f map[string]*dto.MetricFamily, name string, labels ...string) float64 {
next:
	for _, m := range f[name].GetMetric() {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for _, l := range m.Label {
			found := false
			for i := 0; i+1 < len(labels); i += 2 {
				if labels[i] == l.GetName() && labels[i+1] == l.GetValue() {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// TestRelayMetrics runs a real relay on loopback with the metrics behind a
// fan-out and no tracer, relays SENDs between two real clients, and checks
// /metrics rises by exactly what was relayed.
func TestRelayMetrics(t *testing.T) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	users := auth.NewUsers()
	pw := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	for name, p := range pw {
		if err := users.Add(auth.User{Name: name, Password: p}); err != nil {
			t.Fatal(err)
		}
	}
	w := &waiter{signal: make(chan struct{}, 1)}
	r, err := relay.New(relay.Config{
		Listen:   []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:    users,
		Observer: fanout.New(m.Observer(), w),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterSnapshot(func() metrics.Snapshot {
		s := r.Stats()
		return metrics.Snapshot{Sessions: s.Sessions, Relay: metrics.RelayCounters{Accepted: s.Accepted, Forwarded: s.Forwarded,
			AuthOK: s.AuthOK, AuthFailed: s.AuthFailed}}
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	before := scrapeURL(t, m.Handler())
	uri, addr := r.URIs()[0].String(), r.Addrs()[0].String()
	dial := func(user string) (*msrpclient.Client, string) {
		c, err := msrpclient.Dial(ctx, addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		use, _, err := c.Auth(ctx, uri, user, pw[user], 0)
		if err != nil {
			t.Fatalf("AUTH %s: %v", user, err)
		}
		return c, use
	}
	a, useA := dial("alice")
	b, useB := dial("bob")
	const n = 25
	for i := range n {
		res, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte(fmt.Sprint("hello ", i))})
		if err != nil || res.Chunks[0].Code != 200 {
			t.Fatalf("SEND %d: %+v %v", i, res, err)
		}
	}
	w.wait(t, 2+n, n) // out: two AUTH 200s and n SEND 200s; in: n SEND 200s
	after := scrapeURL(t, m.Handler())
	if v := get(before, "msrpscope_frames_total", "method", "SEND", "direction", "in"); v != 0 {
		t.Fatalf("SENDs before traffic: %v", v)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"msrpscope_frames_total", []string{"method", "SEND", "direction", "in"}, n},
		{"msrpscope_frames_total", []string{"method", "SEND", "direction", "out"}, n},
		{"msrpscope_frames_total", []string{"method", "AUTH", "direction", "in"}, 4},
		{"msrpscope_responses_total", []string{"class", "2xx", "direction", "in"}, n},
		{"msrpscope_responses_total", []string{"class", "2xx", "direction", "out"}, n + 2},
		{"msrpscope_auth_results_total", []string{"result", "challenge", "direction", "out"}, 2},
		{"msrpscope_auth_results_total", []string{"result", "ok", "direction", "out"}, 2},
		{"msrpscope_connections_open", []string{"direction", "in", "transport", "msrp"}, 2},
		{"msrpscope_connections_opened_total", []string{"direction", "in", "transport", "msrp"}, 2},
		{"msrpscope_relay_latency_seconds", []string{"method", "SEND"}, n},
		{"msrpscope_send_response_time_seconds", nil, n},
		{"msrpscope_sessions", nil, 2},
		{"msrpscope_relay_events_total", []string{"event", "forwarded"}, n},
		{"msrpscope_relay_events_total", []string{"event", "auth_ok"}, 2},
	} {
		if got := get(after, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
