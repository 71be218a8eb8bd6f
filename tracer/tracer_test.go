package tracer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/hep/hepsink"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/pcap/pcapsink"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// The program (cmd/msrpscope) registers the kinds; so do the tests.
func init() {
	sink.Register("hep", hepsink.Kind{})
	sink.Register("pcap", pcapsink.Kind{})
}

// block returns a SinkConfig of type typ whose own keys are the JSON object
// js, decoded strictly (as cmd/msrpscope does from YAML).
func block(typ string, queue int, js string) SinkConfig {
	return SinkConfig{Type: typ, Queue: queue, Decode: func(v any) error {
		dec := json.NewDecoder(strings.NewReader(js))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}}
}

func hepTo(addr string, more ...string) SinkConfig {
	js := `{"addr":"` + addr + `"`
	for _, m := range more {
		js += "," + m
	}
	return block("hep", 0, js+"}")
}

func closeTracer(t *testing.T, tr *Tracer) {
	t.Helper()
	if err := tr.Close(context.Background()); err != nil {
		t.Errorf("close: %v", err)
	}
}

// udpCollector is a HEP collector on a loopback UDP socket that decodes
// what it gets with our decoder.
type udpCollector struct {
	pc   net.PacketConn
	mu   sync.Mutex
	pkts []hep.Packet
	ch   chan struct{}
}

func newUDPCollector(t *testing.T) *udpCollector {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &udpCollector{pc: pc, ch: make(chan struct{}, 1)}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 70000)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p, err := hep.Decode(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.pkts = append(c.pkts, p)
			c.mu.Unlock()
			select {
			case c.ch <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

func (c *udpCollector) addr() string { return c.pc.LocalAddr().String() }

// withPayload returns the one packet of got whose payload contains s.
func withPayload(t *testing.T, got []hep.Packet, s string) hep.Packet {
	t.Helper()
	var found []hep.Packet
	for _, p := range got {
		if strings.Contains(string(p.Payload), s) {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d packets with %q in their payload, want 1", len(found), s)
	}
	return found[0]
}

// waitN waits until n packets arrived and returns them.
func (c *udpCollector) waitN(t *testing.T, n int) []hep.Packet {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.pkts)
		c.mu.Unlock()
		if got >= n {
			c.mu.Lock()
			defer c.mu.Unlock()
			return append([]hep.Packet(nil), c.pkts...)
		}
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("collector got %d packets, want %d", got, n)
		}
	}
}

func (c *udpCollector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pkts)
}

var (
	relayAddr  = netip.MustParseAddrPort("127.0.0.1:2855")
	partnerA   = netip.MustParseAddrPort("203.0.113.7:40001")
	otherB     = netip.MustParseAddrPort("198.51.100.9:40002")
	v6Client   = netip.MustParseAddrPort("[2001:db8::7]:40003")
	v6RelayTLS = netip.MustParseAddrPort("[2001:db8::1]:2856")
)

func connEv(kind event.Kind, id uint64, remote, local netip.AddrPort, transport string) *event.Event {
	return &event.Event{Kind: kind, Time: time.Unix(1700000000, 123456000), Conn: event.ConnInfo{
		ID: id, Transport: transport, Local: local, Remote: remote, Dir: event.DirIn}}
}

func frameEv(id uint64, remote, local netip.AddrPort, dir event.Direction, method, session string) *event.Event {
	wire := "MSRP a786hjs2 " + method + "\r\nTo-Path: msrp://x;tcp\r\nFrom-Path: msrp://y;tcp\r\n-------a786hjs2$\r\n"
	e := connEv(event.FrameIn, id, remote, local, "msrp")
	if dir == event.DirOut {
		e.Kind = event.FrameOut
	}
	e.Frame = &event.FrameInfo{Dir: dir, TransactID: []byte("a786hjs2"), Method: []byte(method), FromSession: session,
		Flag: '$', Size: int64(len(wire)), Wire: []byte(wire)}
	return e
}

