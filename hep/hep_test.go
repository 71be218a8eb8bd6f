package hep

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// goldenConnected is a CONNECTED event as OpenSIPS builds it (modules/proto_hep/hep.c build_hep3_buf:
// the fixed block of hep.h:141-151, the IPv4 chunks, the "net" payload in homer5 form, the decimal
// connection id), written out by hand from that layout (not produced by this package), with concrete
// values for the placeholders: remote (HEP src, as OpenSIPS does it) 10.0.0.1:40000, local
// 10.0.0.2:2855, time 1700000000.123456, capture id 1, cid "1234567890123456789".
var goldenConnected = strings.Join([]string{
	"48455033" + "00ab",                   // 0: "HEP3", total length 171
	"0000" + "0001" + "0007" + "02",       // 6: family AF_INET
	"0000" + "0002" + "0007" + "06",       // 13: IPPROTO_TCP
	"0000" + "0007" + "0008" + "9c40",     // 20: src port 40000
	"0000" + "0008" + "0008" + "0b27",     // 28: dst port 2855
	"0000" + "0009" + "000a" + "6553f100", // 36: seconds 1700000000
	"0000" + "000a" + "000a" + "0001e240", // 46: microseconds 123456
	"0000" + "000b" + "0007" + "59",       // 56: proto type 0x59 "net"
	"0000" + "000c" + "000a" + "00000001", // 63: capture id 1
	"0000" + "0003" + "000a" + "0a000001", // 73: src IPv4 10.0.0.1
	"0000" + "0004" + "000a" + "0a000002", // 83: dst IPv4 10.0.0.2
	"0000" + "000f" + "0035" + hex.EncodeToString([]byte("TCP:CONNECTED:SUCCESS:Successfully connected...")), // 93
	"0000" + "0011" + "0019" + hex.EncodeToString([]byte("1234567890123456789")),                             // 146
}, "")

var (
	goldenSrc  = netip.MustParseAddrPort("10.0.0.1:40000")
	goldenDst  = netip.MustParseAddrPort("10.0.0.2:2855")
	goldenTime = time.Unix(1700000000, 123456000).UTC()
	goldenCID  = []byte("1234567890123456789")
	goldenEv   = Event{Protocol: "TCP", Name: EventConnected, Status: StatusSuccess, Message: "Successfully connected..."}
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoldenConnected(t *testing.T) {
	want := mustHex(t, goldenConnected)
	if len(want) != 171 {
		t.Fatalf("golden is %d bytes, want 171", len(want))
	}

	// 1. Through Packet + AppendEvent.
	p := Packet{
		IPProto:       IPProtoTCP,
		Src:           goldenSrc,
		Dst:           goldenDst,
		Time:          goldenTime,
		ProtoType:     ProtoNet,
		CaptureID:     1,
		Payload:       AppendEvent(nil, FormColon, goldenEv),
		CorrelationID: goldenCID,
	}
	got, err := p.AppendEncode([]byte("prefix"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], want) {
		t.Fatalf("AppendEncode:\n got %x\nwant %x", got[6:], want)
	}
	if n := p.EncodedLen(); n != len(want) {
		t.Errorf("EncodedLen = %d, want %d", n, len(want))
	}

	// 2. Through the Profile helper in OpenSIPS-compatibility mode.
	pr := Profile{ProtoType: ProtoNet, CaptureID: 1, EventForm: FormColon}
	got, err = pr.AppendEventPacket(nil, Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: goldenCID}, goldenEv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendEventPacket:\n got %x\nwant %x", got, want)
	}

	// 3. Decoding the golden bytes gives the fields back.
	d, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	p.Family = FamilyIPv4
	if diff := packetDiff(p, d); diff != "" {
		t.Fatal(diff)
	}
}

