//go:build chdb

package chdbtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/storage/storagetest"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// rowRecorder turns every event a relay reports into the row the writer would store.
type rowRecorder struct {
	mu     sync.Mutex
	frames []storage.Frame
	events []storage.ConnEvent
	signal chan struct{}
}

func (r *rowRecorder) Observe(e *event.Event) {
	r.mu.Lock()
	if storage.IsFrame(e) {
		f := storage.FrameRow(e, 256, "relay-a")
		f.BatchID = 1
		r.frames = append(r.frames, f)
	} else {
		c := storage.EventRow(e, "relay-a")
		c.BatchID = 1
		r.events = append(r.events, c)
	}
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// waitFrames waits until ok holds for the recorded frames.
func (r *rowRecorder) waitFrames(t *testing.T, what string, ok func([]storage.Frame) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		done := ok(r.frames)
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("no %s within 20s", what)
		}
	}
}

func count(frames []storage.Frame, keep func(storage.Frame) bool) int {
	n := 0
	for _, f := range frames {
		if keep(f) {
			n++
		}
	}
	return n
}

// Rows from a real relay run (AUTH, a failed AUTH, N SENDs relayed alice to bob) stored on 26.7
// with the writer's values: every SEND is a row, the session query returns them in order, the
// AUTH failure is found, and the rollups count every frame.
func TestRelayRunOn267(t *testing.T) {
	const n = 20
	users := auth.NewUsers()
	for name, pw := range map[string]string{"alice": "alice-pw", "bob": "bob-pw"} {
		if err := users.Add(auth.User{Name: name, Password: pw}); err != nil {
			t.Fatal(err)
		}
	}
	rec := &rowRecorder{signal: make(chan struct{}, 1)}
	rl, err := relay.New(relay.Config{
		Listen:   []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:    users,
		Observer: rec,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rl.Serve(serveCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	addr, uri := rl.Addrs()[0].String(), rl.URIs()[0].String()
	dial := func(user, pw string) (*msrpclient.Client, string, error) {
		c, err := msrpclient.Dial(ctx, addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		use, _, err := c.Auth(ctx, uri, user, pw, 0)
		return c, use, err
	}
	if _, _, err := dial("mallory", "guess"); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	a, useA, err := dial("alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	b, useB, err := dial("bob", "bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		res, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{
			Body: []byte(fmt.Sprintf("hello %d", i)), ContentType: "text/plain"})
		if err != nil || res.Chunks[0].Code != 200 {
			t.Fatalf("SEND %d: %+v, %v", i, res, err)
		}
	}
	isSend := func(dir string) func(storage.Frame) bool {
		return func(f storage.Frame) bool { return f.Method == "SEND" && f.Direction == dir }
	}
	// Every SEND in and out, and bob's 200 for each back at the relay.
	rec.waitFrames(t, "SEND frames", func(fs []storage.Frame) bool {
		return count(fs, isSend("in")) == n && count(fs, isSend("out")) == n &&
			count(fs, func(f storage.Frame) bool { return f.Status == 200 && f.Direction == "in" }) == n
	})
	rec.mu.Lock()
	frames := append([]storage.Frame(nil), rec.frames...)
	events := append([]storage.ConnEvent(nil), rec.events...)
	rec.mu.Unlock()

	s := modern("msrpscope_relay")
	migrate(t, s)
	exec(t, storagetest.InsertSQL(s, frames))
	exec(t, storagetest.EventsInsertSQL(s, events))

	got := rows(t, "SELECT count() AS n FROM msrpscope_relay.frames WHERE method = 'SEND' AND direction = 'in'", nil)
	if fmt.Sprint(got) != fmt.Sprintf("[map[n:%d]]", n) {
		t.Fatalf("SEND rows in: %v, want %d", got, n)
	}
	got = rows(t, "SELECT sum(frames) AS n FROM msrpscope_relay.frames_per_minute", nil)
	if fmt.Sprint(got) != fmt.Sprintf("[map[n:%d]]", len(frames)) {
		t.Fatalf("frames rollup: %v, want %d", got, len(frames))
	}

	q := storage.Queries{Schema: s}
	var first storage.Frame
	for _, f := range frames {
		if f.Method == "SEND" && f.Direction == "in" {
			first = f
			break
		}
	}
	check := func(name string, query storage.Query, want []storage.Frame) {
		t.Helper()
		got, err := engine.Rows(query.SQL, query.Params)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || count(want, isSend("in")) != n {
			t.Fatalf("%s: %d rows, want %d (%d SENDs in, want %d)", name, len(got), len(want), count(want, isSend("in")), n)
		}
		for i, r := range got {
			if g, w := printRow(t, "frames", r), storagetest.Key(want[i]); g != w {
				t.Fatalf("%s row %d:\n got %s\nwant %s", name, i, g, w)
			}
		}
	}
	// alice's SENDs by their correlation id, in order.
	check("correlation "+first.CorrelationID, q.CorrelationFrames(first.CorrelationID, 0),
		storagetest.Select(frames, func(f storage.Frame) bool { return f.CorrelationID == first.CorrelationID }))
	if first.SessionID == "" {
		t.Fatalf("alice's first SEND row carries no session id (correlation id %q)", first.CorrelationID)
	}
	check("session "+first.SessionID, q.SessionFrames(first.SessionID, 0),
		storagetest.Select(frames, func(f storage.Frame) bool {
			return f.SessionID == first.SessionID || f.PeerSessionID == first.SessionID
		}))
	// The failed AUTH: mallory from 127.0.0.1.
	aq := q.AuthFailures(time.Time{}, time.Time{})
	arows, err := engine.Rows(aq.SQL, aq.Params)
	if err != nil {
		t.Fatal(err)
	}
	var fails []string
	for _, r := range arows {
		fails = append(fails, printRow(t, "auth", r))
	}
	if strings.Join(fails, ";") != "mallory 127.0.0.1 1" {
		t.Fatalf("AUTH failures %q, want mallory from 127.0.0.1 once", fails)
	}
}
