package relay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/rawmsrp"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// benchObserver reports accepted connections to the benchmark; with frames
// set it takes every frame event and keeps nothing, as a tracer whose rules
// match would cost the relay (without its sinks' work); without, its switch
// is off and the relay captures nothing.
type benchObserver struct {
	frames   bool
	accepted chan netip.AddrPort
	n        atomic.Int64
	r        *Relay                     // set before Serve
	onFrame  func(*Relay, *event.Event) // when set, called for every frame event
	noWire   atomic.Bool                // Wire() answers false: frame metadata only (the metrics' level)
}

func (o *benchObserver) Enabled() bool { return o.frames }
func (o *benchObserver) Wire() bool    { return !o.noWire.Load() }

func (o *benchObserver) Observe(e *event.Event) {
	if e.Kind == event.Accepted {
		o.accepted <- e.Conn.Remote
	}
	if e.Frame != nil {
		o.n.Add(int64(len(e.Frame.Wire)))
		if o.onFrame != nil {
			o.onFrame(o.r, e)
		}
	}
}

// benchPair is a relay with two raw loopback clients A and B, each holding
// a session made directly in the table (AUTH is not what is measured).
type benchPair struct {
	r      *Relay
	obs    *benchObserver
	raw    *rawmsrp.Pair
	a, b   net.Conn     // raw's A and B
	ar, br *msrp.Reader // their readers
	send   []byte       // A's SEND to B
	toPath string       // its To-Path and From-Path
	fromP  string       //
	sendN  []byte       // burst: n SENDs
}

func newBenchPair(b testing.TB, frames bool, onFrame func(*Relay, *event.Event)) *benchPair {
	obs := &benchObserver{frames: frames, accepted: make(chan netip.AddrPort, 2), onFrame: onFrame}
	cfg := Config{Listen: []Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler), Observer: obs}
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	obs.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	p := &benchPair{r: r, obs: obs}
	dial := func() (net.Conn, *conn) {
		nc, err := net.Dial("tcp", r.Addrs()[0].String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = nc.Close() })
		local := addrPort(nc.LocalAddr())
		if got := <-obs.accepted; got != local {
			b.Fatalf("accepted %v, dialled from %v", got, local)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.conns {
			if c.info.Remote == local {
				return nc, c
			}
		}
		b.Fatal("accepted connection not registered")
		return nil, nil
	}
	var ca, cb *conn
	p.a, ca = dial()
	p.b, cb = dial()
	uriOf := func(nc net.Conn, sid string) string {
		return "msrp://" + nc.LocalAddr().String() + "/" + sid + ";tcp"
	}
	add := func(c *conn, sid string, nc net.Conn) {
		prev, err := msrp.ParseURI(uriOf(nc, "c"))
		if err != nil {
			b.Fatal(err)
		}
		if err := r.sessions.add(&session{id: sid, user: sid, conn: c, prevHop: prev, expires: time.Now().Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
		c.requestOK.Store(true)
	}
	add(ca, "sessa", p.a)
	add(cb, "sessb", p.b)
	relayURI := r.URIs()[0]
	own := func(sid string) string { u := relayURI; u.SessionID = sid; return u.String() }
	body := make([]byte, 100)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	p.toPath, p.fromP = own("sessa")+" "+own("sessb")+" "+uriOf(p.b, "c"), uriOf(p.a, "c")
	p.send = rawmsrp.SEND("a786hjs2", p.toPath, p.fromP, "87652491", body)
	p.raw = rawmsrp.NewPair(p.a, p.b, p.send)
	p.ar, p.br = p.raw.A.R, p.raw.B.R
	return p
}

func drain(b testing.TB, f *msrp.Frame) { rawmsrp.Drain(b, f) }

// one sends one SEND from A to B through the relay, answers it at B and
// waits for the relay's 200 at A.
func (p *benchPair) one(b testing.TB) { p.raw.One(b) }

// burst sends n SENDs from A in one write (pipelined, as a client with n
// in flight), reads them at B, answers all n in one write and reads the n
// 200s at A.
func (p *benchPair) burst(b testing.TB, n int) {
	if len(p.sendN) != n*len(p.send) {
		p.sendN = p.sendN[:0]
		for range n {
			p.sendN = append(p.sendN, p.send...)
		}
	}
	p.raw.Burst(b, p.sendN, n)
}

func benchSEND(b *testing.B, frames, wire bool) {
	p := newBenchPair(b, frames, nil)
	p.obs.noWire.Store(!wire)
	for range 100 { // warm the pools
		p.one(b)
	}
	b.SetBytes(int64(len(p.send)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.one(b)
	}
	b.StopTimer()
	b.ReportMetric(float64(p.r.Stats().Forwarded), "forwarded")
}

// BenchmarkRelaySEND (tracing switched off): one 100-byte SEND A → relay → B, B's 200 back to the
// relay, the relay's 200 to A, over loopback; allocations are the whole
// process's (relay and the raw clients, which allocate nothing).
func BenchmarkRelaySEND(b *testing.B) { benchSEND(b, false, false) }

// BenchmarkRelaySENDObserved: the same with an Observer that takes every
// frame event (captures on).
func BenchmarkRelaySENDObserved(b *testing.B) { benchSEND(b, true, true) }

// BenchmarkRelaySENDMetadata: an Observer that takes every frame event but
// no wire bytes (Wire() false), as the metrics with tracing off.
func BenchmarkRelaySENDMetadata(b *testing.B) { benchSEND(b, true, false) }

// BenchmarkRelaySEND64: 64 SENDs in flight (one write of 64 from A, 64
// 200s in one write from B); ns/op and allocs/op are per SEND.
func BenchmarkRelaySEND64(b *testing.B) {
	p := newBenchPair(b, false, nil)
	for range 10 { // warm the pools
		p.burst(b, 64)
	}
	b.SetBytes(int64(len(p.send)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		p.burst(b, 64)
	}
}
