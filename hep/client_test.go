package hep

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitTimeout bounds every wait for an event in these tests; it is a deadlock detector, not a
// timing assertion.
const waitTimeout = 20 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("HEP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// collector is a fake HEP collector on 127.0.0.1 that decodes what it receives.
type collector struct {
	t       *testing.T
	network string // udp, tcp or tls
	addr    string
	tlsConf *tls.Config
	mode    string // "" (read), "refuse" (accept and close at once), "stall" (accept, never read)

	accepted atomic.Int32 // stream connections accepted

	mu      sync.Mutex
	got     []Packet // decoded copies
	bad     int      // undecodable packets
	closers []io.Closer
	done    sync.WaitGroup
}

func newCollector(t *testing.T, network, mode string, tlsConf *tls.Config) *collector {
	c := &collector{t: t, network: network, mode: mode, tlsConf: tlsConf, addr: "127.0.0.1:0"}
	c.start()
	t.Cleanup(c.stop)
	return c
}

// start (re)opens the collector on c.addr (the same port after a stop).
func (c *collector) start() {
	c.t.Helper()
	if c.network == "udp" {
		pc, err := net.ListenPacket("udp", c.addr)
		if err != nil {
			c.t.Fatal(err)
		}
		c.addr = pc.LocalAddr().String()
		// Room for what a burst sends before the reader runs: a datagram the
		// kernel drops here would be lost without any counter knowing.
		if err := pc.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
			c.t.Fatal(err)
		}
		c.mu.Lock()
		c.closers = append(c.closers, pc)
		c.mu.Unlock()
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			buf := make([]byte, 70000)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				c.record(bytes.Clone(buf[:n]))
			}
		}()
		return
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	if c.network == "tls" {
		ln = tls.NewListener(ln, c.tlsConf)
	}
	c.mu.Lock()
	c.closers = append(c.closers, ln)
	c.mu.Unlock()
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			if c.mode == "refuse" {
				conn.Close()
				continue
			}
			c.mu.Lock()
			c.closers = append(c.closers, conn)
			c.mu.Unlock()
			if c.mode == "stall" {
				continue
			}
			c.done.Add(1)
			go func() {
				defer c.done.Done()
				var buf []byte
				for {
					b, err := ReadPacket(conn, buf)
					if err != nil {
						return
					}
					buf = b
					c.record(bytes.Clone(b))
				}
			}()
		}
	}()
}

func (c *collector) record(b []byte) {
	p, err := Decode(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.bad++
		return
	}
	c.got = append(c.got, p)
}

// stop closes the listener and every connection, like a collector that goes down.
func (c *collector) stop() {
	c.mu.Lock()
	cl := c.closers
	c.closers = nil
	c.mu.Unlock()
	for _, x := range cl {
		x.Close()
	}
	c.done.Wait()
}

func (c *collector) connected() bool { return c.accepted.Load() > 0 }

func (c *collector) packets() []Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.got...)
}

func (c *collector) has(cid string) bool {
	for _, p := range c.packets() {
		if string(p.CorrelationID) == cid {
			return true
		}
	}
	return false
}

// freeAddr returns a loopback address nobody listens on (network "udp" or "tcp").
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := pc.LocalAddr().String()
		pc.Close()
		return a
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func newTestClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	cfg.Logger = testLogger()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 2*time.Millisecond, 20*time.Millisecond
	}
	c, err := NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// noBlock runs f (a loop of sends) and fails if it does not return: Send must never wait.
func noBlock(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Send blocked")
	}
}

func testPacket(t testing.TB, cid string, size int) []byte {
	p := Packet{IPProto: IPProtoTCP, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:2"),
		ProtoType: ProtoLog, CorrelationID: []byte(cid), Payload: bytes.Repeat([]byte("p"), size)}
	b, err := p.AppendEncode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hep-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool}
}