func TestRulesRouteToSinks(t *testing.T) {
	homer, other := newUDPCollector(t), newUDPCollector(t)
	cfg := Config{
		Enabled: true,
		Rules: []Rule{
			{Name: "partners", Match: `remote.ip in cidr("203.0.113.0/24") && local.port == 2855`, Events: true, Frames: true, To: []string{"homer"}},
			{Name: "sends", Match: `method == "SEND"`, Frames: true, To: []string{"other"}},
		},
		Sinks: map[string]SinkConfig{
			"homer":  hepTo(homer.addr(), `"capture_id":2001`, `"node":"relay-1"`),
			"other":  hepTo(other.addr()),
			"unused": hepTo("127.0.0.1:9"),
		},
	}
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	if n := len(tr.set.Load().sinks); n != 2 {
		t.Fatalf("%d sinks opened, want the 2 that rules use", n)
	}
	// Partner connection: accepted, a SEND in, a REPORT out, closed.
	tr.Observe(connEv(event.Accepted, 1, partnerA, relayAddr, "msrp"))
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "sess1"))
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirOut, "REPORT", "sess1"))
	closed := connEv(event.Closed, 1, partnerA, relayAddr, "msrp")
	closed.Reason = event.CloseEOF
	tr.Observe(closed)
	// Other connection: only its SEND goes anywhere (to "other").
	tr.Observe(connEv(event.Accepted, 2, otherB, relayAddr, "msrp"))
	tr.Observe(frameEv(2, otherB, relayAddr, event.DirIn, "SEND", "sess2"))
	tr.Observe(frameEv(2, otherB, relayAddr, event.DirIn, "REPORT", "sess2"))

	got := homer.waitN(t, 4)
	if len(got) != 4 {
		t.Fatalf("homer got %d packets, want 4", len(got))
	}
	// UDP batches may reorder packets (hep/gso.go); each carries its own time.
	acc := withPayload(t, got, "MSRP:ACCEPTED:")
	if acc.Src != partnerA || acc.Dst != relayAddr || acc.ProtoType != hep.ProtoLog || acc.CaptureID != 2001 ||
		string(acc.NodeName) != "relay-1" || string(acc.CorrelationID) != "conn-1" ||
		string(acc.Payload) != "MSRP:ACCEPTED:SUCCESS:Connection accepted" {
		t.Fatalf("accepted packet %+v payload %q", acc, acc.Payload)
	}
	send := withPayload(t, got, " SEND\r\n")
	if send.Src != partnerA || send.Dst != relayAddr || string(send.CorrelationID) != "sess1" || !strings.HasPrefix(string(send.Payload), "MSRP a786hjs2 SEND\r\n") {
		t.Fatalf("SEND packet %+v payload %q", send, send.Payload)
	}
	rep := withPayload(t, got, " REPORT\r\n")
	if rep.Src != relayAddr || rep.Dst != partnerA || string(rep.CorrelationID) != "sess1" {
		t.Fatalf("REPORT out: src %v dst %v cid %q: want relay → partner, same session", rep.Src, rep.Dst, rep.CorrelationID)
	}
	if cl := withPayload(t, got, "MSRP:CLOSED:"); string(cl.Payload) != "MSRP:CLOSED:SUCCESS:Connection closed: eof" {
		t.Fatalf("closed payload %q", cl.Payload)
	}
	og := other.waitN(t, 2)
	for _, p := range og {
		if !strings.Contains(string(p.Payload), " SEND\r\n") {
			t.Fatalf("other got a non-SEND: %q", p.Payload)
		}
	}
	st := tr.Stats()
	if st.Rules[0].Matched != 4 || st.Rules[1].Matched != 2 {
		t.Fatalf("rule counters %+v", st.Rules)
	}
	// No more than what matched arrived.
	if homer.count() != 4 || other.count() != 2 {
		t.Fatalf("extra packets: homer %d other %d", homer.count(), other.count())
	}
}

