package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// With otlp_endpoint set the metrics are pushed over OTLP/HTTP: a collector
// on loopback receives protobuf export requests holding msrpscope_frames
// with the frames fed (Shutdown pushes what is left).
func TestOTLPPush(t *testing.T) {
	type pushed struct{ frames, latencies int64 }
	got := make(chan pushed, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/metrics" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("push to %s, content type %q", r.URL.Path, r.Header.Get("Content-Type"))
		}
		var req collectorpb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("not an OTLP export request: %v", err)
			return
		}
		var p pushed
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					switch m.GetName() {
					case "msrpscope_frames":
						for _, dp := range m.GetSum().GetDataPoints() {
							p.frames += dp.GetAsInt()
						}
					case "msrpscope_relay_latency":
						// From the readers' producer (histogram.go).
						for _, dp := range m.GetHistogram().GetDataPoints() {
							p.latencies += int64(dp.GetCount())
						}
					}
				}
			}
		}
		got <- p
	}))
	defer srv.Close()
	m, err := New(Config{OTLPEndpoint: srv.URL + "/v1/metrics", OTLPInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	o := m.Observer()
	c := conn(1, "msrp", event.DirIn)
	for i := range 3 {
		o.Observe(frame(event.FrameIn, c, time.Duration(i)*time.Millisecond, "SEND", "t1", "m1", 0, 100))
	}
	o.Observe(paired(frame(event.FrameOut, conn(2, "msrp", event.DirOut), 3*time.Millisecond, "SEND", "t2", "m1", 0, 100), 2*time.Millisecond, ""))
	if err := m.Shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown (final push): %v", err)
	}
	select {
	case p := <-got:
		if p.frames != 4 || p.latencies != 1 {
			t.Fatalf("pushed msrpscope_frames = %d, relay latency samples %d, want 4 and 1", p.frames, p.latencies)
		}
	default:
		t.Fatal("nothing pushed")
	}
}
