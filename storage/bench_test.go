package storage

import (
	"context"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// BenchmarkAdd is the relay-side cost of one traced frame.
func BenchmarkAdd(b *testing.B) {
	w, err := NewWriter(context.Background(), Config{Addr: []string{"127.0.0.1:1"}, BufferRows: 1 << 20, SpoolMaxBytes: 1 << 34})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = w.Close(ctx)
	}()
	e := testFrame(1)
	b.ReportAllocs()
	for b.Loop() {
		w.Add(e)
	}
}

// BenchmarkWriterInto18 measures rows/s from Add to stored in ClickHouse
// 18.16 (memory queue, then the disk spool), with the default batch size.
// Run it with a fixed count (-benchtime 1000000x): rows/s counts until Close
// has stored everything.
func BenchmarkWriterInto18(b *testing.B) {
	srv := startServer(b)
	for _, spooled := range []bool{false, true} {
		name := "memory"
		if spooled {
			name = "spool"
		}
		b.Run(name, func(b *testing.B) {
			cfg := Config{Addr: []string{srv.Addr()}, BatchAge: time.Second, BufferRows: 1 << 20}
			if spooled {
				cfg.SpoolDir = b.TempDir()
			}
			events := make([]*event.Event, 1000)
			for i := range events {
				events[i] = testFrame(i)
			}
			w, err := NewWriter(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			rows := 0
			for b.Loop() {
				w.Add(events[rows%len(events)])
				rows++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
			st := w.Stats()
			if st.RowsStored != uint64(rows)-st.DroppedBuffer {
				b.Fatalf("stored %d of %d (stats %+v)", st.RowsStored, rows, st)
			}
			b.ReportMetric(float64(st.RowsStored)/time.Since(start).Seconds(), "rows/s")
			b.ReportMetric(float64(st.DroppedBuffer), "dropped")
		})
	}
}
