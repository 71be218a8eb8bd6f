package recent

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// frame is a frame event from session from to session to.
func frame(i int, from, to string, dir event.Direction, method string, status int, wire string) *event.Event {
	f := &event.FrameInfo{Dir: dir, TransactID: []byte(fmt.Sprintf("tid%d", i)), Status: status,
		FromSession: from, ToSession: to, Flag: '$', Size: int64(len(wire)), Wire: []byte(wire)}
	if method != "" {
		f.Method = []byte(method)
		f.MessageID = []byte(fmt.Sprintf("msg%d", i))
		f.ContentType = []byte("text/plain")
	}
	return &event.Event{Kind: event.FrameIn, Time: t0.Add(time.Duration(i) * time.Millisecond), Frame: f,
		Conn: event.ConnInfo{ID: uint64(100 + i%3), Transport: "msrp", Local: netip.MustParseAddrPort("127.0.0.1:2855"),
			Remote: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", 40000+i%3)), Dir: event.DirIn}}
}

func tids(fs []Frame) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.TransactID)
	}
	return out
}

func TestLookupAndCopy(t *testing.T) {
	r := NewRing("r", Config{Frames: 16})
	wire := "MSRP tid0 SEND\r\nTo-Path: msrp://x\r\n\r\nhello\r\n-------tid0$\r\n"
	e := frame(0, "A", "B", event.DirIn, "SEND", 0, wire)
	r.Put(e)
	r.Put(frame(1, "B", "A", event.DirOut, "", 200, "MSRP tid1 200 OK\r\n-------tid1$\r\n"))
	r.Put(frame(2, "C", "", event.DirIn, "SEND", 0, "x"))
	// The event's bytes are the relay's: overwriting them must not change the ring.
	copy(e.Frame.TransactID, "XXXX")
	copy(e.Frame.Wire, "XXXX")

	got := r.SessionFrames("A")
	if fmt.Sprint(tids(got)) != "[tid0 tid1]" {
		t.Fatalf("A: %v", tids(got))
	}
	f := got[0]
	if f.Method != "SEND" || f.MessageID != "msg0" || f.ContentType != "text/plain" || f.FromSession != "A" ||
		f.ToSession != "B" || string(f.Head) != wire || f.Size != int64(len(wire)) || !f.Time.Equal(t0) ||
		f.Transport != "msrp" || f.ConnID != 100 || f.Local.Port() != 2855 || f.Dir != event.DirIn {
		t.Errorf("frame 0 kept as %+v", f)
	}
	if got[1].Status != 200 || got[1].Method != "" || got[1].Dir != event.DirOut {
		t.Errorf("frame 1 kept as %+v", got[1])
	}
	if fmt.Sprint(tids(r.SessionFrames("B"))) != "[tid0 tid1]" || fmt.Sprint(tids(r.SessionFrames("C"))) != "[tid2]" {
		t.Errorf("B %v, C %v", tids(r.SessionFrames("B")), tids(r.SessionFrames("C")))
	}
	if r.SessionFrames("") != nil || r.SessionFrames("nope") != nil {
		t.Error("a session with no frames has frames")
	}
	ss := r.Sessions(0)
	if len(ss) != 3 || ss[0].ID != "C" || ss[1].Frames != 2 {
		t.Errorf("sessions %+v", ss)
	}
	if len(r.Sessions(1)) != 1 {
		t.Error("Sessions(1) not bounded")
	}
}

func TestEvictionKeepsTheNewest(t *testing.T) {
	const n = 8
	r := NewRing("r", Config{Frames: n})
	for i := range 3 * n {
		s := "odd"
		if i%2 == 0 {
			s = "even"
		}
		r.Put(frame(i, s, "", event.DirIn, "SEND", 0, "w"))
	}
	if r.Len() != n {
		t.Fatalf("Len %d, want %d", r.Len(), n)
	}
	if got := fmt.Sprint(tids(r.SessionFrames("even"))); got != "[tid16 tid18 tid20 tid22]" {
		t.Errorf("even: %s", got)
	}
	if got := fmt.Sprint(tids(r.SessionFrames("odd"))); got != "[tid17 tid19 tid21 tid23]" {
		t.Errorf("odd: %s", got)
	}
	// A session whose frames were all evicted leaves the index.
	r.Put(frame(99, "gone", "", event.DirIn, "SEND", 0, "w"))
	for i := range n {
		r.Put(frame(100+i, "even", "", event.DirIn, "SEND", 0, "w"))
	}
	if r.SessionFrames("gone") != nil || r.SessionFrames("odd") != nil {
		t.Error("evicted sessions still listed")
	}
	if n := len(r.shards[0].sessions); n != 1 || len(r.shards) != 1 {
		t.Errorf("index holds %d sessions, want 1", n)
	}
	st := r.Stats()
	if st.Sent != 3*n+1+n || counter(st, "evicted") != 3*n+1 || counter(st, "frames_held") != n {
		t.Errorf("stats %+v", st)
	}
}

