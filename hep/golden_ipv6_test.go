package hep

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// goldenIPv6Frame is an MSRP frame relayed over IPv6, written out by hand chunk by chunk from the
// HEP3 specification (generic chunk types, rev. 37), not produced by this package: family 10
// (AF_INET6), 16-byte address chunks 0x0005/0x0006, the default type 100 (LOG), a node name, the
// payload and the correlation id. The source address has a different value in every byte, so a
// byte order or offset slip cannot pass.
var goldenIPv6Frame = []struct{ name, hex string }{
	{"header", "48455033" + "00ad"}, // "HEP3", total length 173
	{"family", "0000" + "0001" + "0007" + "0a"},
	{"ip proto", "0000" + "0002" + "0007" + "06"},
	{"src port", "0000" + "0007" + "0008" + "9c40"},    // 40000
	{"dst port", "0000" + "0008" + "0008" + "0b27"},    // 2855
	{"seconds", "0000" + "0009" + "000a" + "6553f100"}, // 1700000000
	{"usec", "0000" + "000a" + "000a" + "0001e240"},    // 123456
	{"proto type", "0000" + "000b" + "0007" + "64"},    // 100 LOG
	{"capture id", "0000" + "000c" + "000a" + "01020304"},
	{"src ipv6", "0000" + "0005" + "0016" + "20010db8" + "01020304" + "05060708" + "090a0b0c"},
	{"dst ipv6", "0000" + "0006" + "0016" + "20010db8" + "ffff0000" + "00000000" + "000000fe"},
	{"node name", "0000" + "0013" + "000d" + hex.EncodeToString([]byte("relay-1"))},
	{"payload", "0000" + "000f" + "0020" + hex.EncodeToString([]byte(goldenIPv6Msrp))},
	{"correlation id", "0000" + "0011" + "000b" + hex.EncodeToString([]byte("s1~s2"))},
}

const goldenIPv6Msrp = "MSRP a1 SEND\r\n-------a1$\r\n" // 26 bytes

var (
	goldenIPv6Src = netip.MustParseAddrPort("[2001:db8:102:304:506:708:90a:b0c]:40000")
	goldenIPv6Dst = netip.MustParseAddrPort("[2001:db8:ffff::fe]:2855")
)

// TestGoldenIPv6Frame pins the encoding of an IPv6 packet byte for byte, the family chunk's value 10
// included: a round trip alone passes with any family value the decoder also accepts.
func TestGoldenIPv6Frame(t *testing.T) {
	want := goldenIPv6Bytes(t)
	if len(want) != 173 {
		t.Fatalf("golden is %d bytes, want 173", len(want))
	}

	meta := Meta{Src: goldenIPv6Src, Dst: goldenIPv6Dst, Time: goldenTime, CorrelationID: []byte("s1~s2")}
	pr := Profile{CaptureID: 0x01020304, NodeName: []byte("relay-1")}
	p := Packet{
		IPProto: IPProtoTCP, Src: goldenIPv6Src, Dst: goldenIPv6Dst, Time: goldenTime,
		ProtoType: ProtoLog, CaptureID: 0x01020304, NodeName: []byte("relay-1"),
		Payload: []byte(goldenIPv6Msrp), CorrelationID: []byte("s1~s2"),
	}
	explicit := p
	explicit.Family = FamilyIPv6
	encoders := []struct {
		name string
		enc  func() ([]byte, error)
	}{
		{"Profile.AppendFramePacket", func() ([]byte, error) {
			return pr.AppendFramePacket(nil, meta, []byte(goldenIPv6Msrp))
		}},
		{"Packet.AppendEncode, family derived", func() ([]byte, error) { return p.AppendEncode(nil) }},
		{"Packet.AppendEncode, family set", func() ([]byte, error) { return explicit.AppendEncode(nil) }},
	}
	for _, e := range encoders {
		t.Run(e.name, func(t *testing.T) {
			got, err := e.enc()
			if err != nil {
				t.Fatal(err)
			}
			compareChunks(t, got, goldenIPv6Frame)
			if !bytes.Equal(got, want) {
				t.Fatalf("\n got %x\nwant %x", got, want)
			}
		})
	}

	d, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	if diff := packetDiff(explicit, d); diff != "" {
		t.Fatal(diff)
	}
}

func goldenIPv6Bytes(t testing.TB) []byte {
	var b []byte
	for _, c := range goldenIPv6Frame {
		b = append(b, mustHex(t, c.hex)...)
	}
	return b
}

// compareChunks walks got chunk by chunk against the golden chunks and names the first that differs.
func compareChunks(t *testing.T, got []byte, golden []struct{ name, hex string }) {
	t.Helper()
	off := 0
	for i, c := range golden {
		w := mustHex(t, c.hex)
		n := len(w)
		if i > 0 && len(got)-off >= chunkHeaderLen {
			n = int(binary.BigEndian.Uint16(got[off+4:])) // the chunk's own length, to report it whole
		}
		if off+n > len(got) {
			t.Fatalf("chunk %s: got %d bytes left, want %x", c.name, len(got)-off, w)
		}
		if g := got[off : off+n]; !bytes.Equal(g, w) {
			t.Fatalf("chunk %s at offset %d:\n got %s\nwant %s", c.name, off, spaced(g), spaced(w))
		}
		off += n
	}
	if off != len(got) {
		t.Fatalf("%d bytes after the last golden chunk: %x", len(got)-off, got[off:])
	}
}

// spaced renders a chunk as "vendor type length data".
func spaced(b []byte) string {
	h := hex.EncodeToString(b)
	var parts []string
	for range 3 {
		if len(h) <= 4 {
			break
		}
		parts = append(parts, h[:4])
		h = h[4:]
	}
	return strings.Join(append(parts, h), " ")
}
