package relay_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// sidOf returns the session-id of a Use-Path URI.
func sidOf(use string) string {
	return use[strings.LastIndexByte(use, '/')+1 : strings.LastIndexByte(use, ';')]
}

// Frames carry the relay sessions of their sender's and receiver's side
// (event.FrameInfo.FromSession, ToSession): a SEND in and its copy out, the
// responses of its transaction, an end-to-end REPORT the other way, and an
// AUTH with the session its 200 creates. The relay builds no chat key.
func TestFramesReportSessions(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	sa, sb := sidOf(useA), sidOf(useB)
	res, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{
		Body: []byte("sessions"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil {
		t.Fatal(err)
	}
	receive(t, b, "SEND")
	receive(t, a, "REPORT")
	// Responses are matched by transact-id: the relay's 200 to A has the
	// SEND's, B's 200 has the one the relay gave the copy.
	byMID := func(what string, kind event.Kind, method, mid string) recEvent {
		return tr.obs.waitFor(t, what, func(e recEvent) bool { return e.kind == kind && e.method == method && e.messageID == mid })
	}
	byTID := func(what string, kind event.Kind, status int, tid string) recEvent {
		return tr.obs.waitFor(t, what, func(e recEvent) bool { return e.kind == kind && e.status == status && e.tid == tid })
	}
	sendIn := byMID("SEND in from A", event.FrameIn, "SEND", res.MessageID)
	sendOut := byMID("SEND out to B", event.FrameOut, "SEND", res.MessageID)
	for _, c := range []struct {
		what     string
		e        recEvent
		from, to string
	}{
		{"SEND in from A", sendIn, sa, sb},
		{"SEND out to B", sendOut, sa, sb},
		{"200 out to A", byTID("200 out to A", event.FrameOut, 200, sendIn.tid), sa, sb},
		{"B's 200 in", byTID("B's 200 in", event.FrameIn, 200, sendOut.tid), sa, sb},
		{"B's REPORT in", byMID("B's REPORT in", event.FrameIn, "REPORT", res.MessageID), sb, sa},
		{"B's REPORT out to A", byMID("B's REPORT out to A", event.FrameOut, "REPORT", res.MessageID), sb, sa},
	} {
		if c.e.from != c.from || c.e.to != c.to {
			t.Errorf("%s: sessions from %q to %q, want from %q to %q", c.what, c.e.from, c.e.to, c.from, c.to)
		}
	}
	// A's AUTHs: the first (401) belongs to no session; the second and its
	// 200 to the session the 200 creates.
	var auths, oks []recEvent
	tr.obs.mu.Lock()
	for _, e := range tr.obs.events {
		if e.conn.Remote.String() != a.LocalURI()[len("msrp://"):strings.LastIndexByte(a.LocalURI(), '/')] {
			continue
		}
		switch {
		case e.kind == event.FrameIn && e.method == "AUTH":
			auths = append(auths, e)
		case e.kind == event.FrameOut && e.method == "" && bytes.Contains(e.wire, []byte("Use-Path: ")):
			oks = append(oks, e)
		}
	}
	tr.obs.mu.Unlock()
	if len(auths) != 2 || len(oks) != 1 {
		t.Fatalf("A's AUTHs in %d, 200s out %d, want 2 and 1", len(auths), len(oks))
	}
	if auths[0].from != "" || auths[1].from != sa || oks[0].from != sa || auths[1].to != "" || oks[0].to != "" {
		t.Fatalf("AUTH sessions: 1st %q, 2nd %q/%q, 200 %q/%q; want \"\", %q, %q", auths[0].from, auths[1].from, auths[1].to,
			oks[0].from, oks[0].to, sa, sa)
	}
}

// A frame in is stamped when its first byte arrived, a frame out when it
// starts out: a forwarded frame is never stamped before the frame it
// copies (a time-sorted trace shows A → relay before relay → B), nor a
// response before the request it answers.
func TestForwardedFrameNotBeforeItsSource(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	const n = 5
	ids := make([]string, n)
	for i := range n {
		// A body large enough that reading it takes measurable time.
		res, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{
			Body: bytes.Repeat([]byte{'a' + byte(i)}, 256<<10), ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		receive(t, b, "SEND")
		ids[i] = res.MessageID
	}
	for _, id := range ids {
		of := func(kind event.Kind, method string, status int) recEvent {
			return tr.obs.waitFor(t, fmt.Sprintf("%v %s %d of %s", kind, method, status, id), func(e recEvent) bool {
				return e.kind == kind && e.method == method && e.status == status && e.messageID == id
			})
		}
		in, out := of(event.FrameIn, "SEND", 0), of(event.FrameOut, "SEND", 0)
		ok := tr.obs.waitFor(t, "200 out of "+id, func(e recEvent) bool {
			return e.kind == event.FrameOut && e.status == 200 && e.tid == in.tid
		})
		if out.time.Before(in.time) {
			t.Errorf("SEND %s: out at %v, %v before its source came in", id, out.time, in.time.Sub(out.time))
		}
		if ok.time.Before(in.time) {
			t.Errorf("SEND %s: 200 out %v before the SEND came in", id, in.time.Sub(ok.time))
		}
	}
}

// Connection ids are unique per relay instance (random high 32 bits),
// so "conn-<id>" does not repeat between relays feeding one collector or
// after a restart.
func TestConnIDsDisjointBetweenRelays(t *testing.T) {
	r1 := startRelay(t, nil)
	r2 := startRelay(t, nil)
	ids := map[uint64]string{}
	for _, tr := range []*testRelay{r1, r2} {
		for range 3 {
			nc, err := net.Dial("tcp", tr.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
		}
		for _, e := range tr.obs.waitCount(t, "accepted", 3, func(e recEvent) bool { return e.kind == event.Accepted }) {
			if other, dup := ids[e.conn.ID]; dup {
				t.Fatalf("connection id %#x used by %s and %s", e.conn.ID, other, tr.uri)
			}
			ids[e.conn.ID] = tr.uri
		}
	}
	var high [2]map[uint64]bool
	for i, tr := range []*testRelay{r1, r2} {
		high[i] = map[uint64]bool{}
		for id, u := range ids {
			if u == tr.uri {
				high[i][id>>32] = true
			}
		}
	}
	if len(high[0]) != 1 || len(high[1]) != 1 {
		t.Fatalf("one relay's ids have several high halves: %v", high)
	}
	for h := range high[0] {
		if high[1][h] {
			t.Fatalf("both relays' ids have high half %#x", h)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// panicky is an Observer that panics once, on the first frame whose wire
// bytes contain a marker; otherwise it hands events on.
type panicky struct {
	next     event.Observer
	marker   []byte
	panicked atomic.Bool
}

func (p *panicky) Observe(e *event.Event) {
	if e.Frame != nil && bytes.Contains(e.Frame.Wire, p.marker) && p.panicked.CompareAndSwap(false, true) {
		panic("observer bug on this frame")
	}
	p.next.Observe(e)
}

// A panic while handling one connection (here: an Observer's, on a frame
// that connection sent) closes that connection only, counted and traced;
// the relay keeps serving the others.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	var logs syncBuffer
	tr := startRelay(t, func(c *relay.Config) {
		c.Observer = &panicky{next: c.Observer, marker: []byte("kaboom")}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	c, useC := client(t, tr, "carol", msrpclient.Options{})
	// Load on other connections while one panics: C sends to B without pause.
	const loadN = 300
	loadErr := make(chan error, 1)
	go func() {
		for i := range loadN {
			if _, err := c.Send(ctxT(t), []string{useC, useB, b.LocalURI()}, msrpclient.Message{Body: fmt.Appendf(nil, "load-%d", i), ContentType: "text/plain"}); err != nil {
				loadErr <- err
				return
			}
		}
		loadErr <- nil
	}()
	_, _ = a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("kaboom"), ContentType: "text/plain"})
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the connection whose handling panicked is still open")
	}
	if err := <-loadErr; err != nil {
		t.Fatalf("SEND C→B while A's connection panicked: %v", err)
	}
	for got := 0; got < loadN; {
		if r := receive(t, b, "SEND"); strings.HasPrefix(string(r.Body), "load-") {
			got++
		}
	}
	tr.obs.waitFor(t, "closed(internal-error)", func(e recEvent) bool {
		return e.kind == event.Closed && e.reason == event.ClosePanic
	})
	// Logged at ERROR with the stack (the Closed event follows the log).
	if l := logs.String(); !strings.Contains(l, `level=ERROR msg="connection handler panicked"`) ||
		!strings.Contains(l, "observer bug on this frame") || !strings.Contains(l, "runtime/debug.Stack") {
		t.Fatalf("log:\n%s", l)
	}
	if event.ClosePanic.String() != "internal-error" {
		t.Fatalf("ClosePanic is %q", event.ClosePanic)
	}
	// The others still relay, both ways.
	if _, err := c.Send(ctxT(t), []string{useC, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("still here"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("SEND C→B after the panic: %v", err)
	}
	for {
		if got := receive(t, b, "SEND"); string(got.Body) == "still here" {
			break
		}
	}
	if _, err := b.Send(ctxT(t), []string{useB, useC, c.LocalURI()}, msrpclient.Message{Body: []byte("and back"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("SEND B→C after the panic: %v", err)
	}
	if got := receive(t, c, "SEND"); string(got.Body) != "and back" {
		t.Fatalf("C got %q", got.Body)
	}
	if st := tr.Stats(); st.Panics != 1 {
		t.Fatalf("Stats.Panics %d, want 1", st.Panics)
	}
}

// A relayed response to an AUTH through two relays (RFC 4976 §5.1) carries
// From-Path "R1 R2": R1 puts its URI in front of R2's (RFC 4976 §6.4.3).
func TestRelayedAuthResponseFromPath(t *testing.T) {
	r1 := startRelay(t, nil)
	r2 := startRelay(t, nil)
	a, _ := client(t, r1, "alice", msrpclient.Options{})
	if _, _, err := a.AuthPath(ctxT(t), []string{r1.uri, r2.uri}, "alice", testUsers["alice"], 0); err != nil {
		t.Fatalf("AUTH at R2 through R1: %v", err)
	}
	want := []byte("\r\nFrom-Path: " + r1.uri + " " + r2.uri + "\r\n")
	for _, code := range []int{401, 200} {
		e := r1.obs.waitFor(t, fmt.Sprintf("relayed %d out", code), func(e recEvent) bool {
			return e.kind == event.FrameOut && e.status == code && bytes.Contains(e.wire, []byte("\r\nFrom-Path: "+r1.uri+" "))
		})
		if !bytes.Contains(e.wire, want) {
			t.Fatalf("relayed %d:\n%s\nwant From-Path %q", code, e.wire, want)
		}
	}
}

// A full write queue applies back-pressure (issue 14 defect 1): the relay
// stops reading the requests of a peer that does not read what is queued for
// it (responses) until the queue drains, instead of closing it. A peer that
// reads, however slowly, gets every response; a peer that never reads is
// closed after send_timeout, counted in Stats.QueueFull.
func TestWriteQueueFull(t *testing.T) {
	t.Run("reads-late", func(t *testing.T) {
		tr := startRelay(t, func(c *relay.Config) {
			c.Limits.WriteQueue = 2
			c.Limits.SendTimeout = time.Minute
		})
		nc, batch, per := queueFullPeer(t, tr)
		// Write without reading until the relay stops reading us.
		written := 0
		for written < 100_000*per {
			_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second)) // no progress for 2 s: stalled
			n, err := nc.Write(batch)
			written += n
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("after %d requests: %v (want back-pressure, not a close)", written/per, err)
			}
		}
		if written >= 100_000*per {
			t.Fatal("the relay kept reading requests while their responses were not read")
		}
		// Now read every response while writing the rest of the last
		// request and some more.
		_ = nc.SetWriteDeadline(time.Time{})
		want := (written+per-1)/per + 100
		stream := append(append([]byte(nil), batch[written%len(batch):]...), batch...)
		rest := stream[:want*per-written]
		go func() { _, _ = nc.Write(rest) }()
		got := countResponses(t, nc, want)
		if got != want {
			t.Fatalf("%d responses, want %d", got, want)
		}
		if st := tr.Stats(); st.QueueFull != 0 {
			t.Fatalf("Stats.QueueFull %d with a peer that reads", st.QueueFull)
		}
		for _, e := range tr.obs.snapshot() {
			if e.kind == event.Closed {
				t.Fatalf("connection closed (%v) although the peer reads", e.reason)
			}
		}
	})
	t.Run("never-reads", func(t *testing.T) {
		tr := startRelay(t, func(c *relay.Config) {
			c.Limits.WriteQueue = 2
			c.Limits.SendTimeout = 500 * time.Millisecond
		})
		nc, batch, _ := queueFullPeer(t, tr)
		go func() {
			for {
				if _, err := nc.Write(batch); err != nil {
					return
				}
			}
		}()
		e := tr.obs.waitFor(t, "closed", func(e recEvent) bool { return e.kind == event.Closed })
		if e.reason != event.CloseSendTimeout && e.reason != event.CloseLimit {
			t.Fatalf("closed with reason %v, want send-timeout or limit", e.reason)
		}
		if st := tr.Stats(); st.QueueFull != 1 {
			t.Fatalf("Stats.QueueFull %d, want 1", st.QueueFull)
		}
	})
}

// queueFullPeer connects with a small receive buffer and returns a batch
// of 100 requests that each get a response (481), and a request's size.
func queueFullPeer(t *testing.T, tr *testRelay) (net.Conn, []byte, int) {
	nc, err := net.Dial("tcp", tr.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	// Small, to fill soon; not below the loopback MSS, or the receiver
	// withholds window updates (silly window avoidance) and reading stalls.
	_ = nc.(*net.TCPConn).SetReadBuffer(128 << 10)
	var batch []byte
	per := 0
	for i := range 100 {
		n := len(batch)
		// A long From-Path URI: large responses fill the relay's socket
		// buffers (autotuned up to megabytes) after fewer requests.
		batch = fmt.Appendf(batch, "MSRP q%07d SEND\r\nTo-Path: %s\r\nFrom-Path: msrp://%s/%s;tcp\r\nMessage-ID: m%07d\r\n-------q%07d$\r\n",
			i, strings.Replace(tr.uri, ";tcp", "/nosuchsession;tcp", 1), nc.LocalAddr(), strings.Repeat("c", 2000), i, i)
		if per = len(batch) - n; i > 0 && per != len(batch)/(i+1) {
			t.Fatal("requests of different sizes")
		}
	}
	return nc, batch, per
}

// countResponses reads responses from nc until want arrived or nc fails.
func countResponses(t *testing.T, nc net.Conn, want int) int {
	rd := msrp.NewReader(bufio.NewReaderSize(nc, 512), msrp.Limits{})
	got := 0
	for got < want {
		_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		f, err := rd.ReadFrame()
		if err != nil {
			t.Logf("after %d responses: %v", got, err)
			return got
		}
		if f.IsRequest() || f.StatusCode != 481 {
			t.Fatalf("unexpected frame %s %d", f.Method, f.StatusCode)
		}
		got++
	}
	return got
}

// panicOnDial is an Observer that panics on the first connect-start event.
type panicOnDial struct {
	next     event.Observer
	panicked atomic.Bool
}

func (p *panicOnDial) Observe(e *event.Event) {
	if e.Kind == event.ConnectStart && p.panicked.CompareAndSwap(false, true) {
		panic("observer bug on connect-start")
	}
	p.next.Observe(e)
}

// A panic while a connection dials a next hop closes that connection; the
// next request to the same next hop, from another connection, is relayed
// (it does not wait forever for the dial that broke off).
func TestPanicWhileDialling(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Observer = &panicOnDial{next: c.Observer} })
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	hop := fakeHop(t, 200)
	_, _ = a.Send(ctxT(t), []string{useA, hop}, msrpclient.Message{Body: []byte("first"), ContentType: "text/plain"})
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the connection whose dial panicked is still open")
	}
	res, err := b.Send(ctxT(t), []string{useB, hop}, msrpclient.Message{Body: []byte("second"), ContentType: "text/plain"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND to the same next hop after the panic: %+v %v", res, err)
	}
	// The connect runs beside the forwarding: counted before it is observed.
	tr.obs.waitFor(t, "connected", func(e recEvent) bool { return e.kind == event.Connected && e.conn.Dir == event.DirOut })
	if st := tr.Stats(); st.Panics != 1 || st.Dialled != 1 {
		t.Fatalf("Panics %d, Dialled %d; want 1 and 1", st.Panics, st.Dialled)
	}
}