// packetDiff compares two packets field by field, including nil-ness (chunk presence) of byte slices.
func packetDiff(a, b Packet) string {
	var d []string
	cmp := func(name string, x, y any) {
		if x != y {
			d = append(d, name+": "+fmtAny(x)+" != "+fmtAny(y))
		}
	}
	cmpB := func(name string, x, y []byte) {
		if (x == nil) != (y == nil) || !bytes.Equal(x, y) {
			d = append(d, name+": "+fmtBytes(x)+" != "+fmtBytes(y))
		}
	}
	cmp("Family", a.Family, b.Family)
	cmp("IPProto", a.IPProto, b.IPProto)
	cmp("Src", a.Src, b.Src)
	cmp("Dst", a.Dst, b.Dst)
	if !a.Time.Equal(b.Time) || a.Time.IsZero() != b.Time.IsZero() {
		d = append(d, "Time: "+a.Time.String()+" != "+b.Time.String())
	}
	cmp("ProtoType", a.ProtoType, b.ProtoType)
	cmp("CaptureID", a.CaptureID, b.CaptureID)
	cmp("KeepAlive", a.KeepAlive, b.KeepAlive)
	cmpB("AuthKey", a.AuthKey, b.AuthKey)
	cmpB("Payload", a.Payload, b.Payload)
	cmpB("CompressedPayload", a.CompressedPayload, b.CompressedPayload)
	cmpB("CorrelationID", a.CorrelationID, b.CorrelationID)
	cmp("VLAN", a.VLAN, b.VLAN)
	cmpB("NodeName", a.NodeName, b.NodeName)
	if len(a.Extra) != len(b.Extra) {
		d = append(d, "len(Extra): "+fmtAny(len(a.Extra))+" != "+fmtAny(len(b.Extra)))
	} else {
		for i := range a.Extra {
			cmp("Extra.Vendor", a.Extra[i].Vendor, b.Extra[i].Vendor)
			cmp("Extra.Type", a.Extra[i].Type, b.Extra[i].Type)
			cmpB("Extra.Data", a.Extra[i].Data, b.Extra[i].Data)
		}
	}
	return strings.Join(d, "\n")
}

func TestRoundTrip(t *testing.T) {
	full := Packet{
		Family:            FamilyIPv6,
		IPProto:           IPProtoTCP,
		Src:               netip.MustParseAddrPort("[2001:db8::1]:2855"),
		Dst:               netip.MustParseAddrPort("[2001:db8::2]:40001"),
		Time:              time.Unix(1795424624, 406933000).UTC(),
		ProtoType:         ProtoLog,
		CaptureID:         0xfffffffe,
		KeepAlive:         30,
		AuthKey:           []byte("secret"),
		Payload:           []byte("MSRP a1 SEND\r\n-------a1$\r\n"),
		CompressedPayload: []byte{0x1f, 0x8b, 0, 1},
		CorrelationID:     []byte("sess-1"),
		VLAN:              4094,
		NodeName:          []byte("relay-1"),
		Extra: []Chunk{
			{Vendor: 0x22, Type: 0x1234, Data: []byte{1, 2}},
			{Vendor: 0, Type: 0x0065, Data: []byte(`{"x":1}`)}, // unknown generic (OpenSIPS extra correlation)
			{Vendor: 7, Type: 0x000f, Data: []byte{}},          // vendor chunk reusing a generic number
		},
	}
	tests := []struct {
		name string
		in   Packet
		want *Packet // what Decode returns; nil means "same as in"
	}{
		{name: "all chunks", in: full},
		{name: "ipv4 family derived", in: Packet{
			Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("192.0.2.2:2"),
			ProtoType: ProtoLog, Payload: []byte("x"), CorrelationID: []byte("c"),
		}, want: &Packet{
			Family: FamilyIPv4, Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("192.0.2.2:2"),
			ProtoType: ProtoLog, Payload: []byte("x"), CorrelationID: []byte("c"),
		}},
		{name: "ipv4-mapped ipv6 stays ipv6", in: Packet{
			Src: netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), Dst: netip.MustParseAddrPort("[2001:db8::9]:2"),
		}, want: &Packet{
			Family: FamilyIPv6, Src: netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), Dst: netip.MustParseAddrPort("[2001:db8::9]:2"),
		}},
		{name: "no addresses, ports kept", in: Packet{
			Src: netip.AddrPortFrom(netip.Addr{}, 5060), ProtoType: ProtoLog,
		}},
		{name: "empty payload present", in: Packet{Payload: []byte{}, CorrelationID: []byte{}, AuthKey: []byte{}}},
		{name: "zero packet", in: Packet{}},
		{name: "time zero usec", in: Packet{Time: time.Unix(5, 0).UTC()}},
		{name: "time zero sec", in: Packet{Time: time.Unix(0, 999999000).UTC()}},
		{name: "max payload", in: Packet{Payload: bytes.Repeat([]byte("a"), maxTotalLen-emptyHeadLen-chunkHeaderLen)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.in.AppendEncode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tc.in.EncodedLen() {
				t.Errorf("encoded %d bytes, EncodedLen %d", len(b), tc.in.EncodedLen())
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v\n%x", err, b)
			}
			want := tc.in
			if tc.want != nil {
				want = *tc.want
			}
			if diff := packetDiff(want, got); diff != "" {
				t.Fatal(diff)
			}
			// Re-encoding the decoded packet gives the same bytes.
			b2, err := got.AppendEncode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("re-encode differs:\n%x\n%x", b, b2)
			}
		})
	}
}

func TestEncodeTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte("a"), maxTotalLen)
	for name, p := range map[string]Packet{
		"payload chunk":  {Payload: big},
		"total":          {Payload: big[:maxTotalLen-100], CorrelationID: big[:200]},
		"extra chunk":    {Extra: []Chunk{{Vendor: 1, Type: 1, Data: big}}},
		"just over 64 K": {Payload: big[:maxTotalLen-emptyHeadLen-chunkHeaderLen+1]},
	} {
		got, err := p.AppendEncode([]byte("keep"))
		if !errors.Is(err, ErrTooLarge) || string(got) != "keep" {
			t.Errorf("%s: got %d bytes, err %v; want dst unchanged and ErrTooLarge", name, len(got), err)
		}
	}
	v4, v6 := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	for name, p := range map[string]Packet{
		"v4 src, v6 dst": {Src: v4, Dst: v6},
		"v6 src, v4 dst": {Src: v6, Dst: v4},
		"family 2, v6":   {Family: FamilyIPv4, Dst: v6},
		"family 10, v4":  {Family: FamilyIPv6, Src: v4},
	} {
		if _, err := p.AppendEncode(nil); !errors.Is(err, ErrBadValue) {
			t.Errorf("%s: err = %v, want ErrBadValue", name, err)
		}
	}
}

// chunk builds one chunk for hand-made test packets.
func chunk(vendor, typ uint16, data ...byte) []byte {
	return append([]byte{byte(vendor >> 8), byte(vendor), byte(typ >> 8), byte(typ), byte((6 + len(data)) >> 8), byte(6 + len(data))}, data...)
}

func packet(chunks ...[]byte) []byte {
	body := bytes.Join(chunks, nil)
	n := 6 + len(body)
	return append([]byte{'H', 'E', 'P', '3', byte(n >> 8), byte(n)}, body...)
}

