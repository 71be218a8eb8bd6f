//go:build unix

package hep

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"testing"
	"text/template"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
)

// These tests run a HEP implementation nobody here wrote, Kamailio 5.6 (Debian package "kamailio"),
// on loopback: sipcapture decodes our packets, siptrace emits packets for our decoder.

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// strChunk is how the collector's config logs a string chunk: $(hep(0x0XX){s.encode.hexa}). Kamailio
// 5.6 returns $null for an absent string chunk, which the transformation renders as hex("0") = "30".
func strChunk(b []byte) string {
	if b == nil {
		return "30"
	}
	return hex.EncodeToString(b)
}

// expectedFields is what the sipcapture log line must show for p (Kamailio 5.6 semantics), raw.
func expectedFields(p *Packet, rcv string) map[string]string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	opt := func(v uint64) string {
		if v == 0 {
			return ""
		}
		return u(v)
	}
	present := func(b []byte) string { // chunks $hep() cannot read: -1 when present
		if b == nil {
			return ""
		}
		return "4294967295"
	}
	m := map[string]string{
		"rcv": rcv, "version": "3", "family": u(uint64(p.family())), "ipproto": u(uint64(p.IPProto)),
		"src4": "", "dst4": "", "src6": "", "dst6": "",
		"sport": u(uint64(p.Src.Port())), "dport": u(uint64(p.Dst.Port())),
		"tsec": u(uint64(p.Time.Unix())), "tusec": u(uint64(p.Time.Nanosecond() / 1000)),
		"ptype": u(uint64(p.ProtoType)), "capid": u(uint64(p.CaptureID)), "keepalive": opt(uint64(p.KeepAlive)),
		"authkey": strChunk(p.AuthKey), "corrid": strChunk(p.CorrelationID),
		"t16": present(p.CompressedPayload), "node": present(p.NodeName),
		"plen": u(uint64(len(p.Payload))), "payload": hex.EncodeToString(p.Payload),
	}
	if p.VLAN != 0 {
		m["vlan"] = "4294967295"
	} else {
		m["vlan"] = ""
	}
	for _, x := range []struct {
		a      netip.Addr
		k4, k6 string
	}{{p.Src.Addr(), "src4", "src6"}, {p.Dst.Addr(), "dst4", "dst6"}} {
		if x.a.Is4() {
			m[x.k4] = x.a.String()
		} else if x.a.IsValid() {
			m[x.k6] = x.a.String()
		}
	}
	return m
}

// expectedHEP is the typed packet kamailio.HEPCollector must decode from the line for p.
func expectedHEP(p *Packet, rcv string, peer netip.AddrPort) kamailio.HEPPacket {
	present := func(b []byte) string {
		if b == nil {
			return ""
		}
		return kamailio.HEPUnreadable
	}
	h := kamailio.HEPPacket{
		Transport: rcv, Peer: peer, Version: 3, Family: p.family(), IPProto: p.IPProto,
		Src: p.Src.Addr(), Dst: p.Dst.Addr(), SrcPort: p.Src.Port(), DstPort: p.Dst.Port(),
		TimeSec: uint32(p.Time.Unix()), TimeUsec: uint32(p.Time.Nanosecond() / 1000),
		ProtoType: p.ProtoType, CaptureID: p.CaptureID, KeepAlive: p.KeepAlive,
		AuthKey: p.AuthKey, CorrelationID: p.CorrelationID,
		CompressedPayload: present(p.CompressedPayload), NodeName: present(p.NodeName),
		Payload: p.Payload, PayloadLen: len(p.Payload),
	}
	if p.VLAN != 0 {
		h.VLAN = kamailio.HEPUnreadable
	}
	return h
}

