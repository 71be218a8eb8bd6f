package kamailio_test

import (
	"context"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
)

// TestLoadKamailio runs the msrpload engine against Kamailio, bounded by
// count, with Kamailio's per-connection write queue (core
// tcp_conn_wq_max, default 32 KB) above what the run sends: with the
// default a burst can overflow it on a busy machine, and Kamailio drops
// frames it answered 200 for ("write queue full").
func TestLoadKamailio(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{ExtraGlobals: "tcp_conn_wq_max = 4194304"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name                 string
		pairs, window, count int
		size, chunk          int
	}{
		{"small pipelined", 2, 16, 500, 100, 0},
		{"chunked 16 KB in 4 KB", 1, 8, 20, 16 << 10, 4 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := load.Run(ctx, load.Options{
				RelayURI: k.URI(), User: kamailio.User, Password: kamailio.Password,
				Pairs: tc.pairs, Window: tc.window, Count: tc.count, Size: tc.size, Chunk: tc.chunk,
				ResponseTimeout: 10 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(rep.Summary())
			chunks := 1
			if tc.chunk > 0 {
				chunks = (tc.size + tc.chunk - 1) / tc.chunk
			}
			want := int64(tc.pairs * tc.count * chunks)
			if rep.Frames != want || len(rep.Errors) != 0 || rep.Messages != int64(tc.pairs*tc.count) {
				t.Fatalf("frames %d messages %d errors %v, want %d frames and no errors", rep.Frames, rep.Messages, rep.Errors, want)
			}
			// Every message reached B whole (hash checked), none twice.
			if rep.MessagesDelivered != rep.Messages || rep.ReceivedSends != want || rep.ExitStatus != 0 {
				t.Fatalf("delivered %d of %d, B received %d SENDs of %d, exit status %d", rep.MessagesDelivered, rep.Messages, rep.ReceivedSends, want, rep.ExitStatus)
			}
		})
	}
}

// BenchmarkKamailioSEND sends b.N 100-byte SENDs through Kamailio (A to B,
// two relay hops), pipelined with a window of 64 on one pair.
func BenchmarkKamailioSEND(b *testing.B) {
	k := kamailio.Start(b, kamailio.Config{})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	rep, err := load.Run(ctx, load.Options{
		RelayURI: k.URI(), User: kamailio.User, Password: kamailio.Password,
		Pairs: 1, Window: 64, Count: b.N, Size: 100, ResponseTimeout: 10 * time.Second,
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if len(rep.Errors) != 0 {
		b.Logf("errors: %v", rep.Errors)
	}
	b.ReportMetric(rep.FramesPerSec, "SEND/s")
	b.ReportMetric(float64(rep.SendLatency.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(rep.SendLatency.P99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(rep.MessagesDelivered)/float64(max(rep.Messages, 1)), "delivered/acked")
}
