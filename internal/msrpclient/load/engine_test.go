package load

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// loopback returns the two ends of a TCP connection on 127.0.0.1.
func loopback(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func sendChunk(tid, mid string, start, end, total int, body string, flag byte) string {
	return fmt.Sprintf("MSRP %s SEND\r\nTo-Path: msrp://127.0.0.1:1/b;tcp\r\nFrom-Path: msrp://127.0.0.1:2/r;tcp msrp://127.0.0.1:3/a;tcp\r\n"+
		"Message-ID: %s\r\nByte-Range: %d-%d/%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n-------%s%c\r\n",
		tid, mid, start, end, total, body, tid, flag)
}

// B reassembles chunks by Byte-Range per Message-ID, in any order, and
// checks the whole message by hash: a message delivered out of order
// counts, a corrupted or incomplete one is an error; every SEND gets a 200
// to the previous hop.
func TestReceiverReassembly(t *testing.T) {
	body := "abcdefghijklmnopqrstuvwxyz"
	r := &runner{opts: Options{Size: len(body)}, body: newBodyPattern(len(body)), changed: make(chan struct{}, 1)}
	r.bodyCRC = crc32.Checksum([]byte(body), castagnoli)
	bEnd, relayEnd := loopback(t)
	p := &pair{r: r}
	p.initWindow(1)
	br := bufio.NewReaderSize(bEnd, readBufSize)
	p.b = &mconn{nc: bEnd, br: br, rd: msrp.NewReader(br, msrp.Limits{}), bw: newGatherWriter(bEnd, writeBufSize), uri: "msrp://127.0.0.1:1/b;tcp"}
	done := make(chan struct{})
	go func() { defer close(done); p.readB() }()

	frames := []string{
		// m1: in order, three chunks.
		sendChunk("tx01", "m1.0", 1, 10, 26, body[0:10], '+'),
		sendChunk("tx02", "m1.0", 11, 20, 26, body[10:20], '+'),
		sendChunk("tx03", "m1.0", 21, 26, 26, body[20:], '$'),
		// m2: last chunk first.
		sendChunk("tx04", "m2.0", 14, 26, 26, body[13:], '$'),
		sendChunk("tx05", "m2.0", 1, 13, 26, body[:13], '+'),
		// m3: one chunk, whole.
		sendChunk("tx06", "m3.0", 1, 26, 26, body, '$'),
		// m4: a corrupted byte.
		sendChunk("tx07", "m4.0", 1, 13, 26, body[:13], '+'),
		sendChunk("tx08", "m4.0", 14, 26, 26, "X"+body[14:], '$'),
		// m5: whole but wrong.
		sendChunk("tx09", "m5.0", 1, 26, 26, strings.ToUpper(body), '$'),
		// m6: its second chunk never comes.
		sendChunk("tx10", "m6.0", 1, 13, 26, body[:13], '+'),
		// m7: aborted, short of its Byte-Range (RFC 4975 §7.1 allows that).
		sendChunk("tx11", "m7.0", 1, 13, 26, body[:5], '#'),
	}
	if _, err := relayEnd.Write([]byte(strings.Join(frames, ""))); err != nil {
		t.Fatal(err)
	}
	_ = relayEnd.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure, not a wait
	rd := msrp.NewReader(bufio.NewReader(relayEnd), msrp.Limits{})
	for i := range frames {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		want := fmt.Sprintf("tx%02d", i+1)
		if f.StatusCode != 200 || string(f.TransactID) != want || string(f.Get(msrp.HdrToPath)) != "msrp://127.0.0.1:2/r;tcp" {
			t.Fatalf("response %d: %d %s To-Path %s, want 200 %s to the previous hop", i, f.StatusCode, f.TransactID, f.Get(msrp.HdrToPath), want)
		}
	}
	_ = relayEnd.Close()
	<-done
	if got := p.delivrd.Load(); got != 3 {
		t.Errorf("delivered %d, want 3 (m1, m2, m3)", got)
	}
	want := map[string]int64{kindHashMismatch: 2, kindIncomplete: 1, kindAborted: 1, kindClosedByRelay: 1}
	if fmt.Sprint(p.bErrs) != fmt.Sprint(want) {
		t.Errorf("errors %v, want %v", p.bErrs, want)
	}
	if p.recvSends != int64(len(frames)) {
		t.Errorf("received %d SENDs, want %d", p.recvSends, len(frames))
	}
}

func TestTIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		s   int32
		gen uint32
	}{{0, 0}, {5, 1}, {1023, 1<<32 - 1}, {1<<31 - 1, 7}} {
		tid := appendTID(nil, tc.s, tc.gen)
		if !msrp.ValidIdent(tid) && len(tid) <= msrp.IdentMaxLen {
			t.Errorf("%s is not an ident", tid)
		}
		s, gen, ok := parseTID(tid)
		if !ok || s != tc.s || gen != tc.gen {
			t.Errorf("parseTID(%s) = %d %d %v", tid, s, gen, ok)
		}
	}
	for _, bad := range []string{"", "t0", "x0.0", "t0-0", "tZZ.0", "t.0", "t0.", "t0.0.0"} {
		if _, _, ok := parseTID([]byte(bad)); ok {
			t.Errorf("parseTID(%q) accepted", bad)
		}
	}
}

