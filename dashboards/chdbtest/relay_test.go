//go:build chdb

package chdbtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/tracer/event"
)

const node = "relay-a"

// recorder turns every event a relay reports into the row the storage writer would store.
type recorder struct {
	mu     sync.Mutex
	frames []storage.Frame
	events []storage.ConnEvent
	signal chan struct{}
}

func (r *recorder) Observe(e *event.Event) {
	r.mu.Lock()
	if storage.IsFrame(e) {
		f := storage.FrameRow(e, 256, node)
		f.BatchID = 1
		r.frames = append(r.frames, f)
	} else {
		c := storage.EventRow(e, node)
		c.BatchID = 1
		r.events = append(r.events, c)
	}
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// wait waits until ok holds for the recorded rows.
func (r *recorder) wait(t *testing.T, what string, ok func([]storage.Frame, []storage.ConnEvent) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		done := ok(r.frames, r.events)
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

func count[T any](rows []T, keep func(T) bool) int {
	n := 0
	for _, x := range rows {
		if keep(x) {
			n++
		}
	}
	return n
}

// run is a relay run's rows and the relay's listening port.
type run struct {
	frames []storage.Frame
	events []storage.ConnEvent
	port   uint16
}

// relayRun starts a relay on loopback with alice and bob, makes a failed AUTH (mallory, then her
// connection closed), and relays n SENDs alice to bob; it returns every row the relay reported.
func relayRun(t *testing.T, n int) run {
	t.Helper()
	users := auth.NewUsers()
	for name, pw := range map[string]string{"alice": "alice-pw", "bob": "bob-pw"} {
		if err := users.Add(auth.User{Name: name, Password: pw}); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{signal: make(chan struct{}, 1)}
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
	addr, uri := rl.Addrs()[0], rl.URIs()[0].String()
	dial := func(user, pw string) (*msrpclient.Client, string, error) {
		c, err := msrpclient.Dial(ctx, addr.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		use, _, err := c.Auth(ctx, uri, user, pw, 0)
		return c, use, err
	}
	m, _, err := dial("mallory", "guess")
	if err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	_ = m.Close()
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
	// Every SEND in and out, bob's 200 for each back at the relay, and mallory's close.
	rec.wait(t, "SEND frames and a close", func(fs []storage.Frame, es []storage.ConnEvent) bool {
		return count(fs, isSend("in")) == n && count(fs, isSend("out")) == n &&
			count(fs, func(f storage.Frame) bool { return f.Status == 200 && f.Direction == "in" }) == n &&
			count(es, func(e storage.ConnEvent) bool { return e.Event == "closed" }) >= 1
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return run{
		frames: append([]storage.Frame(nil), rec.frames...),
		events: append([]storage.ConnEvent(nil), rec.events...),
		port:   uint16(addr.(*net.TCPAddr).Port),
	}
}