func TestDecodeErrors(t *testing.T) {
	ok := packet(chunk(0, ChunkProtoType, 100), chunk(0, ChunkPayload, 'x'))
	if _, err := Decode(ok); err != nil {
		t.Fatalf("valid packet: %v", err)
	}
	withLen := func(b []byte, n int) []byte {
		b = bytes.Clone(b)
		b[4], b[5] = byte(n>>8), byte(n)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
		msg  string // substring of the error text
	}{
		{"empty", nil, ErrShort, "need 6"},
		{"5 bytes", []byte("HEP3\x00"), ErrShort, "need 6"},
		{"HEP2", []byte("HEP2\x00\x06"), ErrMagic, `"HEP2"`},
		{"garbage", []byte("INVITE sip:x SIP/2.0\r\n"), ErrMagic, "magic"},
		{"total < header", withLen(ok, 5), ErrTotalLength, "total length 5"},
		{"total > received", withLen(ok, len(ok)+1), ErrShort, "> 20 bytes"},
		{"trailing bytes", append(bytes.Clone(ok), 0), ErrTotalLength, "1 trailing"},
		{"chunk header cut", withLen(append(bytes.Clone(ok), 0, 0, 0), len(ok)+3), ErrChunkLength, "3 bytes left"},
		{"chunk length 0", packet(chunk(0, ChunkPayload, 'x')[:4], []byte{0, 0}), ErrChunkLength, "length 0"},
		{"chunk length 5", packet([]byte{0, 0, 0, 0x0f, 0, 5}), ErrChunkLength, "length 5"},
		{"chunk past end", packet([]byte{0, 0, 0, 0x0f, 0, 9, 'a'}), ErrChunkLength, "chunk 0x000f at offset 6: length 9"},
		{"proto type 2 bytes", packet(chunk(0, ChunkProtoType, 0, 100)), ErrChunkSize, "chunk 0x000b at offset 6: 2 data bytes, want 1"},
		{"proto type empty", packet(chunk(0, ChunkProtoType)), ErrChunkSize, "want 1"},
		{"ipv4 src 16 bytes", packet(chunk(0, ChunkIPv4Src, make([]byte, 16)...)), ErrChunkSize, "want 4"},
		{"ipv6 dst 4 bytes", packet(chunk(0, ChunkIPv6Dst, 1, 2, 3, 4)), ErrChunkSize, "want 16"},
		{"port 4 bytes", packet(chunk(0, ChunkSrcPort, 0, 0, 0, 1)), ErrChunkSize, "want 2"},
		{"seconds 8 bytes", packet(chunk(0, ChunkTimeSec, make([]byte, 8)...)), ErrChunkSize, "want 4"},
		{"capture id 2 bytes", packet(chunk(0, ChunkCaptureID, 0, 1)), ErrChunkSize, "want 4"},
		{"keepalive 1 byte", packet(chunk(0, ChunkKeepAlive, 1)), ErrChunkSize, "want 2"},
		{"vlan 4 bytes", packet(chunk(0, ChunkVLAN, 0, 0, 0, 1)), ErrChunkSize, "want 2"},
		{"family 2 bytes", packet(chunk(0, ChunkIPFamily, 0, 2)), ErrChunkSize, "want 1"},
		{"duplicate payload", packet(chunk(0, ChunkPayload, 'a'), chunk(0, ChunkPayload, 'b')), ErrDuplicateChunk, "chunk 0x000f at offset 13"},
		{"duplicate cid", packet(chunk(0, ChunkCorrelationID), chunk(0, ChunkCorrelationID)), ErrDuplicateChunk, "0x0011"},
		{"ipv4 and ipv6 src", packet(chunk(0, ChunkIPv4Src, 1, 2, 3, 4), chunk(0, ChunkIPv6Src, make([]byte, 16)...)), ErrDuplicateChunk, "0x0005"},
		{"family 7", packet(chunk(0, ChunkIPFamily, 7)), ErrBadValue, "address family 7"},
		{"usec 1e6", packet(chunk(0, ChunkTimeUsec, 0, 0x0f, 0x42, 0x40)), ErrBadValue, "1000000 microseconds"},
		{"family 2 with ipv6", packet(chunk(0, ChunkIPFamily, 2), chunk(0, ChunkIPv6Dst, make([]byte, 16)...)), ErrBadValue, "address family 2 but address ::"},
		{"family 10 with ipv4", packet(chunk(0, ChunkIPFamily, 10), chunk(0, ChunkIPv4Src, 1, 2, 3, 4)), ErrBadValue, "1.2.3.4"},
		{"no family, ipv6 src, ipv4 dst", packet(chunk(0, ChunkIPv6Src, make([]byte, 16)...), chunk(0, ChunkIPv4Dst, 1, 2, 3, 4)), ErrBadValue, "address family 10 but address 1.2.3.4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Packet{Payload: []byte("stale"), Extra: make([]Chunk, 0, 4)}
			err := p.Unmarshal(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.msg)
			}
			if diff := packetDiff(Packet{}, p); diff != "" {
				t.Errorf("packet not reset after error: %s", diff)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		check func(t *testing.T, p Packet)
	}{
		{"header only", packet(), func(t *testing.T, p Packet) {
			if diff := packetDiff(Packet{}, p); diff != "" {
				t.Error(diff)
			}
		}},
		{"payload first, fields in any order", packet(chunk(0, ChunkPayload, 'p'), chunk(0, ChunkIPv4Dst, 1, 2, 3, 4), chunk(0, ChunkDstPort, 0, 80)), func(t *testing.T, p Packet) {
			if string(p.Payload) != "p" || p.Dst != netip.MustParseAddrPort("1.2.3.4:80") || p.Family != FamilyIPv4 {
				t.Errorf("got %+v", p)
			}
		}},
		{"vendor chunk with generic type number is extra", packet(chunk(9, ChunkPayload, 'v')), func(t *testing.T, p Packet) {
			if p.Payload != nil || len(p.Extra) != 1 || p.Extra[0].Vendor != 9 || string(p.Extra[0].Data) != "v" {
				t.Errorf("got %+v", p)
			}
		}},
		{"generic type 0 and 0x14 are extra", packet(chunk(0, 0, 1), chunk(0, 0x14, 2)), func(t *testing.T, p Packet) {
			if len(p.Extra) != 2 || p.Extra[0].Type != 0 || p.Extra[1].Type != 0x14 {
				t.Errorf("got %+v", p.Extra)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, p)
		})
	}
}

func TestDecodeIsZeroCopy(t *testing.T) {
	b := packet(chunk(0, ChunkPayload, 'a', 'b'), chunk(0, ChunkCorrelationID, 'c'), chunk(5, 6, 'd'))
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b[12], b[20], b[27] = 'X', 'Y', 'Z'
	if string(p.Payload) != "Xb" || string(p.CorrelationID) != "Y" || string(p.Extra[0].Data) != "Z" {
		t.Fatalf("decoded slices do not alias the input: %q %q %q", p.Payload, p.CorrelationID, p.Extra[0].Data)
	}
	// Appending to a decoded slice must not overwrite the following chunk (capacity is clipped).
	_ = append(p.Payload, '!')
	if b[14] != 0 {
		t.Fatal("append to Payload overwrote the next chunk")
	}
}

// kamailio209 is a hand-built packet Kamailio 5.6.3's sipcapture accepted and logged field by field:
// chunks 1-4, 7-14, 17-19, a vendor chunk, then the payload.
const kamailio209 = `
4845503300d1000000010007020000000200071100000003000a0a00000100000004000a0a00000200000007000813c4
00000008000813d800000009000a6553f1000000000a000a0001e2400000000b0007640000000c000a000007d1000000
0d0008001e0000000e00107365637265742d6b6579000000110011636f72722d78797a2d343200000012000800640000
0013000c6e6f64652d4100221234000801020000000f002f4d5352503a41434345505445443a535543434553533a436f
6e6e656374696f6e206163636570746564`

// kamailioSiptrace373 is a HEP/UDP packet Kamailio 5.6.3 siptrace emitted for a SIP OPTIONS.
const kamailioSiptrace373 = `
484550330175000000010007020000000200071100000003000a7f00000100000004000a7f0000010000000700084c43
0000000800084c4000000009000a6b0401700000000a000a000635950000000b0007010000000c000a000007d1000000
110016636f72722d6b6865702d63616c6c2d310000000e00107365637265742d6b65790000000f00f24f5054494f4e53
207369703a6b616d403132372e302e302e313a3139353230205349502f322e300d0a5669613a205349502f322e302f55
4450203132372e302e302e313a31393532333b6272616e63683d7a39684734624b2d6b686570310d0a46726f6d3a203c
7369703a746573746572403132372e302e302e313e3b7461673d74310d0a546f3a203c7369703a6b616d403132372e30
2e302e313e0d0a43616c6c2d49443a206b6865702d63616c6c2d310d0a435365713a2031204f5054494f4e530d0a4d61
782d466f7277617264733a2037300d0a436f6e74656e742d4c656e6774683a20300d0a0d0a`

func TestDecodeKamailioPackets(t *testing.T) {
	p, err := Decode(mustHex(t, kamailio209))
	if err != nil {
		t.Fatal(err)
	}
	want := Packet{
		Family: FamilyIPv4, IPProto: 17,
		Src:  netip.MustParseAddrPort("10.0.0.1:5060"),
		Dst:  netip.MustParseAddrPort("10.0.0.2:5080"),
		Time: time.Unix(1700000000, 123456000), ProtoType: ProtoLog, CaptureID: 2001, KeepAlive: 30,
		AuthKey: []byte("secret-key"), CorrelationID: []byte("corr-xyz-42"), VLAN: 100, NodeName: []byte("node-A"),
		Payload: []byte("MSRP:ACCEPTED:SUCCESS:Connection accepted"),
		Extra:   []Chunk{{Vendor: 0x22, Type: 0x1234, Data: []byte{1, 2}}},
	}
	if diff := packetDiff(want, p); diff != "" {
		t.Errorf("209-byte packet:\n%s", diff)
	}

	b := mustHex(t, kamailioSiptrace373)
	if len(b) != 373 {
		t.Fatalf("siptrace packet is %d bytes", len(b))
	}
	p, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want = Packet{
		Family: FamilyIPv4, IPProto: 17,
		Src:  netip.MustParseAddrPort("127.0.0.1:19523"),
		Dst:  netip.MustParseAddrPort("127.0.0.1:19520"),
		Time: time.Unix(1795424624, 406933000), ProtoType: ProtoSIP, CaptureID: 2001,
		AuthKey: []byte("secret-key"), CorrelationID: []byte("corr-khep-call-1"),
		Payload: []byte("OPTIONS sip:kam@127.0.0.1:19520 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:19523;branch=z9hG4bK-khep1\r\n" +
			"From: <sip:tester@127.0.0.1>;tag=t1\r\nTo: <sip:kam@127.0.0.1>\r\nCall-ID: khep-call-1\r\nCSeq: 1 OPTIONS\r\n" +
			"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
	}
	if diff := packetDiff(want, p); diff != "" {
		t.Errorf("siptrace packet:\n%s", diff)
	}
}

func TestPacketLenAndReadPacket(t *testing.T) {
	a := mustHex(t, goldenConnected)
	b := mustHex(t, kamailio209)
	stream := append(append(bytes.Clone(a), b...), a[:10]...)
	r := bytes.NewReader(stream)
	buf := make([]byte, 0, 16) // too small: ReadPacket must grow it
	for i, want := range [][]byte{a, b} {
		got, err := ReadPacket(r, buf)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("packet %d differs", i)
		}
	}
	if _, err := ReadPacket(r, buf); !errors.Is(err, ErrShort) {
		t.Fatalf("truncated stream: err = %v, want ErrShort", err)
	}
	if _, err := ReadPacket(bytes.NewReader(nil), buf); err == nil || err.Error() != "EOF" {
		t.Fatalf("empty stream: err = %v, want io.EOF", err)
	}
	if _, err := ReadPacket(bytes.NewReader([]byte("GET / HTTP/1.1\r\n")), buf); !errors.Is(err, ErrMagic) {
		t.Fatalf("garbage stream: err = %v, want ErrMagic", err)
	}
	if n, err := PacketLen(a); err != nil || n != len(a) {
		t.Fatalf("PacketLen = %d, %v", n, err)
	}
}

func TestZeroAllocs(t *testing.T) {
	p := Packet{
		IPProto: IPProtoTCP, Src: netip.MustParseAddrPort("[2001:db8::1]:40000"), Dst: netip.MustParseAddrPort("[2001:db8::2]:2855"), Time: goldenTime,
		ProtoType: ProtoLog, CaptureID: 1, AuthKey: []byte("k"), NodeName: []byte("n"), KeepAlive: 1, VLAN: 2,
		Payload: bytes.Repeat([]byte("x"), 500), CorrelationID: goldenCID,
		Extra: []Chunk{{Vendor: 1, Type: 2, Data: []byte("e")}},
	}
	buf := make([]byte, 0, 4096)
	enc, _ := p.AppendEncode(nil)
	var d Packet
	d.Extra = make([]Chunk, 0, 4)
	pr := Profile{AuthKey: []byte("k"), NodeName: []byte("node"), EventForm: FormJSON, FrameLimit: 300}
	m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: goldenCID}
	ev := Event{Protocol: ProtocolMSRPS, Name: EventTLSHandshake, Status: StatusSuccess, Message: "ok \"quoted\"",
		Extra: []Attr{{AttrClientSubject, "CN=a"}}}
	frame := bytes.Repeat([]byte("y"), 1000)
	for name, f := range map[string]func(){
		"AppendEncode":      func() { buf, _ = p.AppendEncode(buf[:0]) },
		"Unmarshal":         func() { _ = d.Unmarshal(enc) },
		"AppendEvent json":  func() { buf = AppendEvent(buf[:0], FormJSON, ev) },
		"AppendEvent colon": func() { buf = AppendEvent(buf[:0], FormColon, ev) },
		"AppendFrame":       func() { buf = AppendFrame(buf[:0], frame, 300) },
		"AppendEventPacket": func() { buf, _ = pr.AppendEventPacket(buf[:0], m, ev) },
		"AppendFramePacket": func() { buf, _ = pr.AppendFramePacket(buf[:0], m, frame) },
		// The correlation id in the caller's stack array, as hepsink builds it: the
		// encoder must not make it escape.
		"AppendFramePacketFunc, id on the stack": func() {
			var cid [32]byte
			m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: append(cid[:0], "sessA~sessB"...)}
			buf, _ = pr.AppendFramePacketFunc(buf[:0], m, func(dst []byte, _ int) []byte { return append(dst, frame...) })
		},
		"AppendEventPacket, id on the stack": func() {
			var cid [32]byte
			m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: append(cid[:0], "conn-7"...)}
			buf, _ = pr.AppendEventPacket(buf[:0], m, ev)
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, n)
		}
	}
}

func fmtAny(v any) string { return fmt.Sprintf("%v", v) }

func fmtBytes(b []byte) string {
	if b == nil {
		return "<absent>"
	}
	return fmt.Sprintf("%q", b)
}

var emptyHeadLen = (&Packet{}).headLen()