// A slot without a response within the timeout is failed by the sweep,
// once, and frees its window slot; its message is not acknowledged.
func TestSweepTimeout(t *testing.T) {
	r := &runner{opts: Options{Size: 10, Count: 2, ResponseTimeout: 100}, body: newBodyPattern(10), changed: make(chan struct{}, 1)}
	c, _ := loopback(t)
	p := &pair{r: r, a: &mconn{nc: c, bw: newGatherWriter(c, writeBufSize)}, head: []byte(" SEND\r\nTo-Path: x\r\nFrom-Path: y\r\nMessage-ID: m")}
	p.initWindow(4)
	p.pump(1000) // both messages go out at t=1000
	if len(p.free) != 2 || p.started != 2 {
		t.Fatalf("free %d started %d after pump", len(p.free), p.started)
	}
	p.sweep(1100) // not yet: 100 ns old
	if len(p.free) != 2 || p.errs[kindTimeout] != 0 {
		t.Fatalf("swept too early: free %d errors %v", len(p.free), p.errs)
	}
	p.sweep(1101)
	p.sweep(5000)
	if len(p.free) != 4 || p.errs[kindTimeout] != 2 || p.acked.Load() != 0 || len(p.freeMsg) != 5 {
		t.Fatalf("after the timeout: free %d errors %v acked %d free messages %d", len(p.free), p.errs, p.acked.Load(), len(p.freeMsg))
	}
	p.checkIdle()
	if !p.aIdle.Load() {
		t.Fatal("count done and nothing outstanding, but not idle")
	}

	// Chunked: a message whose written chunks all failed while more are
	// to come stays the current message until its last chunk is done.
	r.opts.Chunk, r.opts.Count = 4, 1 // 3 chunks
	p = &pair{r: r, a: p.a, head: p.head}
	p.initWindow(2)
	p.pump(0)
	p.sweep(1000)
	if p.cur < 0 || len(p.freeMsg) != 2 || p.errs[kindTimeout] != 2 {
		t.Fatalf("after 2 of 3 chunks failed: current %d, free messages %d, errors %v", p.cur, len(p.freeMsg), p.errs)
	}
	p.pump(2000)
	p.sweep(3000)
	if p.cur >= 0 || len(p.freeMsg) != 3 || p.acked.Load() != 0 || p.errs[kindTimeout] != 3 {
		t.Fatalf("after the last chunk failed: current %d, free messages %d, acked %d, errors %v", p.cur, len(p.freeMsg), p.acked.Load(), p.errs)
	}
}

func TestKinds(t *testing.T) {
	for _, tc := range []struct {
		where, comment string
		code           int
		want           string
	}{
		{"SEND", "", 408, "SEND 408 Request Timeout"},
		{"REPORT", "whatever", 481, "REPORT 481 No Such Session"},
		{"SEND", "Slow Down", 499, "SEND 499 Slow Down"},
		{"SEND", "", 599, "SEND 599"},
	} {
		if got := statusKind(tc.where, tc.code, tc.comment); got != tc.want {
			t.Errorf("statusKind(%s %d %q) = %q, want %q", tc.where, tc.code, tc.comment, got, tc.want)
		}
	}
	c, s := loopback(t)
	_ = s.Close()
	buf := make([]byte, 1)
	_, err := c.Read(buf)
	if got := connKind(err); got != kindClosedByRelay {
		t.Errorf("connKind(%v) = %q", err, got)
	}
	if got := connKind(&msrp.FrameError{Err: msrp.ErrStartLine}); got != kindMalformed {
		t.Errorf("connKind(frame error) = %q", got)
	}
}

