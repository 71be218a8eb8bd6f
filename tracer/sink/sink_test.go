package sink

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

func TestAppendFrame(t *testing.T) {
	whole := "MSRP abcd1234 SEND\r\nTo-Path: msrp://x;tcp\r\n\r\nbody...\r\n-------abcd1234$\r\n"
	big := strings.Repeat("x", 40000)
	tests := []struct {
		name  string
		f     event.FrameInfo
		limit int
		want  string
	}{
		{"whole, no limit", event.FrameInfo{TransactID: []byte("abcd1234"), Flag: '$', Size: int64(len(whole)), Wire: []byte(whole)}, 0, whole},
		{"whole, within limit", event.FrameInfo{TransactID: []byte("abcd1234"), Flag: '$', Size: int64(len(whole)), Wire: []byte(whole)}, len(whole), whole},
		{"captured beginning", event.FrameInfo{TransactID: []byte("abcd1234"), Flag: '+', Size: 100000, Wire: []byte(whole[:49])}, 0,
			whole[:49] + "\r\n[msrpscope: frame truncated, 99951 of 100000 bytes omitted]\r\n-------abcd1234+\r\n"},
		{"sink limit below capture", event.FrameInfo{TransactID: []byte("abcd1234"), Flag: '$', Size: int64(len(whole)), Wire: []byte(whole)}, 10,
			"MSRP abcd1\r\n[msrpscope: frame truncated, " + itoa(len(whole)-10) + " of " + itoa(len(whole)) + " bytes omitted]\r\n-------abcd1234$\r\n"},
		{"capture below sink limit", event.FrameInfo{TransactID: []byte("t1"), Flag: '$', Size: 40364, Wire: []byte(big[:16384])}, 30000,
			big[:16384] + "\r\n[msrpscope: frame truncated, 23980 of 40364 bytes omitted]\r\n-------t1$\r\n"},
		{"no UTF-8 sequence split", event.FrameInfo{TransactID: []byte("t1"), Flag: '$', Size: 100, Wire: []byte("ab€cd")}, 4,
			"ab\r\n[msrpscope: frame truncated, 98 of 100 bytes omitted]\r\n-------t1$\r\n"},
		{"no flag: #", event.FrameInfo{TransactID: []byte("t1"), Size: 100, Wire: []byte("ab")}, 0,
			"ab\r\n[msrpscope: frame truncated, 98 of 100 bytes omitted]\r\n-------t1#\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendFrame([]byte("pre"), &tc.f, tc.limit))
			if got != "pre"+tc.want {
				t.Fatalf("got  %q\nwant %q", got, "pre"+tc.want)
			}
			kept := min(len(tc.f.Wire), max(tc.limit, len(tc.f.Wire)*btoi(tc.limit <= 0)))
			if len(got)-3 > kept+MaxFrameOverhead {
				t.Fatalf("%d bytes appended, more than %d kept + MaxFrameOverhead", len(got)-3, kept)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestAppendFrameAllocs(t *testing.T) {
	f := &event.FrameInfo{TransactID: []byte("t1"), Flag: '$', Size: 40364, Wire: make([]byte, 16384)}
	buf := make([]byte, 0, 20000)
	if n := testing.AllocsPerRun(100, func() { buf = AppendFrame(buf[:0], f, 8000) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestCorrelationID(t *testing.T) {
	tests := []struct {
		from, to string
		want     string
	}{
		{"b2", "a1", "a1~b2"},
		{"a1", "b2", "a1~b2"},
		{"a1", "", "a1"},
		{"", "b2", "b2"},
		{"a1", "a1", "a1"},
		{"", "", "conn-77"},
	}
	for _, tc := range tests {
		e := &event.Event{Kind: event.FrameIn, Conn: event.ConnInfo{ID: 77}, Frame: &event.FrameInfo{FromSession: tc.from, ToSession: tc.to}}
		if got := string(AppendCorrelationID(nil, e)); got != tc.want {
			t.Errorf("from %q to %q: %q, want %q", tc.from, tc.to, got, tc.want)
		}
	}
	if got := string(AppendCorrelationID(nil, &event.Event{Kind: event.Accepted, Conn: event.ConnInfo{ID: 1<<63 | 5}})); got != "conn-9223372036854775813" {
		t.Errorf("connection event: %q", got)
	}
}

// A queue of size 1 whose handler is blocked holds one record: every
// further Put is refused and counted, exactly.
func TestQueueFullDropsAreCounted(t *testing.T) {
	started, release := make(chan int), make(chan struct{})
	var mu sync.Mutex
	var got []int
	q := NewQueue(1, func(p *int) {
		v := *p
		if v == 0 {
			started <- v
			<-release
		}
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
	}, QueueOptions{})
	if !q.Put(0) {
		t.Fatal("first Put refused")
	}
	<-started // the goroutine holds record 0, the queue is empty
	if !q.Put(1) {
		t.Fatal("second Put refused: the queue holds one")
	}
	const extra = 25
	for i := range extra {
		if q.Put(100 + i) {
			t.Fatalf("Put %d taken by a full queue", i)
		}
	}
	if d := q.Dropped(); d != extra {
		t.Fatalf("Dropped %d, want %d", d, extra)
	}
	close(release)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("handled %v, want [0 1]", got)
	}
	if q.Put(5) || q.Dropped() != extra+1 {
		t.Fatalf("Put after Close: dropped %d", q.Dropped())
	}
}

// A record counts in Len until its handler call has returned: a sink that
// reads Len before its own counters never sees 0 while a record is in
// neither (before, the goroutine left pending before handling, and
// pcapsink's TestQueuedUntilFlushed saw Queued 0 with Sent short in CI).
func TestQueueLenCountsRecordBeingHandled(t *testing.T) {
	var q *Queue[int]
	var lens []int // the handler's, read after Close
	q = NewQueue(8, func(v *int) { lens = append(lens, q.Len()) }, QueueOptions{})
	const n = 5
	for i := range n {
		q.Put(i)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(lens) != n {
		t.Fatalf("handled %d, want %d", len(lens), n)
	}
	for i, l := range lens {
		if l < 1 {
			t.Fatalf("record %d: Len %d while it was being handled, want at least 1 (all: %v)", i, l, lens)
		}
	}
	if l := q.Len(); l != 0 {
		t.Fatalf("Len %d after Close", l)
	}
}

// Close whose context ends before the handler finishes discards the rest
// and counts it.
func TestQueueCloseDeadline(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	q := NewQueue(4, func(v *int) {
		if *v == 0 {
			close(started)
			<-release
		}
	}, QueueOptions{})
	q.Put(0)
	<-started
	q.Put(1)
	q.Put(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close: %v", err)
	}
	close(release)
	<-q.done
	if q.Dropped() != 2 {
		t.Fatalf("Dropped %d, want the 2 not handled", q.Dropped())
	}
}

type nopSink struct{}

func (nopSink) Put(*event.Event)                                 {}
func (nopSink) Stats() Stats                                     { return Stats{} }
func (nopSink) Close(context.Context) error                      { return nil }
func (nopKind) Decode(func(any) error) (any, error)              { return nil, nil }
func (nopKind) Open(context.Context, any, Options) (Sink, error) { return nopSink{}, nil }

type nopKind struct{}

func TestRegistry(t *testing.T) {
	Register("sink-test-nop", nopKind{})
	if _, ok := Lookup("sink-test-nop"); !ok {
		t.Fatal("not found after Register")
	}
	found := false
	for _, ty := range Types() {
		found = found || ty == "sink-test-nop"
	}
	if !found {
		t.Fatalf("Types %v", Types())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("second Register of one type did not panic")
		}
	}()
	Register("sink-test-nop", nopKind{})
}

// Records put while the goroutine handles others are handled in order, each
// once; idle runs once the queue has stayed empty, not after each record.
func TestQueueOrderAndIdle(t *testing.T) {
	const n = 10000
	var got []int
	var idled []int // len(got) at each idle call
	q := NewQueue(64, func(v *int) { got = append(got, *v) }, QueueOptions{Idle: func() { idled = append(idled, len(got)) }, IdleDelay: time.Hour, Linger: time.Millisecond})
	put := 0
	for put < n {
		if q.Put(put) {
			put++
		}
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("handled %d of %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("record %d is %d", i, v)
		}
	}
	// With an idle delay of an hour, idle ran only at the close.
	if len(idled) != 1 || idled[0] != n {
		t.Fatalf("idle ran %d times, want once after the last record", len(idled))
	}
}

// PutFunc fills a slot in place, reusing what an earlier record left: a
// queue in use allocates nothing per record.
func TestQueuePutAllocs(t *testing.T) {
	type rec struct{ data []byte }
	handled := make(chan struct{}, 1)
	q := NewQueue(16, func(r *rec) {
		select {
		case handled <- struct{}{}:
		default:
		}
	}, QueueOptions{})
	defer q.Close(context.Background())
	payload := make([]byte, 300)
	put := func() {
		q.PutFunc(func(r *rec) { r.data = append(r.data[:0], payload...) })
		<-handled
	}
	for range 64 {
		put()
	}
	if n := testing.AllocsPerRun(1000, put); n != 0 {
		t.Fatalf("%v allocations per record", n)
	}
}

// With a linger, records gather without waking the goroutine for each
// one, until a batch is large (a quarter of the queue) or the linger ends.
func TestQueueLinger(t *testing.T) {
	handled := make(chan int, 64)
	q := NewQueue(64, func(v *int) { handled <- *v }, QueueOptions{Linger: time.Hour})
	defer q.Close(context.Background())
	q.Put(0) // wakes the goroutine, which then lingers
	for {
		q.mu.Lock()
		l := q.lingering
		q.mu.Unlock()
		if l {
			break
		}
		runtime.Gosched()
	}
	for i := 1; i < 15; i++ { // wakeAt is 64/4 = 16
		q.Put(i)
	}
	if n := q.Len(); n != 15 {
		t.Fatalf("Len %d while lingering, want 15", n)
	}
	select {
	case v := <-handled:
		t.Fatalf("record %d handled before the batch was large or the linger ended", v)
	default:
	}
	q.Put(15)
	for i := range 16 {
		select {
		case v := <-handled:
			if v != i {
				t.Fatalf("record %d handled as %d", i, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d not handled: the 16th record did not end the linger", i)
		}
	}
}

// TestQueueAdaptiveLinger: an adaptive queue takes a lone record at once
// (light load) and lingers only after a large batch.
func TestQueueAdaptiveLinger(t *testing.T) {
	handled := make(chan int, 64)
	started, release := make(chan struct{}), make(chan struct{})
	q := NewQueue(64, func(v *int) {
		if *v == 1 {
			close(started)
			<-release
		}
		handled <- *v
	}, QueueOptions{Linger: time.Hour, Adaptive: true}) // wakeAt 16, busyAt 2
	defer q.Close(context.Background())
	next := func(want int) {
		t.Helper()
		select {
		case v := <-handled:
			if v != want {
				t.Fatalf("record %d handled as %d", want, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d not handled: the queue lingered under a light load", want)
		}
	}
	q.Put(0)
	next(0)
	q.Put(1)
	<-started
	q.Put(2)
	q.Put(3)
	close(release)
	for i := 1; i <= 3; i++ {
		next(i)
	}
	// The last batch was [2 3]: the next record waits for more.
	q.Put(4)
	for {
		q.mu.Lock()
		l := q.lingering
		q.mu.Unlock()
		if l {
			break
		}
		runtime.Gosched()
	}
	select {
	case v := <-handled:
		t.Fatalf("record %d handled while the queue should linger", v)
	default:
	}
	for i := 5; i < 20; i++ { // 16 waiting end the linger
		q.Put(i)
	}
	for i := 4; i < 20; i++ {
		next(i)
	}
}

// TestQueueAdaptiveIdle: an adaptive queue calls Idle as soon as it runs
// empty after a small batch (light load), and after a large batch only once
// it has stayed empty for IdleDelay (here: not before Close).
func TestQueueAdaptiveIdle(t *testing.T) {
	idle := make(chan struct{}, 8)
	started, release := make(chan struct{}), make(chan struct{})
	q := NewQueue(64, func(v *int) {
		if *v == 1 {
			close(started)
			<-release
		}
	}, QueueOptions{Idle: func() { idle <- struct{}{} }, IdleDelay: time.Hour, Adaptive: true}) // busyAt 2
	waitIdle := func(what string) {
		t.Helper()
		select {
		case <-idle:
		case <-time.After(10 * time.Second):
			t.Fatalf("Idle not called %s", what)
		}
	}
	q.Put(0)
	waitIdle("after a lone record: a light load waits for nothing")
	q.Put(1)
	<-started
	q.Put(2)
	q.Put(3)
	close(release)
	// The last batch was [2 3]: the queue sleeps without calling Idle.
	for {
		q.mu.Lock()
		s := q.sleeping && q.pending.Load() == 0
		q.mu.Unlock()
		if s {
			break
		}
		runtime.Gosched()
	}
	select {
	case <-idle:
		t.Fatal("Idle called at once after a large batch")
	default:
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitIdle("at Close")
}