func counter(st sink.Stats, name string) uint64 {
	for _, c := range st.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 1 << 63
}

func TestBoundsOfFields(t *testing.T) {
	r := NewRing("r", Config{Frames: 2, WireBytes: 10})
	e := frame(0, "A", "", event.DirIn, "SEND", 0, "0123456789abcdef")
	e.Frame.TransactID = make([]byte, 500)
	e.Frame.MessageID = make([]byte, 500)
	r.Put(e)
	f := r.SessionFrames("A")[0]
	if string(f.Head) != "0123456789" || len(f.TransactID) != maxTID || len(f.MessageID) != maxMsgID || f.Size != 16 {
		t.Errorf("kept head %q, tid %d, msg %d, size %d", f.Head, len(f.TransactID), len(f.MessageID), f.Size)
	}
	r = NewRing("r", Config{Frames: 2, WireBytes: -1})
	r.Put(frame(0, "A", "", event.DirIn, "SEND", 0, "0123456789abcdef"))
	if h := r.SessionFrames("A")[0].Head; h != nil {
		t.Errorf("wire_bytes -1 kept %q", h)
	}
}

func TestReportStatus(t *testing.T) {
	for _, c := range []struct {
		wire string
		want int
	}{
		{"MSRP t1 REPORT\r\nTo-Path: msrp://a\r\nStatus: 000 481 No session\r\n-------t1$\r\n", 481},
		{"MSRP t1 REPORT\r\nstatus: 000 200 OK\r\n\r\n", 200},
		{"MSRP t1 REPORT\r\nStatus: 000 4x1\r\n", 0},
		{"MSRP t1 REPORT\r\nStatus: 000\r\n", 0},
		{"MSRP t1 REPORT\r\nMessage-ID: 1\r\n\r\nStatus: 000 481 in the body\r\n", 0},
		{"", 0},
	} {
		r := NewRing("r", Config{Frames: 2})
		r.Put(frame(0, "A", "", event.DirIn, "REPORT", 0, c.wire))
		if got := r.SessionFrames("A")[0].ReportStatus; got != c.want {
			t.Errorf("%q: status %d, want %d", c.wire, got, c.want)
		}
	}
}

func TestEventsIgnoredAndClose(t *testing.T) {
	st := NewStore()
	s, err := Kind{Store: st}.Open(context.Background(), Config{Frames: 4}, sink.Options{Name: "recent"})
	if err != nil {
		t.Fatal(err)
	}
	s.Put(&event.Event{Kind: event.Accepted})
	s.Put(frame(1, "A", "", event.DirIn, "SEND", 0, "w"))
	if !st.Open() || len(st.SessionFrames("A")) != 1 || len(st.Sessions(0)) != 1 {
		t.Fatal("the store does not read the open ring")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Put(frame(2, "A", "", event.DirIn, "SEND", 0, "w"))
	if st.Open() || st.SessionFrames("A") != nil {
		t.Error("a closed ring is still read")
	}
	if x := s.Stats(); x.Dropped != 1 || x.Sent != 1 || counter(x, "ignored_events") != 1 {
		t.Errorf("stats %+v", x)
	}
}

func TestStorePicksTheFullestRing(t *testing.T) {
	st := NewStore()
	k := Kind{Store: st}
	a, _ := k.Open(context.Background(), Config{Frames: 4}, sink.Options{Name: "a"})
	b, _ := k.Open(context.Background(), Config{Frames: 4}, sink.Options{Name: "b"})
	a.Put(frame(1, "S", "", event.DirIn, "SEND", 0, "w"))
	b.Put(frame(1, "S", "", event.DirIn, "SEND", 0, "w"))
	b.Put(frame(2, "S", "", event.DirIn, "SEND", 0, "w"))
	if n := len(st.SessionFrames("S")); n != 2 {
		t.Errorf("%d frames, want the fuller ring's 2", n)
	}
	if ss := st.Sessions(0); len(ss) != 1 || ss[0].Frames != 2 {
		t.Errorf("sessions %+v", ss)
	}
}

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		in   Config
		want Config
		ok   bool
	}{
		{Config{}, Config{DefaultFrames, DefaultWireBytes}, true},
		{Config{Frames: 5, WireBytes: -1}, Config{5, -1}, true},
		{Config{Frames: -1}, Config{}, false},
		{Config{Frames: MaxFrames + 1}, Config{}, false},
		{Config{WireBytes: -2}, Config{}, false},
		{Config{WireBytes: MaxWireBytes + 1}, Config{}, false},
	} {
		got, err := Kind{}.Decode(func(v any) error { *v.(*Config) = c.in; return nil })
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("%+v: %+v, %v", c.in, got, err)
		}
	}
}