// With -rate the schedule is absolute: a pair that wakes up late starts
// every message already due at once (as far as its window allows), each
// with its own scheduled time; what it could not start counts as behind.
func TestRateCatchUp(t *testing.T) {
	ms := int64(time.Millisecond)
	for _, c := range []struct {
		name        string
		wakes       []int64 // the pumps' clock, ns since start
		count       int
		stopAt      int64 // -1: ended by count
		wantStarted int64
		wantBehind  int64
		wantLate    int64
		kept        bool
	}{
		// On time: one message a wake-up, the stop between two.
		{"on time", []int64{0, 1 * ms, 2 * ms, 3 * ms}, 0, 3*ms + ms/2, 4, 0, 0, true},
		// One late wake-up: the 4 due start at once and catch up (the
		// first at 4 ms is on time, the 3 before it late).
		{"caught up", []int64{0, 4 * ms, 5 * ms}, 0, 5*ms + ms/2, 6, 0, 2, true},
		// 50 ms late with a window of 8: 8 start, 43 are behind at the stop.
		{"window full", []int64{50 * ms}, 0, 50 * ms, 8, 43, 8, false},
		// Ended by -count: behind when its last message started.
		{"count", []int64{50 * ms}, 8, -1, 8, 43, 8, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &runner{opts: Options{Size: 10, Count: c.count, Rate: 1000, ResponseTimeout: time.Hour},
				interval: ms, body: newBodyPattern(10), changed: make(chan struct{}, 1)}
			p := &pair{r: r, head: []byte(" SEND\r\nTo-Path: x\r\nMessage-ID: m")}
			p.a = &mconn{bw: newGatherWriter(io.Discard, writeBufSize)}
			p.initWindow(8)
			for _, now := range c.wakes {
				p.pump(now)
				// The window empties between wake-ups (every SEND answered).
				for i := range p.slots {
					if p.slots[i].inUse {
						p.finishSlot(int32(i), true)
					}
				}
			}
			s := schedule(r, []*pair{p}, c.stopAt)
			if s.Started != c.wantStarted || s.Behind != c.wantBehind || s.Late != c.wantLate || s.Kept() != c.kept {
				t.Fatalf("%+v, want started %d behind %d late %d kept %v", *s, c.wantStarted, c.wantBehind, c.wantLate, c.kept)
			}
			if p.nextSched != p.started*ms {
				t.Fatalf("next scheduled at %d, want %d: the schedule must not move with the wake-ups", p.nextSched, p.started*ms)
			}
		})
	}
}

// With -rate and the window full the ticker parks until the sweep; the
// 200 that frees a slot must wake it, or the next message waits for the
// sweep (up to a second) and the rate falls behind.
func TestRateTickerUnparked(t *testing.T) {
	hour := int64(time.Hour)
	r := &runner{opts: Options{Size: 10, Rate: 1, ResponseTimeout: time.Hour},
		interval: hour, body: newBodyPattern(10), changed: make(chan struct{}, 1), start: time.Now()}
	aEnd, relayEnd := loopback(t)
	br := bufio.NewReaderSize(aEnd, readBufSize)
	p := &pair{r: r, head: []byte(" SEND\r\nTo-Path: x\r\nFrom-Path: y\r\nMessage-ID: m")}
	p.a = &mconn{nc: aEnd, br: br, rd: msrp.NewReader(br, msrp.Limits{}), bw: newGatherWriter(aEnd, writeBufSize)}
	p.initWindow(1)
	p.nextSweep = 2 * hour
	p.pump(0) // the window of 1 is full
	p.flushA()
	if next := p.nextWake(0); next != p.nextSweep || !p.parked {
		t.Fatalf("window full: next wake %d parked %v, want the sweep, parked", next, p.parked)
	}
	done := make(chan struct{})
	go func() { defer close(done); p.readA() }()
	defer func() { p.closing.Store(true); _ = aEnd.Close(); <-done }()

	rd := msrp.NewReader(bufio.NewReader(relayEnd), msrp.Limits{})
	f, err := rd.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	tid := string(f.TransactID)
	if _, err := fmt.Fprintf(relayEnd, "MSRP %s 200 OK\r\nTo-Path: y\r\nFrom-Path: x\r\n-------%s$\r\n", tid, tid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the 200 that freed the window did not wake the parked ticker")
	}
}
