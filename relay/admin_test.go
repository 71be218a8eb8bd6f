package relay_test

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// Sessions and Connections list what the relay holds, with per-session
// frame and byte counts equal to what the Observer saw; KillSession makes
// the session's next request get 481 and leaves its connection open;
// KillConnection closes a connection with CloseAdmin, reported.
func TestSessionsConnectionsKill(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	sa, sb := sidOf(useA), sidOf(useB)
	const n = 3
	var mids []string
	for i := range n {
		res, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{
			Body: make([]byte, 100*(i+1)), ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		receive(t, b, "SEND")
		mids = append(mids, res.MessageID)
	}
	var inBytes, outBytes uint64
	for _, mid := range mids {
		in := tr.obs.waitFor(t, "SEND in", func(e recEvent) bool { return e.kind == event.FrameIn && e.messageID == mid && e.method == "SEND" })
		out := tr.obs.waitFor(t, "SEND out", func(e recEvent) bool { return e.kind == event.FrameOut && e.messageID == mid && e.method == "SEND" })
		inBytes += uint64(in.size)
		outBytes += uint64(out.size)
	}
	byID := map[string]relay.SessionInfo{}
	for _, s := range tr.Sessions() {
		byID[s.ID] = s
	}
	if len(byID) != 2 {
		t.Fatalf("%d sessions, want 2: %+v", len(byID), byID)
	}
	ia, ib := byID[sa], byID[sb]
	if ia.User != "alice" || ib.User != "bob" || ia.Transport != "msrp" || !ia.Expires.After(ia.Created) {
		t.Errorf("sessions: %+v %+v", ia, ib)
	}
	if ia.FramesIn != n || ia.BytesIn != inBytes || ia.FramesOut != 0 {
		t.Errorf("alice: frames in %d bytes in %d out %d, want %d, %d, 0", ia.FramesIn, ia.BytesIn, ia.FramesOut, n, inBytes)
	}
	if ib.FramesOut != n || ib.BytesOut != outBytes || ib.FramesIn != 0 {
		t.Errorf("bob: frames out %d bytes out %d in %d, want %d, %d, 0", ib.FramesOut, ib.BytesOut, ib.FramesIn, n, outBytes)
	}
	conns := tr.Connections()
	if len(conns) != 2 {
		t.Fatalf("%d connections, want 2", len(conns))
	}
	for _, c := range conns {
		want := ia
		if c.ID == ib.ConnID {
			want = ib
		}
		if c.ID != want.ConnID || c.Remote != want.Remote || c.Dir != event.DirIn || c.Transport != "msrp" ||
			!slices.Equal(c.Sessions, []string{want.ID}) || !slices.Equal(c.Users, []string{want.User}) || c.Created.IsZero() {
			t.Errorf("connection %+v does not match session %+v", c, want)
		}
	}

	if err := tr.KillSession("nosuch"); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("KillSession(unknown) = %v, want ErrNotFound", err)
	}
	if err := tr.KillSession(sa); err != nil {
		t.Fatal(err)
	}
	_, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("x"), ContentType: "text/plain"})
	if c := statusCode(t, err); c != 481 {
		t.Fatalf("SEND after KillSession: %d, want 481", c)
	}
	if len(tr.Sessions()) != 1 || len(tr.Connections()) != 2 {
		t.Errorf("after KillSession: %d sessions, %d connections, want 1 and 2", len(tr.Sessions()), len(tr.Connections()))
	}

	if err := tr.KillConnection(12345); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("KillConnection(unknown) = %v, want ErrNotFound", err)
	}
	if err := tr.KillConnection(ib.ConnID); err != nil {
		t.Fatal(err)
	}
	tr.obs.waitFor(t, "closed by admin", func(e recEvent) bool {
		return e.kind == event.Closed && e.conn.ID == ib.ConnID && e.reason == event.CloseAdmin
	})
	if s := tr.Sessions(); len(s) != 0 {
		t.Errorf("sessions after killing bob's connection: %+v", s)
	}
	for _, c := range tr.Connections() {
		if c.ID == ib.ConnID {
			t.Errorf("killed connection still listed")
		}
	}
	if event.CloseAdmin.String() != "admin-kill" {
		t.Errorf("CloseAdmin is %q", event.CloseAdmin.String())
	}
}

// wireRecorder is a recorder with the two switches of a fan-out: Enabled
// (frames reported) and Wire (their bytes copied).
type wireRecorder struct {
	*recorder
	wire atomic.Bool
}

func (w *wireRecorder) Enabled() bool { return true }
func (w *wireRecorder) Wire() bool    { return w.wire.Load() }

// Two-level capture: with Wire() false the relay reports every frame with
// its metadata and size but no wire bytes; with Wire() true it copies them.
func TestTwoLevelCapture(t *testing.T) {
	wr := &wireRecorder{recorder: newRecorder()}
	tr := startRelay(t, func(c *relay.Config) { c.Observer = wr })
	tr.obs = wr.recorder
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	send := func() string {
		res, err := a.Send(ctxT(t), []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("two levels"), ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		receive(t, b, "SEND")
		return res.MessageID
	}
	check := func(mid string, wantWire bool) {
		t.Helper()
		var in recEvent
		for _, k := range []event.Kind{event.FrameIn, event.FrameOut} {
			e := tr.obs.waitFor(t, k.String(), func(e recEvent) bool { return e.kind == k && e.messageID == mid && e.method == "SEND" })
			if k == event.FrameIn {
				in = e
			}
			if e.size <= 0 {
				t.Errorf("%v: size %d", k, e.size)
			}
			if got := len(e.wire) > 0; got != wantWire || (wantWire && int64(len(e.wire)) != e.size) {
				t.Errorf("%v with Wire() %v: %d wire bytes of %d", k, wantWire, len(e.wire), e.size)
			}
		}
		// The relay's own 200 to A (same transact-id), written by the writer goroutine.
		ok := tr.obs.waitFor(t, "200 out", func(e recEvent) bool { return e.kind == event.FrameOut && e.status == 200 && e.tid == in.tid })
		if got := len(ok.wire) > 0; got != wantWire || ok.size <= 0 {
			t.Errorf("relay's 200 with Wire() %v: %d wire bytes of %d", wantWire, len(ok.wire), ok.size)
		}
	}
	check(send(), false)
	wr.wire.Store(true)
	check(send(), true)
}