// Writers and readers at once (run with -race): every lookup sees a
// session's frames oldest first, and the ring ends holding its bound.
func TestConcurrent(t *testing.T) {
	const n, writers, each = 64, 4, 2000
	r := NewRing("r", Config{Frames: n})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.Put(frame(i, fmt.Sprintf("s%d", w), fmt.Sprintf("s%d", (w+1)%writers), event.DirIn, "SEND", 0, "w"))
			}
		}()
	}
	var rd sync.WaitGroup
	rd.Add(1)
	go func() {
		defer rd.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for w := range writers {
				fs := r.SessionFrames(fmt.Sprintf("s%d", w))
				for i := 1; i < len(fs); i++ {
					if fs[i].Seq <= fs[i-1].Seq {
						t.Errorf("out of order: %d after %d", fs[i].Seq, fs[i-1].Seq)
						return
					}
				}
			}
			_ = r.Sessions(0)
			_ = r.Stats()
		}
	}()
	wg.Wait()
	close(stop)
	rd.Wait()
	if r.Len() != n || r.Stats().Sent != writers*each {
		t.Errorf("Len %d, sent %d", r.Len(), r.Stats().Sent)
	}
	total := 0
	for _, sh := range r.shards {
		for _, x := range sh.sessions {
			total += len(x.seqs)
		}
	}
	if total != 2*n {
		t.Errorf("index holds %d entries, want %d (each frame under two sessions)", total, 2*n)
	}
}

// Once every slot has been used, Put of a known session's frame does not
// allocate.
func TestPutDoesNotAllocate(t *testing.T) {
	r := NewRing("r", Config{Frames: 32})
	e := frame(1, "A", "B", event.DirIn, "SEND", 0, "MSRP t SEND\r\n\r\n-------t$\r\n")
	for range 64 {
		r.Put(e)
	}
	if a := testing.AllocsPerRun(1000, func() { r.Put(e) }); a != 0 {
		t.Errorf("Put allocates %.1f times", a)
	}
}

func BenchmarkPut(b *testing.B) {
	r := NewRing("r", Config{})
	e := frame(1, "A", "B", event.DirIn, "SEND", 0, string(make([]byte, 300)))
	b.ReportAllocs()
	for b.Loop() {
		r.Put(e)
	}
}

// reportStatus reads peer-controlled bytes: it never panics and answers a
// three-digit code or 0.
func FuzzReportStatus(f *testing.F) {
	for _, s := range []string{"MSRP t REPORT\r\nStatus: 000 481 x\r\n\r\n", "Status: 000 2", "status:000 200", "\r\n\r\n", "Status: \xff\xfe 123"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		if c := reportStatus(wire); c < 0 || c > 999 {
			t.Fatalf("%q: status %d", wire, c)
		}
		r := NewRing("r", Config{Frames: 2, WireBytes: 16})
		e := frame(0, "A", "B", event.DirIn, "REPORT", 0, string(wire))
		e.Frame.Size = int64(len(wire)) / 2 // shorter than the capture: cut to it
		r.Put(e)
		if fs := r.SessionFrames("A"); len(fs) != 1 || int64(len(fs[0].Head)) > min(16, e.Frame.Size) {
			t.Fatalf("%q: kept %+v", wire, fs)
		}
	})
}