// TestKamailioSipcaptureReceives sends our packets to Kamailio's sipcapture over UDP and TCP
// (through our Client) and checks every field it decoded.
func TestKamailioSipcaptureReceives(t *testing.T) {
	// Ready once probe packets sent over UDP and TCP show up in its log.
	k := kamailio.StartHEPCollector(t)
	addr := k.Addr()

	ts := time.Unix(1795424624, 406933000)
	pr := Profile{CaptureID: 2001, AuthKey: []byte("secret key"), NodeName: []byte("relay-1"), EventForm: FormColon}
	frame := msrpFrame("f1", []byte("héllo\x00binary\xff"), '$')
	for _, transport := range []Transport{UDP, TCP} {
		t.Run(string(transport), func(t *testing.T) {
			rcv := string(transport)
			var pkts []Packet
			encode := func(b []byte, err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				p, err := Decode(b)
				if err != nil {
					t.Fatal(err)
				}
				pkts = append(pkts, p)
			}
			// 1. A connection event, IPv4, default LOG type, colon form, auth key and node name.
			encode(pr.AppendEventPacket(nil, Meta{
				Src: netip.MustParseAddrPort("192.0.2.10:40000"), Dst: netip.MustParseAddrPort("192.0.2.20:2855"),
				Time: ts, CorrelationID: []byte(rcv + "-conn-7"),
			}, Event{ProtocolMSRPS, EventAccepted, StatusSuccess, "Connection accepted", nil}))
			// 2. An MSRP frame, IPv6, body with non-ASCII and binary bytes.
			encode(pr.AppendFramePacket(nil, Meta{
				Src: netip.MustParseAddrPort("[2001:db8::1]:5000"), Dst: netip.MustParseAddrPort("[2001:db8::2]:2855"),
				Time: ts.Add(time.Microsecond), CorrelationID: []byte(rcv + "-sess-abc"),
			}, frame))
			// 3. Every generic chunk, OpenSIPS "net" type, JSON event, a vendor chunk.
			full := Packet{
				IPProto: IPProtoTCP, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:65535"),
				Time: time.Unix(4000000000, 999999000), ProtoType: ProtoNet, CaptureID: 0xfffffffe, KeepAlive: 30,
				AuthKey: []byte{0, 1, 2}, CompressedPayload: []byte{0x1f, 0x8b}, VLAN: 100, NodeName: []byte("n"),
				CorrelationID: []byte(rcv + "-all"),
				Payload:       AppendEvent(nil, FormJSON, Event{ProtocolMSRP, EventClosed, StatusFailure, "Read error", nil}),
				Extra:         []Chunk{{Vendor: 0x22, Type: 0x1234, Data: []byte{1, 2}}},
			}
			b, err := full.AppendEncode(nil)
			encode(b, err)
			// 4. A big frame (over the default 16383-byte TCP read buffer), truncated at the default limit.
			var zero Profile
			encode(zero.AppendFramePacket(nil, Meta{
				Src: netip.MustParseAddrPort("192.0.2.10:40000"), Dst: netip.MustParseAddrPort("192.0.2.20:2855"),
				Time: ts, CorrelationID: []byte(rcv + "-big"),
			}, msrpFrame("big", bytes.Repeat([]byte("z"), 30000), '+')))

			c := newTestClient(t, ClientConfig{Transport: transport, Addr: addr})
			for i := range pkts {
				b, err := pkts[i].AppendEncode(nil)
				if err != nil {
					t.Fatal(err)
				}
				if !c.Send(b) {
					t.Fatalf("packet %d refused", i)
				}
			}
			for i := range pkts {
				p := &pkts[i]
				h := k.WaitMatch(t, func(h kamailio.HEPPacket) bool {
					return h.Transport == rcv && bytes.Equal(h.CorrelationID, p.CorrelationID)
				}, waitTimeout)
				got := h.Fields
				want := expectedFields(p, rcv)
				if len(p.Payload) > 30000 { // xlog's hex transformation gives up above ~32 KB
					delete(want, "payload")
				}
				for key, w := range want {
					if got[key] != w {
						t.Errorf("%s: %s = %q, want %q", p.CorrelationID, key, tail(got[key], 200), tail(w, 200))
					}
				}
				// The typed decoding agrees; the peer is our client's socket.
				if h.Err != nil {
					t.Errorf("%s: %v", p.CorrelationID, h.Err)
				}
				wantH := expectedHEP(p, rcv, h.Peer)
				if len(p.Payload) > 30000 {
					wantH.Payload = nil // see above: PayloadLen still counts it
				}
				if h.Peer.Addr() != netip.MustParseAddr("127.0.0.1") || h.Peer.Port() == 0 {
					t.Errorf("%s: peer %v", p.CorrelationID, h.Peer)
				}
				h.Fields, h.Err = nil, nil
				if !reflect.DeepEqual(h, wantH) {
					t.Errorf("%s: decoded\n got %+v\nwant %+v", p.CorrelationID, h, wantH)
				}
			}
			if n := len(pkts[3].Payload); n > DefaultFrameLimit || n < DefaultFrameLimit-100 {
				t.Errorf("big frame payload %d bytes", n)
			}
			waitFor(t, "sent counter", func() bool { return c.Stats().Sent == uint64(len(pkts)) })
		})
	}
}

