package pcap

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// gopacketRecord is what the Writer wrote before it built headers itself:
// gopacket's layers serialized with lengths and checksums, through pcapgo.
func gopacketRecord(t *testing.T, ts time.Time, src, dst netip.AddrPort, ipID uint16, seq, ack uint32, flags tcpFlags, payload []byte, snap int) []byte {
	t.Helper()
	sa, da := src.Addr(), dst.Addr()
	var sm, dm [6]byte
	mac := func(m *[6]byte, a netip.Addr) {
		m[0], m[1] = 2, 0
		b := a.As16()
		copy(m[2:], b[12:])
		if a.Is4() {
			b4 := a.As4()
			copy(m[2:], b4[:])
		}
	}
	mac(&sm, sa)
	mac(&dm, da)
	eth := &layers.Ethernet{SrcMAC: sm[:], DstMAC: dm[:]}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack,
		FIN: flags&finFlag != 0, SYN: flags&synFlag != 0, RST: flags&rstFlag != 0, PSH: flags&pshFlag != 0, ACK: flags&ackFlag != 0,
		Window: tcpWindow}
	var ip gopacket.SerializableLayer
	if sa.Is4() {
		s4, d4 := sa.As4(), da.As4()
		ip4 := &layers.IPv4{Version: 4, TTL: ipTTL, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment, Id: ipID, SrcIP: s4[:], DstIP: d4[:]}
		eth.EthernetType = layers.EthernetTypeIPv4
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			t.Fatal(err)
		}
		ip = ip4
	} else {
		s16, d16 := sa.As16(), da.As16()
		ip6 := &layers.IPv6{Version: 6, HopLimit: ipTTL, NextHeader: layers.IPProtocolTCP, SrcIP: s16[:], DstIP: d16[:]}
		eth.EthernetType = layers.EthernetTypeIPv6
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			t.Fatal(err)
		}
		ip = ip6
	}
	sb := gopacket.NewSerializeBuffer()
	pl := gopacket.Payload(payload)
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, tcp, &pl); err != nil {
		t.Fatal(err)
	}
	data := sb.Bytes()
	capLen := min(len(data), snap)
	var out bytes.Buffer
	pw := pcapgo.NewWriterNanos(&out)
	if err := pw.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: capLen, Length: len(data)}, data[:capLen]); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// The hand-built packets are byte for byte what gopacket serializes:
// both families, every flag, payloads of every length parity, checksums
// that carry, a capture shorter than the packet.
func TestPacketMatchesGopacket(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pairs := [][2]string{
		{"127.0.0.1:2855", "127.0.0.1:40000"},
		{"10.255.255.254:65535", "192.168.0.1:1"},
		{"[::1]:2855", "[2001:db8::ffff:1]:5060"},
		{"[fe80::1:2:3:4]:1", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
	}
	flagSets := []tcpFlags{synFlag, synFlag | ackFlag, ackFlag, pshFlag | ackFlag, finFlag | ackFlag, rstFlag, 0, finFlag | synFlag | rstFlag | pshFlag | ackFlag}
	for _, p := range pairs {
		src, dst := netip.MustParseAddrPort(p[0]), netip.MustParseAddrPort(p[1])
		for _, fl := range flagSets {
			for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 100, 1459, 1460, 4001} {
				payload := make([]byte, n)
				for i := range payload {
					payload[i] = byte(rng.Uint32())
				}
				if n > 2 {
					payload[0], payload[1] = 0xff, 0xff // carries in the sum
				}
				ts := time.Unix(1700000000+int64(rng.Uint32()%1000), int64(rng.Uint32()%1e9))
				ipID, seq, ack := uint16(rng.Uint32()), rng.Uint32(), rng.Uint32()
				length := ethLen + tcpLen + n + ip4Len
				if !src.Addr().Is4() {
					length += ip6Len - ip4Len
				}
				length = max(length, ethMinFrame)
				for _, snap := range []int{DefaultSnapLen, 60, 58, 30, length - 1} {
					if snap <= 0 {
						continue
					}
					want := gopacketRecord(t, ts, src, dst, ipID, seq, ack, fl, payload, snap)
					got := appendPacket([]byte("x"), ts, src, dst, ipID, seq, ack, fl, payload, min(length, snap))
					if !bytes.Equal(got[1:], want) || got[0] != 'x' {
						t.Fatalf("%v -> %v flags %x payload %d snap %d:\ngot  %x\nwant %x", src, dst, fl, n, snap, got[1:], want)
					}
				}
			}
		}
	}
}

func TestAppendPacketAllocs(t *testing.T) {
	src, dst := netip.MustParseAddrPort("[::1]:2855"), netip.MustParseAddrPort("[::1]:40000")
	payload := make([]byte, 500)
	buf := make([]byte, 0, 4096)
	ts := time.Unix(1700000000, 0)
	if n := testing.AllocsPerRun(100, func() {
		buf = appendPacket(buf[:0], ts, src, dst, 1, 2, 3, pshFlag|ackFlag, payload, 574)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkAppendPacket(b *testing.B) {
	src, dst := netip.MustParseAddrPort("127.0.0.1:2855"), netip.MustParseAddrPort("127.0.0.1:40000")
	payload := make([]byte, 400)
	buf := make([]byte, 0, 4096)
	ts := time.Unix(1700000000, 0)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendPacket(buf[:0], ts, src, dst, 1, 2, 3, pshFlag|ackFlag, payload, 454)
	}
}

// A file's age is taken at each record's own time, not by reading the
// clock per record: records stamped an age apart rotate while Now stands
// still.
func TestRotationByRecordTime(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: t0}
	w, err := Open(Config{Dir: dir, MaxFileAge: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	for i, st := range []struct {
		at    time.Duration
		files int64
	}{{0, 1}, {59 * time.Second, 1}, {time.Minute, 2}} {
		if err := w.Data(t0.Add(st.at), c, s, []byte("tick")); err != nil {
			t.Fatal(err)
		}
		if got := w.Stats().Files; got != st.files {
			t.Fatalf("record %d: %d files, want %d", i, got, st.files)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
