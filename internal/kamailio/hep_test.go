package kamailio_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
)

// sipcapturePacket is a hand-built 209-byte HEPv3 packet that Kamailio 5.6.3's
// sipcapture decodes field by field: chunks 1, 2, 3, 4, 7, 8, 9, 10, 11, 12,
// 13, 14, 17, 18, 19, a vendor chunk, then 15.
const sipcapturePacket = "4845503300d1000000010007020000000200071100000003000a0a00000100000004000a0a00000200000007000813c4" +
	"00000008000813d800000009000a6553f1000000000a000a0001e2400000000b0007640000000c000a000007d1000000" +
	"0d0008001e0000000e00107365637265742d6b6579000000110011636f72722d78797a2d343200000012000800640000" +
	"0013000c6e6f64652d4100221234000801020000000f002f4d5352503a41434345505445443a535543434553533a436f" +
	"6e6e656374696f6e206163636570746564"

// hepPacket builds a HEPv3 packet from (type, data) chunks, independently of
// the hep package.
func hepPacket(chunks ...any) []byte {
	b := []byte("HEP3\x00\x00")
	for i := 0; i < len(chunks); i += 2 {
		data := chunks[i+1].([]byte)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(chunks[i].(int)))
		b = binary.BigEndian.AppendUint16(b, uint16(6+len(data)))
		b = append(b, data...)
	}
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	return b
}

func TestHEPCollector(t *testing.T) {
	c := kamailio.StartHEPCollector(t)
	if got := c.Packets(); len(got) != 0 {
		t.Fatalf("Packets() before sending = %d packets, want none (probes are excluded)", len(got))
	}
	known, err := hex.DecodeString(sipcapturePacket)
	if err != nil || len(known) != 209 {
		t.Fatalf("sipcapture packet: %d bytes, %v", len(known), err)
	}
	// IPv6, compressed-payload chunk (unreadable by 5.6), no auth key, no
	// correlation id, no keepalive, a binary payload.
	v6Payload := []byte("\x00\xffMSRP a786hjs2 SEND\r\n-------a786hjs2$\r\n")
	v6 := hepPacket(
		0x001, []byte{10}, 0x002, []byte{6},
		0x005, netip.MustParseAddr("2001:db8::1").AsSlice(), 0x006, netip.MustParseAddr("2001:db8::2").AsSlice(),
		0x007, []byte{0x13, 0x88}, 0x008, []byte{0x0b, 0x27},
		0x009, []byte{0xff, 0xff, 0xff, 0xfe}, 0x00a, []byte{0, 0x0f, 0x42, 0x3f},
		0x00b, []byte{0x59}, 0x00c, []byte{0, 0, 0, 0},
		0x010, []byte{0x1f, 0x8b},
		0x00f, v6Payload,
	)
	wantSipcapture := kamailio.HEPPacket{
		Version: 3, Family: 2, IPProto: 17,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 5060, DstPort: 5080,
		TimeSec: 1700000000, TimeUsec: 123456, ProtoType: 100, CaptureID: 2001, KeepAlive: 30,
		AuthKey: []byte("secret-key"), CorrelationID: []byte("corr-xyz-42"),
		CompressedPayload: "", VLAN: kamailio.HEPUnreadable, NodeName: kamailio.HEPUnreadable,
		Payload: []byte("MSRP:ACCEPTED:SUCCESS:Connection accepted"), PayloadLen: 41,
	}
	wantV6 := kamailio.HEPPacket{
		Version: 3, Family: 10, IPProto: 6,
		Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 5000, DstPort: 2855,
		TimeSec: 0xfffffffe, TimeUsec: 999999, ProtoType: 0x59,
		CompressedPayload: kamailio.HEPUnreadable,
		Payload:           v6Payload, PayloadLen: len(v6Payload),
	}

	n := 0
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			conn, err := net.Dial(network, c.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if network == "tcp" { // one write holding both packets: the TCP framing must split them
				_, err = conn.Write(append(append([]byte{}, known...), v6...))
			} else if _, err = conn.Write(known); err == nil {
				_, err = conn.Write(v6)
			}
			if err != nil {
				t.Fatal(err)
			}
			n += 2
			peer := netip.MustParseAddrPort(conn.LocalAddr().String())
			for _, w := range []kamailio.HEPPacket{wantSipcapture, wantV6} {
				w.Transport, w.Peer = network, peer
				got := c.WaitMatch(t, func(p kamailio.HEPPacket) bool {
					return p.Transport == network && bytes.Equal(p.Payload, w.Payload)
				}, 20*time.Second)
				if got.Err != nil {
					t.Errorf("parse error: %v", got.Err)
				}
				if got.Time() != time.Unix(int64(w.TimeSec), int64(w.TimeUsec)*1000) {
					t.Errorf("Time() = %v", got.Time())
				}
				raw := got.Fields
				got.Fields, got.Err = nil, nil
				if !reflect.DeepEqual(got, w) {
					t.Errorf("decoded packet\n got %+v\nwant %+v\nline %v", got, w, raw)
				}
				// Kamailio's quirks, kept in the raw fields.
				if w.AuthKey == nil && (raw["authkey"] != "30" || raw["hasauthkey"] != "0") {
					t.Errorf("absent auth key logged as %q (has %q), want \"30\" (has \"0\")", raw["authkey"], raw["hasauthkey"])
				}
				if w.KeepAlive == 0 && raw["keepalive"] != "" {
					t.Errorf("absent keepalive logged as %q", raw["keepalive"])
				}
			}
		})
	}
	pkts := c.WaitFor(t, n, 20*time.Second)
	if len(pkts) != n {
		t.Errorf("Packets() = %d packets, want %d", len(pkts), n)
	}
	for _, p := range pkts {
		if p.IsProbe() {
			t.Errorf("Packets() returned a probe %q", p.CorrelationID)
		}
	}
	if !strings.Contains(c.Instance().Log(), "corrid="+hex.EncodeToString([]byte(kamailio.HEPProbePrefix))) {
		t.Errorf("no probe in the log")
	}
}

func TestParseHEPLine(t *testing.T) {
	if _, ok := kamailio.ParseHEPLine(" 0(1) NOTICE: <core> [main.c:733]: handle_sigs(): Thank you for flying kamailio!!!"); ok {
		t.Error("a non-HEP line parsed")
	}
	// A datagram that is not HEP3: Kamailio logs version 4294967295 and empty fields.
	p, ok := kamailio.ParseHEPLine(" 1(2) NOTICE: <script>: HEP rcv=udp peer=127.0.0.1:4000 version=4294967295 family= ipproto= src4= dst4= src6= dst6= sport= dport= tsec= tusec= ptype= capid= keepalive= hasauthkey=0 authkey=30 hascorrid=0 corrid=30 t16= vlan= node= haspayload=0 plen=1 payload=30 END")
	if !ok || p.Err != nil || p.Version != 4294967295 || p.Transport != "udp" || p.Peer != netip.MustParseAddrPort("127.0.0.1:4000") ||
		p.AuthKey != nil || p.CorrelationID != nil || p.Payload != nil || p.PayloadLen != 0 || p.Src.IsValid() {
		t.Errorf("parsed %+v, ok %v", p, ok)
	}
	if p, _ := kamailio.ParseHEPLine("HEP rcv=tcp peer=127.0.0.1:1 version=x haspayload=1 plen=2 payload=zz END"); p.Err == nil {
		t.Error("bad values parsed without error")
	}
}