// TestKamailioSipcaptureGSORuns sends a batch of similar-sized frames over UDP, which leave in
// GSO runs padded with the padding chunk (gso.go), and checks that sipcapture decodes every one of
// them exactly as it was.
func TestKamailioSipcaptureGSORuns(t *testing.T) {
	k := kamailio.StartHEPCollector(t)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: k.Addr(), Linger: 50 * time.Millisecond})
	ts := time.Unix(1795424624, 406933000)
	var pkts []Packet
	for i := range 30 {
		// Bodies 3 bytes apart: paddings of 3 (a larger segment), 6, 9, ... bytes.
		frame := msrpFrame(fmt.Sprintf("g%02d", i), bytes.Repeat([]byte("b"), 100+3*i), '$')
		var pr Profile
		b, err := pr.AppendFramePacket(nil, Meta{
			Src: netip.MustParseAddrPort("192.0.2.10:40000"), Dst: netip.MustParseAddrPort("192.0.2.20:2855"),
			Time: ts.Add(time.Duration(i) * time.Microsecond), CorrelationID: []byte(fmt.Sprintf("gso-%02d", i)),
		}, frame)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p)
		if !c.Send(b) {
			t.Fatalf("packet %d refused", i)
		}
	}
	for i := range pkts {
		p := &pkts[i]
		h := k.WaitMatch(t, func(h kamailio.HEPPacket) bool {
			return h.Transport == "udp" && bytes.Equal(h.CorrelationID, p.CorrelationID)
		}, waitTimeout)
		for key, w := range expectedFields(p, "udp") {
			if h.Fields[key] != w {
				t.Errorf("%s: %s = %q, want %q", p.CorrelationID, key, tail(h.Fields[key], 200), tail(w, 200))
			}
		}
		if h.Err != nil {
			t.Errorf("%s: %v", p.CorrelationID, h.Err)
		}
	}
	waitFor(t, "the sent counter", func() bool { return c.Stats().Sent == uint64(len(pkts)) }) // counted after the write
	if st := c.Stats(); runtime.GOOS == "linux" && st.Segmented == 0 {
		t.Fatalf("stats %+v: want every packet sent, in GSO runs on Linux", st)
	}
}

// chunkMap walks a HEPv3 packet's chunks independently of Decode: (vendor<<16|type) → data.
func chunkMap(t *testing.T, b []byte) map[uint32][]byte {
	t.Helper()
	m := map[uint32][]byte{}
	if len(b) < 6 || string(b[:4]) != "HEP3" || int(binary.BigEndian.Uint16(b[4:])) != len(b) {
		t.Fatalf("bad header % x", b[:min(6, len(b))])
	}
	for off := 6; off < len(b); {
		v, ty, l := binary.BigEndian.Uint16(b[off:]), binary.BigEndian.Uint16(b[off+2:]), int(binary.BigEndian.Uint16(b[off+4:]))
		m[uint32(v)<<16|uint32(ty)] = b[off+6 : off+l]
		off += l
	}
	return m
}

