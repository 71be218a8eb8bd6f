package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// The idle deadline comes from the relay's coarse clock (Relay.now),
// which the sweeper advances once Serve runs. A relay made with New and
// served later (a daemon opens its sinks, its admin API, in between)
// must not give its first connections an idle deadline that is already
// past: a client that connects right after Serve starts and stays idle
// for less than idle_timeout keeps its connection.
func TestReviewIdleDeadlineAfterLateServe(t *testing.T) {
	const idle = 3 * time.Second
	cfg := Config{Listen: []Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler)}
	cfg.Limits.IdleTimeout = idle
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Time passes between New and Serve: longer than idle_timeout.
	<-time.After(idle + time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := net.Dial("tcp", r.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(idle / 2))
	_, err = nc.Read(make([]byte, 1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Still open half an idle_timeout later, as it must be.
	case errors.Is(err, io.EOF) || err != nil:
		t.Fatalf("closed after %v of idle_timeout %v: %v", time.Since(start).Round(time.Millisecond), idle, err)
	default:
		t.Fatal("the relay sent something to a silent client")
	}
}

// closeRec passes events to the batch relay's observer and keeps the
// close reason of each connection by its remote address.
type closeRec struct {
	inner  *benchObserver
	closed chan closeOf
}

type closeOf struct {
	remote netip.AddrPort
	reason event.CloseReason
	at     time.Time
}

func (o *closeRec) Enabled() bool { return o.inner.Enabled() }
func (o *closeRec) Observe(e *event.Event) {
	if e.Kind == event.Closed {
		select {
		case o.closed <- closeOf{e.Conn.Remote, e.Reason, time.Now()}:
		default:
		}
	}
	o.inner.Observe(e)
}

// Read deadlines are set lazily (when a socket read comes) and idle ones
// from a coarse clock: every limit still cuts a peer that stops or drips,
// including when the stalled frame began in a burst behind a whole one
// (the read loop reads no socket between them). Each case is closed with
// its own reason, not before half its limit, and well before a broken
// build would (idle_timeout and the others are an hour there).
func TestReviewDeadlinesAfterBurst(t *testing.T) {
	const lim = 1500 * time.Millisecond
	for _, tc := range []struct {
		name   string
		set    func(l *Limits)
		reason event.CloseReason
		after  []byte // sent right behind a whole SEND
		drip   []byte // then sent one byte every 100 ms
	}{
		{name: "idle after a frame", set: func(l *Limits) { l.IdleTimeout = lim }, reason: event.CloseIdleTimeout},
		{name: "header stalls", set: func(l *Limits) { l.HeaderTimeout = lim }, reason: event.CloseHeaderTimeout,
			after: []byte("MSRP slow1 SEND\r\nTo-Pa")},
		{name: "header drips", set: func(l *Limits) { l.HeaderTimeout = lim }, reason: event.CloseHeaderTimeout,
			after: []byte("MSRP slow2 SEND\r\n"), drip: []byte(strings.Repeat("X-Drip: y\r\n", 1000))},
		{name: "body stalls", set: func(l *Limits) { l.BodyTimeout = lim }, reason: event.CloseBodyTimeout,
			after: nil /* filled below: a header whose body never ends */},
		{name: "body drips below body_min_rate", set: func(l *Limits) { l.BodyTimeout = lim; l.BodyMinRate = 100 },
			reason: event.CloseBodyTimeout, drip: []byte(strings.Repeat("z", 100000))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *closeRec
			b := newBatchRelay(t, 2, func(c *Config) {
				c.Limits.IdleTimeout, c.Limits.HeaderTimeout, c.Limits.BodyTimeout = time.Hour, time.Hour, time.Hour
				c.Limits.BodyMinRate = 1
				tc.set(&c.Limits)
				rec = &closeRec{inner: c.Observer.(*benchObserver), closed: make(chan closeOf, 16)}
				c.Observer = rec
			})
			go func() { _, _ = b.ncs[0].Read(make([]byte, 1<<20)) }()
			go func() { _ = b.answer(t, 1, 2, func(*msrp.Frame, []byte) error { return nil }) }()
			after := tc.after
			if tc.reason == event.CloseBodyTimeout {
				// A SEND to client 1 whose body (10 kB announced) stops short.
				s := string(b.send(0, 1, "long", bytes.Repeat([]byte("b"), 10000)))
				after = []byte(s[:len(s)-9000])
			}
			start := time.Now()
			if _, err := b.ncs[0].Write(append(b.send(0, 1, "m0", []byte("whole")), after...)); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			defer close(stop)
			if tc.drip != nil {
				go func() {
					tk := time.NewTicker(100 * time.Millisecond)
					defer tk.Stop()
					for i := range tc.drip {
						select {
						case <-stop:
							return
						case <-tk.C:
						}
						if _, err := b.ncs[0].Write(tc.drip[i : i+1]); err != nil {
							return
						}
					}
				}()
			}
			local := addrPort(b.ncs[0].LocalAddr())
			tm := time.NewTimer(lim + 20*time.Second)
			defer tm.Stop()
			for {
				select {
				case e := <-rec.closed:
					if e.remote != local {
						continue
					}
					if e.reason != tc.reason {
						t.Fatalf("closed with %v, want %v", e.reason, tc.reason)
					}
					if d := e.at.Sub(start); d < lim/2 {
						t.Fatalf("closed after %v, limit %v", d, lim)
					}
					return
				case <-tm.C:
					t.Fatalf("not closed %v after the limit of %v (want %v)", 20*time.Second, lim, tc.reason)
				}
			}
		})
	}
}

// RFC 4976 §6.1: first_request_timeout is a total limit for a new inbound
// connection until a request of it succeeds, whatever it sends meanwhile.
// A malformed frame with a transact-id is skipped to its end-line
// (Recover) under body limits: a body dripped into it, fast enough for
// body_min_rate, must still be cut at first_request_timeout.
func TestReviewFirstRequestTimeoutDuringBadFrameSkip(t *testing.T) {
	const first = 1500 * time.Millisecond
	cfg := Config{Listen: []Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler)}
	cfg.Limits.FirstRequestTimeout = first
	cfg.Limits.IdleTimeout, cfg.Limits.HeaderTimeout, cfg.Limits.BodyTimeout = time.Hour, time.Hour, time.Hour
	cfg.Limits.BodyMinRate = 1
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := net.Dial("tcp", r.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	if _, err := io.WriteString(nc, "MSRP bad1 SEND\r\nno colon here\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the "body" of the malformed frame: 10 bytes/s, never its end-line
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			if _, err := nc.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	_ = nc.SetReadDeadline(start.Add(first + 15*time.Second))
	_, err = io.Copy(io.Discard, nc) // the 400, then the close
	// The dripping goroutine may write after the relay closed, so the close
	// can arrive as a reset instead of an end of stream: both are a close.
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("not closed %v after a first_request_timeout of %v: %v", time.Since(start).Round(time.Millisecond), first, err)
	}
	if d := time.Since(start); d < first/2 {
		t.Fatalf("closed after %v", d)
	}
}
