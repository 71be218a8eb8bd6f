package pcapsink

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

func open(t *testing.T, queue int, js func(v any) error) *pcapSink {
	t.Helper()
	cfg, err := Kind{}.Decode(js)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Kind{}.Open(context.Background(), cfg, sink.Options{Name: "p", QueueSize: queue})
	if err != nil {
		t.Fatal(err)
	}
	return s.(*pcapSink)
}

func dirDecoder(dir string) func(v any) error {
	return func(v any) error { v.(*Config).Dir = dir; return nil }
}

func frame(n int) *event.Event {
	wire := "MSRP t1 SEND\r\n-------t1$\r\n"
	return &event.Event{Kind: event.FrameIn, Time: time.Unix(1700000000, int64(n)), Conn: event.ConnInfo{ID: 1,
		Local: netip.MustParseAddrPort("127.0.0.1:2855"), Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Dir: event.DirIn},
		Frame: &event.FrameInfo{Dir: event.DirIn, TransactID: []byte("t1"), Flag: '$', Size: int64(len(wire)), Wire: []byte(wire)}}
}

// A queue of one record behind a blocked writer: Dropped rises by exactly
// the number of records that did not fit.
func TestQueueFullDropsCounted(t *testing.T) {
	p := open(t, 1, dirDecoder(t.TempDir()))
	started, release := make(chan struct{}), make(chan struct{})
	first := true
	p.beforeWrite = func() {
		if first {
			first = false
			close(started)
			<-release
		}
	}
	p.Put(frame(0))
	<-started // the writer holds record 0; the queue's slots are empty
	p.Put(frame(1))
	const extra = 17
	for i := range extra {
		p.Put(frame(2 + i))
	}
	// Queued 2: record 1 waits, record 0 is held by the writer, not yet written.
	if st := p.Stats(); st.Dropped != extra || st.Queued != 2 {
		t.Fatalf("stats %+v, want %d dropped, 2 queued", st, extra)
	}
	close(release)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Sent != 2 || st.Dropped != extra || st.Errors != 0 || st.State != sink.StateOK {
		t.Fatalf("after close: %+v", st)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *Config)
	}{
		{"negative file size", func(c *Config) { c.MaxFileBytes = -1 }},
		{"total below file", func(c *Config) { c.MaxFileBytes, c.MaxTotalBytes = 100, 10 }},
		{"negative frame limit", func(c *Config) { c.FrameLimit = -1 }},
	} {
		if _, err := (Kind{}).Decode(func(v any) error { tc.set(v.(*Config)); return nil }); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// Records written to the file's buffer but not yet flushed (the flush
// waits for the queue to stay empty) still count as queued: once Queued is
// 0, Sent accounts for every record put.
func TestQueuedUntilFlushed(t *testing.T) {
	p := open(t, 64, dirDecoder(t.TempDir()))
	const n = 10
	for i := range n {
		p.Put(frame(i))
	}
	for p.Stats().Queued > 0 {
		runtime.Gosched()
	}
	if st := p.Stats(); st.Sent != n || st.Dropped != 0 {
		t.Fatalf("nothing queued, but %+v: want %d sent", st, n)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