// TestKamailioSiptraceDecodes has Kamailio's siptrace mirror a SIP OPTIONS we send as HEPv3 over
// UDP and TCP, and checks that our decoder reads every chunk.
func TestKamailioSiptraceDecodes(t *testing.T) {
	hepUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hepUDP.Close() })
	hepTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hepTCP.Close() })

	type rx struct {
		via string
		raw []byte
	}
	got := make(chan rx, 1000)
	go func() {
		buf := make([]byte, 70000)
		for {
			n, _, err := hepUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- rx{"udp", bytes.Clone(buf[:n])}
		}
	}()
	go func() {
		for {
			conn, err := hepTCP.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
			go func() {
				var buf []byte
				for {
					b, err := ReadPacket(conn, buf)
					if err != nil {
						return
					}
					buf = b
					got <- rx{"tcp", bytes.Clone(b)}
				}
			}()
		}
	}()

	sip, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sip.Close() })
	sipAddr := netip.MustParseAddrPort(sip.LocalAddr().String())
	options := func(port int, callID string) []byte {
		return fmt.Appendf(nil, "OPTIONS sip:kam@127.0.0.1:%d SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\n"+
			"From: <sip:tester@127.0.0.1>;tag=t1\r\n"+
			"To: <sip:kam@127.0.0.1>\r\n"+
			"Call-ID: %s\r\n"+
			"CSeq: 1 OPTIONS\r\n"+
			"Max-Forwards: 70\r\n"+
			"Content-Length: 0\r\n\r\n", port, sipAddr, callID, callID)
	}
	// ask sends an OPTIONS and reports whether its 200 OK came back within a short read deadline.
	ask := func(port int, callID string) bool {
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		if _, err := sip.WriteTo(options(port, callID), to); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		sip.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, _, err := sip.ReadFrom(buf)
			if err != nil {
				return false
			}
			if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200")) && bytes.Contains(buf[:n], []byte("Call-ID: "+callID)) {
				return true
			}
		}
	}
	k := kamailio.Start(t, kamailio.Config{
		Template: template.Must(template.ParseFiles(filepath.Join("testdata", "kamailio-siptrace.cfg.tmpl"))),
		Children: 1,
		Modules:  []string{"siptrace.so", "sl.so", "xlog.so", "pv.so"},
		Vars: map[string]any{
			"HEPUDPPort": hepUDP.LocalAddr().(*net.UDPAddr).Port,
			"HEPTCPPort": hepTCP.Addr().(*net.TCPAddr).Port,
		},
	})
	n := 0
	waitFor(t, "kamailio siptrace to answer OPTIONS", func() bool {
		n++
		return ask(k.Port(), fmt.Sprint("ready-", n))
	})

	callID := fmt.Sprintf("hep-test-%d", time.Now().UnixNano())
	before := time.Now()
	if !ask(k.Port(), callID) {
		waitFor(t, "200 OK", func() bool { return ask(k.Port(), callID) })
	}
	sent := options(k.Port(), callID)
	kam := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(k.Port()))

	seen := map[string]bool{}
	deadline := time.After(waitTimeout)
	for !seen["udp"] || !seen["tcp"] {
		var r rx
		select {
		case r = <-got:
		case <-deadline:
			t.Fatalf("HEP copies not received (have %v)", seen)
		}
		p, err := Decode(r.raw)
		if err != nil {
			t.Fatalf("%s: decode: %v\n%x", r.via, err, r.raw)
		}
		if !bytes.Equal(p.Payload, sent) || seen[r.via] {
			continue // a readiness probe, or a retransmission
		}
		seen[r.via] = true
		t.Run(r.via, func(t *testing.T) {
			want := Packet{
				Family: FamilyIPv4, IPProto: 17, Src: sipAddr, Dst: kam, ProtoType: ProtoSIP, CaptureID: 2001,
				AuthKey: []byte("secret-key"), Payload: sent,
			}
			if r.via == "udp" {
				want.CorrelationID = []byte("corr-" + callID)
			}
			want.Time = p.Time // checked below
			if diff := packetDiff(want, p); diff != "" {
				t.Errorf("decoded packet:\n%s", diff)
			}
			if p.Time.Before(before.Add(-time.Minute)) || p.Time.After(time.Now().Add(time.Minute)) {
				t.Errorf("time %v not near now", p.Time)
			}
			// Every chunk Kamailio put on the wire is represented in the decoded packet: encoding it
			// again yields exactly the same set of (vendor, type) → data.
			enc, err := p.AppendEncode(nil)
			if err != nil {
				t.Fatal(err)
			}
			theirs, ours := chunkMap(t, r.raw), chunkMap(t, enc)
			if len(theirs) != len(ours) {
				t.Errorf("kamailio sent %d chunks, the decoded packet has %d", len(theirs), len(ours))
			}
			for key, v := range theirs {
				if w, ok := ours[key]; !ok || !bytes.Equal(v, w) {
					t.Errorf("chunk %#x: kamailio % x, decoded % x (present %v)", key, v, w, ok)
				}
			}
			if len(r.raw) != p.EncodedLen() {
				t.Errorf("kamailio packet %d bytes, decoded packet encodes to %d", len(r.raw), p.EncodedLen())
			}
		})
	}
}