// A session whose frames were all evicted leaves the index; its next frame
// makes a new entry, found by SessionFrames, even though the session was
// among the recently indexed ones.
func TestSessionBackAfterEviction(t *testing.T) {
	r := NewRing("r", Config{Frames: 2})
	r.Put(frame(1, "s1", "", event.DirIn, "SEND", 0, "MSRP t1 SEND\r\n-------t1$\r\n"))
	r.Put(frame(2, "s2", "", event.DirIn, "SEND", 0, "MSRP t2 SEND\r\n-------t2$\r\n"))
	r.Put(frame(3, "s2", "", event.DirIn, "SEND", 0, "MSRP t3 SEND\r\n-------t3$\r\n")) // evicts s1's only frame
	if got := r.SessionFrames("s1"); len(got) != 0 {
		t.Fatalf("s1 after eviction: %v", tids(got))
	}
	r.Put(frame(4, "s1", "", event.DirIn, "SEND", 0, "MSRP t4 SEND\r\n-------t4$\r\n"))
	if got := tids(r.SessionFrames("s1")); len(got) != 1 {
		t.Fatalf("s1 back: frames %v, want its new one", got)
	}
	if got := tids(r.SessionFrames("s2")); len(got) != 1 {
		t.Fatalf("s2: frames %v, want the newest", got)
	}
}

// A full ring's session index does not grow a new array as frames come
// and go (the evicted seqs leave its front, new ones join its back): a
// thousand Puts of a steady ring allocate nothing.
func TestPutSteadyIndexDoesNotAllocate(t *testing.T) {
	r := NewRing("r", Config{Frames: 32})
	e := frame(1, "session-a", "session-b", event.DirIn, "SEND", 0, "MSRP t SEND\r\n\r\n-------t$\r\n")
	for range 1000 {
		r.Put(e)
	}
	if a := testing.AllocsPerRun(10, func() {
		for range 1000 {
			r.Put(e)
		}
	}); a != 0 {
		t.Errorf("1000 Puts allocate %.1f times", a)
	}
}

// A ring of ringShards shards: Puts take the shards in turn, so that
// together they hold exactly the ring's last Frames frames (one writer);
// a session's frames come back in order across shards; Sessions merges
// a session's entries of every shard.
func TestShardsHoldTheNewest(t *testing.T) {
	const n = 4 * shardFrames
	r := NewRing("r", Config{Frames: n})
	if len(r.shards) != ringShards {
		t.Fatalf("%d shards", len(r.shards))
	}
	for i := range 3 * n {
		s := "odd"
		if i%2 == 0 {
			s = "even"
		}
		r.Put(frame(i, s, "both", event.DirIn, "SEND", 0, "w"))
	}
	if r.Len() != n {
		t.Fatalf("Len %d, want %d", r.Len(), n)
	}
	fs := r.SessionFrames("both")
	if len(fs) != n {
		t.Fatalf("%d frames of both, want %d", len(fs), n)
	}
	for i, f := range fs {
		if want := fmt.Sprintf("tid%d", 2*n+i); f.TransactID != want || f.Seq != uint64(2*n+i) {
			t.Fatalf("frame %d: %s seq %d, want %s", i, f.TransactID, f.Seq, want)
		}
	}
	ss := r.Sessions(0)
	if len(ss) != 3 || ss[0].Frames+ss[1].Frames+ss[2].Frames != 2*n {
		t.Fatalf("sessions %+v", ss)
	}
	for _, x := range ss {
		if x.ID == "both" && (x.Frames != n || !x.First.Equal(fs[0].Time) || !x.Last.Equal(fs[n-1].Time)) {
			t.Errorf("both: %+v", x)
		}
	}
	st := r.Stats()
	if st.Sent != 3*n || counter(st, "evicted") != 2*n || counter(st, "sessions_held") != 3 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Put waits on a shard's lock only as a last resort: with some shards held
// it uses the others; with every shard held it waits for one (counted as
// busy) and the frame is kept, not dropped.
func TestPutWaitsOnlyWhenAllHeld(t *testing.T) {
	r := NewRing("r", Config{Frames: 4 * shardFrames})
	for _, sh := range r.shards[1:] {
		sh.mu.Lock()
	}
	put := func(i int) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); r.Put(frame(i, "A", "", event.DirIn, "SEND", 0, "w")) }()
		select {
		case <-done:
		case <-time.After(time.Minute): // only ends a failing test
			t.Fatal("Put waited for a lock")
		}
	}
	for i := range 10 {
		put(i)
	}
	if n := r.shards[0].next; n != 10 {
		t.Errorf("the free shard took %d frames, want 10", n)
	}
	r.shards[0].mu.Lock()
	waiting := make(chan struct{})
	r.testHookWait = func() { close(waiting) }
	done := make(chan struct{})
	go func() { defer close(done); r.Put(frame(10, "A", "", event.DirIn, "SEND", 0, "w")) }()
	select {
	case <-waiting:
	case <-done:
		t.Fatal("with every shard held Put did not wait")
	}
	for _, sh := range r.shards {
		sh.mu.Unlock()
	}
	<-done
	r.testHookWait = nil
	if st := r.Stats(); st.Sent != 11 || st.Dropped != 0 || counter(st, "busy") != 1 || r.Len() != 11 {
		t.Errorf("stats %+v, %d held", st, r.Len())
	}
}