func TestClientDelivers(t *testing.T) {
	srvTLS, cliTLS := selfSignedTLS(t)
	for _, network := range []string{"udp", "tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			col := newCollector(t, network, "", srvTLS)
			pr := Profile{CaptureID: 2001, AuthKey: []byte("pw"), NodeName: []byte("relay-1"), EventForm: FormJSON}
			c := newTestClient(t, ClientConfig{Transport: Transport(network), Addr: col.addr, TLSConfig: cliTLS, Profile: pr})
			src, dst := netip.MustParseAddrPort("192.0.2.1:40000"), netip.MustParseAddrPort("192.0.2.2:2855")
			const n = 50
			for i := range n {
				m := Meta{Src: src, Dst: dst, CorrelationID: fmt.Appendf(nil, "c%d", i)}
				var ok bool
				switch i % 3 {
				case 0:
					ok = c.SendEvent(m, Event{ProtocolMSRP, EventAccepted, StatusSuccess, "Connection accepted", nil})
				case 1:
					ok = c.SendFrame(m, msrpFrame("t1", []byte("hi"), '$'))
				default:
					ok = c.Send(testPacket(t, string(m.CorrelationID), 10))
				}
				if !ok {
					t.Fatalf("send %d refused: %+v", i, c.Stats())
				}
			}
			waitFor(t, "all packets at the collector", func() bool { return len(col.packets()) == n })
			for i := range n {
				if !col.has(fmt.Sprintf("c%d", i)) {
					t.Errorf("packet c%d missing", i)
				}
			}
			for _, p := range col.packets() {
				if p.ProtoType != ProtoLog {
					t.Errorf("proto type %d", p.ProtoType)
				}
				if p.Payload[0] != 'p' && (p.CaptureID != 2001 || string(p.AuthKey) != "pw" || string(p.NodeName) != "relay-1" || p.Src != src || p.Dst != dst) {
					t.Errorf("profile fields missing: %+v", p)
				}
			}
			waitFor(t, "sent counter", func() bool { return c.Stats().Sent == n })
			if s := c.Stats(); s.Dropped != 0 || s.Errors != 0 || s.Reconnects != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestClientLimitsAndClose(t *testing.T) {
	col := newCollector(t, "tcp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: TCP, Addr: col.addr, Profile: Profile{MaxPacketSize: 1000}})
	// Connected first: Close flushes the queue only to a connected collector.
	c.Send(testPacket(t, "hello", 1))
	waitFor(t, "connection", func() bool { return col.has("hello") })
	if c.Send(testPacket(t, "big", 1200)) {
		t.Error("packet larger than MaxPacketSize accepted")
	}
	if !c.Send(testPacket(t, "small", 100)) {
		t.Error("small packet refused")
	}
	if c.SendEvent(Meta{}, Event{}) {
		t.Error("event without correlation id accepted")
	}
	// The frame is truncated to fit the 1000-byte packet limit instead of being dropped.
	if !c.SendFrame(Meta{CorrelationID: []byte("frame")}, msrpFrame("t", bytes.Repeat([]byte("x"), 5000), '$')) {
		t.Error("frame refused")
	}
	const burst = 200
	for i := range burst {
		c.Send(testPacket(t, fmt.Sprint("b", i), 10))
	}
	c.Close()
	c.Close() // idempotent
	if c.Send(testPacket(t, "late", 10)) || c.SendEvent(Meta{CorrelationID: []byte("x")}, Event{}) || c.SendFrame(Meta{CorrelationID: []byte("x")}, []byte("f")) {
		t.Error("send after Close accepted")
	}
	s := c.Stats()
	attempts := uint64(5 + burst + 3)
	if s.Sent+s.Dropped != attempts || s.Queued != 0 {
		t.Errorf("stats %+v: sent+dropped != %d attempts", s, attempts)
	}
	// Close flushed what was queued to the (healthy) collector.
	waitFor(t, "flushed packets", func() bool { return uint64(len(col.packets())) == s.Sent })
	for _, p := range col.packets() {
		if n := p.EncodedLen(); string(p.CorrelationID) == "frame" && (n > 1000 || !bytes.Contains(p.Payload, []byte(TruncationMarker))) {
			t.Errorf("frame packet: %d bytes, payload %q", n, p.Payload)
		}
	}
	if !col.has("small") || !col.has("frame") || col.has("big") {
		t.Error("wrong packets delivered")
	}
}

func TestNewClientErrors(t *testing.T) {
	for _, cfg := range []ClientConfig{
		{Transport: "sctp", Addr: "127.0.0.1:9060"},
		{Transport: UDP, Addr: "127.0.0.1"},
		{Transport: TCP},
	} {
		if c, err := NewClient(context.Background(), cfg); err == nil {
			c.Close()
			t.Errorf("%+v: no error", cfg)
		}
	}
	// Context cancellation stops the client like Close.
	ctx, cancel := context.WithCancel(context.Background())
	c, err := NewClient(ctx, ClientConfig{Transport: UDP, Addr: "127.0.0.1:9", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitFor(t, "writer exit", func() bool { return c.closed.Load() })
	if c.Send([]byte("x")) {
		t.Error("send after context cancel accepted")
	}
	c.Close()
}

// TestClientCollectorDown: nothing listens. Sends never block, the queue overflows into counted
// drops, dials fail and are counted; when a collector appears, delivery starts.
func TestClientCollectorDown(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			addr := freeAddr(t, network)
			c := newTestClient(t, ClientConfig{Transport: Transport(network), Addr: addr, QueueSize: 8})
			const n = 500
			accepted := 0
			noBlock(t, func() {
				for i := range n {
					if c.Send(testPacket(t, fmt.Sprint("d", i), 100)) {
						accepted++
					}
				}
			})
			if network == "tcp" {
				// Nothing can be written while the dial fails, so at most queue + one pending packet.
				if accepted > 8+1 {
					t.Errorf("%d packets accepted with the collector down and a queue of 8", accepted)
				}
				waitFor(t, "dial errors", func() bool { return c.Stats().Errors >= 2 })
			} else {
				// UDP "connects" at once; the ICMP port-unreachable for a datagram surfaces as
				// the error of a later send (a batch sent with one sendmmsg reports it on the
				// next one), so keep sending.
				waitFor(t, "udp write errors", func() bool {
					c.Send(testPacket(t, "again", 10))
					return c.Stats().Errors >= 1
				})
			}
			s := c.Stats()
			if s.Dropped < uint64(n-accepted) {
				t.Errorf("stats %+v: want at least %d drops", s, n-accepted)
			}
			// The collector comes up on that address: new packets get through.
			col := &collector{t: t, network: network, addr: addr}
			col.start()
			t.Cleanup(col.stop)
			i := 0
			waitFor(t, "delivery after the collector came up", func() bool {
				i++
				c.Send(testPacket(t, fmt.Sprint("up", i), 10))
				return len(col.packets()) > 0
			})
		})
	}
}

// TestClientCollectorRefuses: the collector accepts and closes each connection at once.
func TestClientCollectorRefuses(t *testing.T) {
	col := newCollector(t, "tcp", "refuse", nil)
	c := newTestClient(t, ClientConfig{Transport: TCP, Addr: col.addr, QueueSize: 16})
	i := 0
	noBlock(t, func() {
		waitFor(t, "errors and reconnects", func() bool {
			i++
			c.Send(testPacket(t, fmt.Sprint("r", i), 1000))
			s := c.Stats()
			return s.Errors >= 3 && s.Reconnects >= 2
		})
	})
}

// TestClientCollectorStalls: the collector accepts but never reads. The write deadline unwedges the
// writer (errors counted), the queue fills and drops are counted; the caller never waits.
func TestClientCollectorStalls(t *testing.T) {
	col := newCollector(t, "tcp", "stall", nil)
	c := newTestClient(t, ClientConfig{Transport: TCP, Addr: col.addr, QueueSize: 16, WriteTimeout: 50 * time.Millisecond})
	pkt := testPacket(t, "stall", 60000)
	noBlock(t, func() {
		waitFor(t, "write timeout and drops", func() bool {
			c.Send(pkt)
			s := c.Stats()
			return s.Errors >= 2 && s.Dropped >= 100
		})
	})
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatal("Close wedged by a stalled collector")
	}
	s := c.Stats()
	if s.Queued != 0 {
		t.Errorf("queue not emptied at close: %+v", s)
	}
}

// TestClientCollectorRestarts: the collector goes away and comes back on the same address;
// the client notices, reconnects with backoff, and delivery resumes.
func TestClientCollectorRestarts(t *testing.T) {
	for _, network := range []string{"tcp", "tls", "udp"} {
		t.Run(network, func(t *testing.T) {
			srvTLS, cliTLS := selfSignedTLS(t)
			col := newCollector(t, network, "", srvTLS)
			c := newTestClient(t, ClientConfig{Transport: Transport(network), Addr: col.addr, TLSConfig: cliTLS, QueueSize: 64})
			c.Send(testPacket(t, "before", 10))
			waitFor(t, "first packet", func() bool { return col.has("before") })

			col.stop()
			i := 0
			noBlock(t, func() {
				waitFor(t, "the client to notice the outage", func() bool {
					i++
					c.Send(testPacket(t, fmt.Sprint("down", i), 10))
					return c.Stats().Errors >= 1
				})
			})
			col.start()
			waitFor(t, "delivery after restart", func() bool {
				i++
				cid := fmt.Sprint("after", i)
				c.Send(testPacket(t, cid, 10))
				for _, p := range col.packets() {
					if bytes.HasPrefix(p.CorrelationID, []byte("after")) {
						return true
					}
				}
				return false
			})
			if network != "udp" {
				if s := c.Stats(); s.Reconnects < 1 {
					t.Errorf("stats %+v: no reconnect counted", s)
				}
			}
		})
	}
}

// A collector that accepts every connection and resets it at once: the client must back off
// between such short-lived connections (the step growing to BackoffMax), not redial in a tight
// loop; a connection that stayed up for StableAfter starts the backoff over (issue 15, defect 7).
// The client's clock is a fake: "stayed up" never depends on the machine's speed.
func TestClientBackoffAcceptThenReset(t *testing.T) {
	const steps = 8
	for _, tc := range []struct {
		name   string
		stable bool    // the fake clock advances StableAfter per reading
		want   []int64 // backoff steps in ms
	}{
		{"short-lived", false, []int64{1, 2, 4, 8, 8, 8, 8, 8}},
		{"stable", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := newCollector(t, "tcp", "refuse", nil)
			var (
				mu  sync.Mutex
				got []int64
				clk time.Time
			)
			cfg := ClientConfig{Transport: TCP, Addr: col.addr, QueueSize: 16, Logger: testLogger(),
				BackoffMin: time.Millisecond, BackoffMax: 8 * time.Millisecond, StableAfter: time.Hour}
			cfg.now = func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				if tc.stable {
					clk = clk.Add(time.Hour)
				}
				return clk
			}
			cfg.backoffHook = func(step time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, int64(step/time.Millisecond))
			}
			c := newTestClient(t, cfg)
			nsteps := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
			i := 0
			waitFor(t, "backoff steps or reconnects", func() bool {
				i++
				c.Send(testPacket(t, fmt.Sprint("b", i), 100))
				return nsteps() >= steps || c.Stats().Reconnects >= 4*steps
			})
			c.Close()
			mu.Lock()
			defer mu.Unlock()
			r := c.Stats().Reconnects
			if tc.stable {
				if len(got) != 0 {
					t.Errorf("stable connections: backoff steps %v, want none (each loss starts over)", got)
				}
				return
			}
			// Every reconnection follows a backoff wait: no tight loop.
			if r > uint64(len(got)) {
				t.Errorf("%d reconnects after %d backoff waits; want each reconnect to follow a wait", r, len(got))
			}
			if len(got) > steps {
				got = got[:steps]
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("backoff steps (ms) %v, want %v", got, tc.want)
			}
		})
	}
}

// The packet buffers' free list keeps as many as the live clients' queues
// can hold: a backlog that filled a queue is reused, not reallocated, and
// the list shrinks when the client stops.
func TestFreeBufsBound(t *testing.T) {
	const n = 6000 // a backlog above the 4096 an earlier fixed bound kept
	reserveBufs(n)
	freeBufs.mu.Lock()
	base := len(freeBufs.bufs)
	freeBufs.mu.Unlock()
	var got []*[]byte
	for range n + base {
		got = append(got, getBuf())
	}
	putBufs(got)
	freeBufs.mu.Lock()
	held, max := len(freeBufs.bufs), freeBufs.max
	freeBufs.mu.Unlock()
	if held != min(n+base, max) || held < n {
		t.Fatalf("%d buffers kept of %d returned (bound %d)", held, n+base, max)
	}
	reserveBufs(-n)
	freeBufs.mu.Lock()
	held, max = len(freeBufs.bufs), freeBufs.max
	freeBufs.mu.Unlock()
	if held > max {
		t.Fatalf("%d buffers kept above the bound %d after the reservation ended", held, max)
	}
}