// Connection verdicts are kept per connection and follow its TLS subject;
// frames without a session correlate by connection.
func TestTLSSubjectAndIPv6(t *testing.T) {
	c := newUDPCollector(t)
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "acme", Match: `tls.subject contains "O=Acme" && remote.ip in cidr("2001:db8::/32")`, Events: true, Frames: true, To: []string{"c"}}},
		Sinks: map[string]SinkConfig{"c": hepTo(c.addr(), `"event_format":"json"`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	acc := connEv(event.Accepted, 7, v6Client, v6RelayTLS, "msrps")
	tr.Observe(acc) // subject unknown yet: no match
	hs := connEv(event.TLSHandshake, 7, v6Client, v6RelayTLS, "msrps")
	hs.TLS = &event.TLSInfo{OK: true, Version: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256",
		PeerSubject: "CN=client,O=Acme", PeerIssuer: "CN=Acme CA"}
	tr.Observe(hs)
	f := frameEv(7, v6Client, v6RelayTLS, event.DirIn, "AUTH", "")
	f.Conn.Transport = "msrps"
	tr.Observe(f)
	got := c.waitN(t, 2)
	hsp := withPayload(t, got, `{"Protocol"`)
	if hsp.Family != hep.FamilyIPv6 || hsp.Src != v6Client {
		t.Fatalf("handshake packet %+v", hsp)
	}
	p := string(hsp.Payload)
	for _, want := range []string{`"Protocol":"MSRPS"`, `"Event":"TLS_HANDSHAKE"`, `"client-subject":"CN=client,O=Acme"`, `"client-issuer":"CN=Acme CA"`} {
		if !strings.Contains(p, want) {
			t.Fatalf("handshake payload %s lacks %s", p, want)
		}
	}
	if f := withPayload(t, got, "MSRP "); string(f.CorrelationID) != "conn-7" {
		t.Fatalf("sessionless frame correlation id %q", f.CorrelationID)
	}
}

func TestSwitchOff(t *testing.T) {
	c := newUDPCollector(t)
	tr, err := New(context.Background(), Config{Enabled: false,
		Rules: []Rule{{Name: "all", Events: true, Frames: true, To: []string{"c"}}},
		Sinks: map[string]SinkConfig{"c": hepTo(c.addr())}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	tr.Observe(connEv(event.Accepted, 1, partnerA, relayAddr, "msrp"))
	tr.SetEnabled(true)
	tr.Observe(connEv(event.Accepted, 2, partnerA, relayAddr, "msrp"))
	got := c.waitN(t, 1)
	if string(got[0].CorrelationID) != "conn-2" {
		t.Fatalf("traced while off: %q", got[0].CorrelationID)
	}
	if st := tr.Stats(); !st.Enabled || st.Rules[0].Matched != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A collector that accepts and never reads: Observe keeps returning, and
// what does not fit is counted as dropped.
func TestStalledCollectorNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c) // accepted, never read
			hmu.Unlock()
		}
	}()
	defer func() {
		hmu.Lock()
		for _, c := range held {
			c.Close()
		}
		hmu.Unlock()
	}()
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "all", Frames: true, To: []string{"stalled"}}},
		Sinks: map[string]SinkConfig{"stalled": block("hep", 64, `{"transport":"tcp","addr":"`+ln.Addr().String()+`"}`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	e := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s")
	big := make([]byte, 16<<10)
	copy(big, e.Frame.Wire)
	e.Frame.Wire, e.Frame.Size = big, int64(len(big))
	const n = 5000 // 80 MB offered: far more than socket buffers and the queue hold
	for range n {
		tr.Observe(e)
	}
	st := tr.Stats().Sinks[0]
	if st.Dropped == 0 || st.Sent+st.Dropped > n {
		t.Fatalf("sink stats %+v after %d frames", st, n)
	}
}

func TestConfigErrors(t *testing.T) {
	sinks := map[string]SinkConfig{"h": hepTo("127.0.0.1:9060")}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad expression", Config{Rules: []Rule{{Name: "r", Match: `remote.ip in cidr("300.1.2.3/8")`, Events: true, To: []string{"h"}}}, Sinks: sinks}, `rule "r"`},
		{"unknown field", Config{Rules: []Rule{{Name: "r", Match: `remote.iq == 1`, Events: true, To: []string{"h"}}}, Sinks: sinks}, "column"},
		{"unknown sink", Config{Rules: []Rule{{Name: "r", Events: true, To: []string{"nope"}}}, Sinks: sinks}, `unknown sink "nope"`},
		{"no kind", Config{Rules: []Rule{{Name: "r", To: []string{"h"}}}, Sinks: sinks}, "neither events nor frames"},
		{"bad sink type", Config{Rules: []Rule{{Name: "r", Events: true, To: []string{"x"}}}, Sinks: map[string]SinkConfig{"x": {Type: "kafka"}}}, `unknown type "kafka"`},
		{"no rule name", Config{Rules: []Rule{{Events: true, To: []string{"h"}}}, Sinks: sinks}, "rule 1: no name"},
		{"hep addr without port", Config{Rules: []Rule{{Name: "r", Events: true, To: []string{"x"}}}, Sinks: map[string]SinkConfig{"x": hepTo("127.0.0.1")}}, "want host:port"},
		{"unknown sink key", Config{Rules: []Rule{{Name: "r", Events: true, To: []string{"x"}}}, Sinks: map[string]SinkConfig{"x": block("hep", 0, `{"addr":"127.0.0.1:9060","adr":1}`)}}, `unknown field "adr"`},
		{"bad unused sink", Config{Rules: []Rule{{Name: "r", Events: true, To: []string{"h"}}}, Sinks: map[string]SinkConfig{"h": hepTo("127.0.0.1:9060"), "x": hepTo("127.0.0.1:9060", `"transport":"sctp"`)}}, `sink "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg, nil)
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrConfig with %q", err, tc.want)
			}
			if cerr := CheckConfig(tc.cfg); cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("CheckConfig: %v, want the error New gives: %v", cerr, err)
			}
		})
	}
}

// Observe allocates nothing once its sinks are warm: the rule matches and
// both sinks take every record (a HEP collector on loopback UDP, a pcap
// directory). CI runs it in a pass without -race (.ci/test).
func TestObserveAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; .ci/test runs this test without -race")
	}
	c := newUDPCollector(t)
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "sends", Match: `method == "SEND" && remote.port > 1000`, Frames: true, To: []string{"c", "p"}}},
		Sinks: map[string]SinkConfig{"c": hepTo(c.addr()), "p": block("pcap", 0, `{"dir":`+strconv.Quote(t.TempDir())+`}`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	f := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1")
	// A collection empties the sync.Pools (the filters' Input, the HEP
	// client's packet buffers); with none during the test, what is measured
	// is Observe itself. (Between collections the pools refill at once.)
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	// Warm up: buffers for more records than the measured run has in flight.
	// How many a sink's free list holds depends on how far its writer fell
	// behind during the warm-up (on a busy machine it may keep up, and
	// the list stays short); a run that outruns it allocates records
	// (2 per Put) until the list covers what is in flight. So a run that
	// allocated is repeated after the sinks drained, a few times at most:
	// Observe itself allocating fails every round.
	const warm, runs, rounds = 2000, 1000, 5
	for range warm {
		tr.Observe(f)
	}
	observed := uint64(warm)
	waitSent(t, tr, "c", observed)
	waitSent(t, tr, "p", observed)
	for round := 1; ; round++ {
		n := testing.AllocsPerRun(runs, func() { tr.Observe(f) })
		observed += runs + 1
		waitSent(t, tr, "c", observed)
		waitSent(t, tr, "p", observed)
		if n == 0 {
			break
		}
		if round == rounds {
			t.Fatalf("%v allocations per Observe, in each of %d rounds", n, rounds)
		}
		t.Logf("round %d: %v allocations per Observe (free lists still growing)", round, n)
	}
	if st := tr.Stats(); st.Rules[0].Matched != observed {
		t.Fatalf("matched %d, want %d", st.Rules[0].Matched, observed)
	}
}

// waitSent waits until the sink's Sent counter reaches n.
func waitSent(t *testing.T, tr *Tracer, name string, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		st := sinkStats(t, tr, name)
		if st.Sent >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink %s: %+v, want %d sent", name, st, n)
		}
	}
}

// The sink key udp_gso: false reaches the collector client: its batches
// leave as plain datagrams, while a default sink's leave in GSO runs.
func TestSinkUDPGSOKey(t *testing.T) {
	on, off := newUDPCollector(t), newUDPCollector(t)
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "all", Frames: true, To: []string{"on", "off"}}},
		Sinks: map[string]SinkConfig{
			"on":  hepTo(on.addr()),
			"off": hepTo(off.addr(), `"udp_gso":false`),
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	for i := range 20 {
		tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", fmt.Sprintf("s%d", i)))
	}
	on.waitN(t, 20)
	off.waitN(t, 20)
	segmented := map[string]uint64{}
	for _, name := range []string{"on", "off"} {
		// Counted after the write returns: wait for the counters, not just the packets.
		var st sink.Stats
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			st = sinkStats(t, tr, name)
			if st.Sent == 20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sink %s: %+v", name, st)
			}
		}
		segmented[name] = counter(t, st, "segmented")
	}
	if segmented["off"] != 0 || runtime.GOOS == "linux" && segmented["on"] == 0 {
		t.Fatalf("packets sent in GSO runs per sink: %v", segmented)
	}
}

func sinkStats(t *testing.T, tr *Tracer, name string) sink.Stats {
	t.Helper()
	for _, s := range tr.Stats().Sinks {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no sink %q in stats", name)
	return sink.Stats{}
}

func counter(t *testing.T, st sink.Stats, name string) uint64 {
	t.Helper()
	for _, c := range st.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("sink %s has no counter %q: %+v", st.Name, name, st.Counters)
	return 0
}