// BenchmarkPutParallel: 64 goroutines (the relay's read loops) trace into
// one ring of the default size, with one lock (shards=1, the ring before
// sharding: a Put waits for it) and with ringShards shards taken without
// waiting. mutex-wait-ns/op is the time goroutines spent blocked on locks
// (runtime/metrics), per Put: a relay goroutine blocked there is parked
// with its buffers.
func BenchmarkPutParallel(b *testing.B) {
	var evs []*event.Event
	for p := range 64 {
		evs = append(evs, frame(p, fmt.Sprintf("sessA%020d", p), fmt.Sprintf("sessB%020d", p), event.DirIn, "SEND", 0, string(make([]byte, 300))))
	}
	for _, shards := range []int{1, ringShards} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			r := newRing("r", Config{Frames: DefaultFrames, WireBytes: DefaultWireBytes}, shards)
			sample := []metrics.Sample{{Name: "/sync/mutex/wait/total:seconds"}}
			metrics.Read(sample)
			wait0 := sample[0].Value.Float64()
			var next atomic.Int32
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				e := evs[int(next.Add(1))%len(evs)]
				for pb.Next() {
					r.Put(e)
				}
			})
			metrics.Read(sample)
			b.ReportMetric((sample[0].Value.Float64()-wait0)*1e9/float64(b.N), "mutex-wait-ns/op")
			b.ReportMetric(float64(r.busy.Load())/float64(b.N)*100, "%busy")
		})
	}
}

// Many sessions with a few frames each in the ring (2,000 chats through a
// relay): entries of sessions gone from the ring serve new ones, so Put
// allocates nothing once the ring is full, and what left the ring before
// (Frame and Session ids) keeps its value while the entries are reused.
func TestManySessionsPutDoesNotAllocate(t *testing.T) {
	r := NewRing("r", Config{Frames: 4096}) // four shards
	const sessions = 10000                  // more than the ring holds: every session leaves it before its next frame
	evs := make([]*event.Event, sessions)
	for i := range evs {
		evs[i] = frame(i, fmt.Sprintf("from-%d", i), fmt.Sprintf("to-%d", i), event.DirIn, "SEND", 0, "MSRP t SEND\r\n\r\n-------t$\r\n")
	}
	i := 0
	put := func() { r.Put(evs[i%sessions]); i++ }
	for range 3 * sessions {
		put()
	}
	last := (i - 1) % sessions
	frames := r.SessionFrames(fmt.Sprintf("from-%d", last))
	held := r.Sessions(0)
	if len(frames) == 0 || len(held) == 0 {
		t.Fatalf("nothing held: %d frames, %d sessions", len(frames), len(held))
	}
	want := make([]string, len(held))
	for k, s := range held {
		want[k] = s.ID
	}
	if a := testing.AllocsPerRun(5, func() {
		for range sessions {
			put()
		}
	}); a != 0 {
		t.Errorf("%d Puts of as many sessions allocate %.1f times", sessions, a)
	}
	for _, f := range frames {
		if f.FromSession != fmt.Sprintf("from-%d", last) || f.ToSession != fmt.Sprintf("to-%d", last) {
			t.Fatalf("a frame read before changed: %q -> %q", f.FromSession, f.ToSession)
		}
	}
	for k, s := range held {
		if s.ID != want[k] || (s.ID[:3] != "fro" && s.ID[:3] != "to-") {
			t.Fatalf("session %d read before changed: %q, was %q", k, s.ID, want[k])
		}
	}
	// The index still finds every session held, and only those.
	for _, s := range r.Sessions(0) {
		if fs := r.SessionFrames(s.ID); len(fs) != s.Frames {
			t.Fatalf("session %s: %d frames, listed with %d", s.ID, len(fs), s.Frames)
		}
	}
}
