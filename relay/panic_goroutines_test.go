package relay_test

import (
	"crypto/tls"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// panicOn is an Observer that panics once, on the first event when matches.
type panicOn struct {
	next     event.Observer
	when     func(e *event.Event) bool
	armed    atomic.Bool
	panicked atomic.Bool
}

func (p *panicOn) Observe(e *event.Event) {
	if p.armed.Load() && p.when(e) && p.panicked.CompareAndSwap(false, true) {
		panic("observer bug on " + e.Kind.String())
	}
	p.next.Observe(e)
}

// A panic in each goroutine that handles a connection — its writer (a
// queued frame going out: a REPORT the sweeper queued for a transaction
// that timed out; a read loop writes its own responses itself), the
// accept-time goroutine (the accepted
// event), the TLS handshake, the closing (the closed event) — is recovered
// there: counted, that connection closed, and the relay serves on.
func TestPanicInEveryConnectionGoroutine(t *testing.T) {
	pki := newPKI(t)
	cases := []struct {
		name, where string // where: the goroutine recoverConn names
		tls         bool
		when        func(e *event.Event) bool
	}{
		{"writer", "writer", false, func(e *event.Event) bool {
			return e.Kind == event.FrameOut && string(e.Frame.Method) == "REPORT"
		}},
		{"accepted", "accepted event", false, func(e *event.Event) bool { return e.Kind == event.Accepted }},
		{"tls handshake", "TLS handshake", true, func(e *event.Event) bool { return e.Kind == event.TLSHandshake }},
		{"closed", "closed event", false, func(e *event.Event) bool { return e.Kind == event.Closed }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &panicOn{when: tc.when}
			logs := &signalLog{signal: make(chan struct{}, 1)}
			tr := startRelay(t, func(c *relay.Config) {
				p.next = c.Observer
				c.Observer = p
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
				if tc.tls {
					c.Listen = []relay.Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: pki.certFile, Key: pki.keyFile}}
				}
				if tc.name == "writer" {
					c.Limits.TransactionTimeout = 200 * time.Millisecond
				}
			})
			dial := func(user string) (*msrpclient.Client, string) {
				if tc.tls {
					return tlsClient(t, tr, pki, user)
				}
				return client(t, tr, user, msrpclient.Options{})
			}
			p.armed.Store(true)
			// The victim: its connection's handling panics somewhere.
			switch tc.name {
			case "writer":
				a, useA := dial("alice")
				b, gb, useB := gatedClient(t, tr, "bob")
				// B's reader answers what its read in progress gets, then
				// reads no more: the second SEND times out and the sweeper
				// queues its REPORT for A.
				gb.stop()
				to := []string{useA, useB, b.LocalURI()}
				_, _ = a.Send(ctxT(t), to, msrpclient.Message{Body: []byte("x"), ContentType: "text/plain"})
				for deadline := time.Now().Add(20 * time.Second); tr.Stats().Transactions != 0; {
					if time.Now().After(deadline) {
						t.Fatal("B did not answer the first SEND")
					}
					runtime.Gosched()
				}
				_, _ = a.Send(ctxT(t), to, msrpclient.Message{Body: []byte("y"), ContentType: "text/plain"})
			case "closed":
				c, _ := dial("carol")
				_ = c.Close()
			default:
				var tc2 *tls.Config
				if tc.tls {
					tc2 = pki.clientTLS()
				}
				if c, err := msrpclient.Dial(ctxT(t), tr.addr(), tc2); err == nil {
					_, _, _ = c.Auth(ctxT(t), tr.uri, "carol", testUsers["carol"], 0)
					_ = c.Close()
				}
			}
			// recoverConn counts, closes the connection, then logs.
			logs.waitFor(t, `msg="connection handler panicked"`)
			if !strings.Contains(logs.String(), "panic in "+tc.where+": observer bug") {
				t.Fatalf("the panic was not recovered in the %s:\n%s", tc.where, logs.String())
			}
			// The relay serves on: a new pair relays a message.
			x, useX := dial("alice")
			y, useY := dial("bob")
			if _, err := x.Send(ctxT(t), []string{useX, useY, y.LocalURI()}, msrpclient.Message{Body: []byte("after"), ContentType: "text/plain"}); err != nil {
				t.Fatalf("SEND after the panic: %v", err)
			}
			if got := receive(t, y, "SEND"); string(got.Body) != "after" {
				t.Fatalf("got %q", got.Body)
			}
			if st := tr.Stats(); st.Panics != 1 {
				t.Fatalf("Stats.Panics %d, want 1", st.Panics)
			}
		})
	}
}

// signalLog is a log output tests wait on.
type signalLog struct {
	syncBuffer
	signal chan struct{}
}

func (l *signalLog) Write(p []byte) (int, error) {
	n, err := l.syncBuffer.Write(p)
	select {
	case l.signal <- struct{}{}:
	default:
	}
	return n, err
}

func (l *signalLog) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.signal:
		case <-deadline:
			t.Fatalf("no %s in the log:\n%s", s, l.String())
		}
	}
}
