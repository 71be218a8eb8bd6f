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
	got := make(chan int64, 16)
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
		var frames int64
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					if m.GetName() != "msrpscope_frames" {
						continue
					}
					for _, dp := range m.GetSum().GetDataPoints() {
						frames += dp.GetAsInt()
					}
				}
			}
		}
		got <- frames
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
	if err := m.Shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown (final push): %v", err)
	}
	select {
	case n := <-got:
		if n != 3 {
			t.Fatalf("pushed msrpscope_frames = %d, want 3", n)
		}
	default:
		t.Fatal("nothing pushed")
	}
}
