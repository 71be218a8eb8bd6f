package pcapsink

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/pcap"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

func TestLargeClass(t *testing.T) {
	for _, tc := range []struct{ n, idx, size int }{
		{1025, 0, 1152},
		{1152, 0, 1152},
		{1153, 1, 1280},
		{2048, 7, 2048},
		{2049, 8, 2304},
		{65536 + 200, 6*8 + 0, 72 << 10},
		{1 << 20, largeClasses - 1, 1 << 20},
		{1<<20 + 1, -1, 1<<20 + 1},
	} {
		if idx, size := largeClass(tc.n); idx != tc.idx || size != tc.size {
			t.Errorf("largeClass(%d) = %d, %d; want %d, %d", tc.n, idx, size, tc.idx, tc.size)
		}
	}
}

// The free lists: a buffer given back is handed out again for its class;
// a new buffer that does not fit beside the free ones lets them go; in use
// plus free never exceeds the limit; what does not fit is refused and
// counted.
func TestLargeBufsBounded(t *testing.T) {
	l := largeBufs{limit: 64 << 10}
	a, ok := l.get(20 << 10) // class 20 KiB
	if !ok || cap(a) != 20<<10 {
		t.Fatalf("get: %v, cap %d", ok, cap(a))
	}
	l.put(a)
	b, _ := l.get(19<<10 + 1)
	if &b[:1][0] != &a[:1][0] {
		t.Error("a buffer of the same class was not reused")
	}
	c, ok := l.get(40 << 10) // 20 + 40 KiB in use
	if !ok {
		t.Fatal("refused within the limit")
	}
	if _, ok := l.get(8 << 10); ok {
		t.Fatal("taken beyond the limit")
	}
	l.put(b)
	l.put(c) // free: 20 + 40 KiB
	if _, ok := l.get(48 << 10); !ok {
		t.Fatal("free buffers of other classes were not let go")
	}
	if in, free := l.usage(); in != 48<<10 || in+free > l.limit {
		t.Errorf("in use %d, free %d, limit %d", in, free, l.limit)
	}
	if l.dropped.Load() != 1 {
		t.Errorf("dropped %d, want 1", l.dropped.Load())
	}
}

// chunkEvent is a frame event of a 64 KiB chunk, sharing wire (no garbage
// per record).
func chunkEvent(wire []byte) *event.Event {
	e := frame(0)
	e.Frame.Wire, e.Frame.Size = wire, int64(len(wire))
	return e
}

func chunkWire() []byte {
	return []byte("MSRP t1 SEND\r\nTo-Path: msrp://a\r\nContent-Type: text/plain\r\n\r\n" +
		strings.Repeat("x", 64<<10) + "\r\n-------t1+\r\n")
}

// Large frames behind a writer that does not move: the bytes queued stay
// within maxLargeBytes whatever the queue's length, the frames that do
// not fit are dropped and counted exactly, and small frames and
// connection events queued among them are all written.
func TestLargeQueueBounded(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir)
	const m = 1500 // large frames after the first: 1500 × 72 KiB = 105 MiB uncapped
	p := start(sink.Options{Name: "p", QueueSize: 4 * m}, w, 0)
	started, release := make(chan struct{}), make(chan struct{})
	first := true
	p.beforeWrite = func() {
		if first {
			first = false
			close(started)
			<-release
		}
	}
	big := chunkEvent(chunkWire())
	_, class := largeClass(frameBytes(big.Frame, 0))
	fit := maxLargeBytes / class // large records that fit, the one being written included
	open := &event.Event{Kind: event.Accepted, Conn: big.Conn}
	small := frame(1)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p.Put(big)
	<-started // the writer holds the first large record
	for range m {
		p.Put(big)
		p.Put(small)
		p.Put(open)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	inUse, free := p.large.usage()
	st := p.Stats()
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d large records fit (%d B each); heap grew %d KiB; large in use %d KiB, free %d KiB; %+v",
		fit, class, grown>>10, inUse>>10, free>>10, st)
	if inUse != int64(fit*class) || inUse+free > maxLargeBytes {
		t.Errorf("large buffers: %d in use, %d free, want %d in use", inUse, free, fit*class)
	}
	// The queue's slots and small buffers add some 2 MiB.
	if grown > maxLargeBytes+8<<20 {
		t.Errorf("heap grew by %d MiB with %d large frames queued", grown>>20, m)
	}
	wantDropped := uint64(m + 1 - fit)
	if st.Dropped != wantDropped || counter(st, "dropped_large") != wantDropped {
		t.Errorf("dropped %d (dropped_large %d), want %d", st.Dropped, counter(st, "dropped_large"), wantDropped)
	}
	close(release)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	if want := uint64(3*m+1) - wantDropped; st.Sent != want || st.Dropped != wantDropped || st.Errors != 0 {
		t.Errorf("after close: %+v; want %d sent", st, want)
	}
	if inUse, free := p.large.usage(); inUse != 0 || free > maxLargeBytes {
		t.Errorf("after close: %d in use, %d free", inUse, free)
	}
}

func counter(st sink.Stats, name string) uint64 {
	for _, c := range st.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

// A steady stream of large frames reuses the same buffers: nothing is
// allocated per record once the free lists hold what is in flight.
func TestPutLargeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race")
	}
	p := start(sink.Options{Name: "p", QueueSize: 64}, openWriter(t, t.TempDir()), 0)
	defer p.Close(context.Background())
	big := chunkEvent(chunkWire())
	put := func() {
		p.Put(big)
		for p.q.Len() > 0 {
			runtime.Gosched()
		}
	}
	for range 16 {
		put()
	}
	if n := testing.AllocsPerRun(200, put); n != 0 {
		t.Fatalf("%v allocations per large record", n)
	}
}

func openWriter(t *testing.T, dir string) *pcap.Writer {
	t.Helper()
	w, err := pcap.Open(pcap.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// BenchmarkPutLarge puts 64 KiB chunks into a sink writing to a file,
// with at most 64 records waiting (a producer paced by its network, not
// one the queue drops for): B/op is what each record costs the heap.
func BenchmarkPutLarge(b *testing.B) {
	w, err := pcap.Open(pcap.Config{Dir: b.TempDir(), MaxFileBytes: 16 << 20, MaxTotalBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	p := start(sink.Options{Name: "p"}, w, 0)
	e := chunkEvent(chunkWire())
	b.SetBytes(int64(len(e.Frame.Wire)))
	b.ReportAllocs()
	for b.Loop() {
		p.Put(e)
		for p.q.Len() >= 64 {
			runtime.Gosched()
		}
	}
	if err := p.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapSys)/(1<<20), "heap-sys-MiB")
	b.ReportMetric(float64(p.Stats().Dropped), "dropped")
}
