package pcap

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// pkt is one decoded packet of a written file.
type pkt struct {
	ts       time.Time
	frameLen int
	is6      bool
	src, dst netip.AddrPort
	seq, ack uint32
	syn, fin bool
	hasAck   bool
	psh      bool
	payload  []byte
}

func (p pkt) flags() string {
	s := ""
	for _, f := range []struct {
		on   bool
		name string
	}{{p.syn, "S"}, {p.fin, "F"}, {p.psh, "P"}, {p.hasAck, "A"}} {
		if f.on {
			s += f.name
		}
	}
	return s
}

// readPcap decodes every packet of a file, checking the file header, the
// layer stack, IP and TCP checksums, TTL and lengths.
func readPcap(t testing.TB, path string) []pkt {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("%s: link type %v", path, r.LinkType())
	}
	var out []pkt
	for i := 1; ; i++ {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", path, i, err)
		}
		if ci.CaptureLength != ci.Length {
			t.Fatalf("%s: packet %d truncated", path, i)
		}
		p := decode(t, data)
		p.ts = ci.Timestamp
		out = append(out, p)
	}
}

func decode(t testing.TB, data []byte) pkt {
	t.Helper()
	gp := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
	if el := gp.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	tcp, _ := gp.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil {
		t.Fatalf("no TCP layer in %v", gp)
	}
	p := pkt{frameLen: len(data), seq: tcp.Seq, ack: tcp.Ack, syn: tcp.SYN, fin: tcp.FIN, hasAck: tcp.ACK, psh: tcp.PSH}
	if tcp.RST || tcp.URG || tcp.Window != tcpWindow || tcp.DataOffset != 5 {
		t.Fatalf("unexpected TCP header %+v", tcp)
	}
	p.payload = slices.Clone(tcp.Payload)
	seg := append(slices.Clone(tcp.Contents), tcp.Payload...)
	var pseudo []byte
	switch ip := gp.NetworkLayer().(type) {
	case *layers.IPv4:
		if ip.TTL != ipTTL || ip.Protocol != layers.IPProtocolTCP || ip.IHL != 5 {
			t.Fatalf("unexpected IPv4 header %+v", ip)
		}
		if fold(sum(ip.Contents, 0)) != 0xffff {
			t.Fatalf("bad IPv4 header checksum %#x", ip.Checksum)
		}
		if int(ip.Length) != 20+len(seg) || ip.Length > 65535 {
			t.Fatalf("IPv4 length %d, segment %d", ip.Length, len(seg))
		}
		s, _ := netip.AddrFromSlice(ip.SrcIP)
		d, _ := netip.AddrFromSlice(ip.DstIP)
		p.src, p.dst = netip.AddrPortFrom(s, uint16(tcp.SrcPort)), netip.AddrPortFrom(d, uint16(tcp.DstPort))
		pseudo = append(append(slices.Clone(ip.SrcIP.To4()), ip.DstIP.To4()...), 0, 6, byte(len(seg)>>8), byte(len(seg)))
	case *layers.IPv6:
		p.is6 = true
		if ip.HopLimit != ipTTL || ip.NextHeader != layers.IPProtocolTCP {
			t.Fatalf("unexpected IPv6 header %+v", ip)
		}
		if int(ip.Length) != len(seg) {
			t.Fatalf("IPv6 payload length %d, segment %d", ip.Length, len(seg))
		}
		s, _ := netip.AddrFromSlice(ip.SrcIP)
		d, _ := netip.AddrFromSlice(ip.DstIP)
		p.src, p.dst = netip.AddrPortFrom(s, uint16(tcp.SrcPort)), netip.AddrPortFrom(d, uint16(tcp.DstPort))
		pseudo = append(slices.Clone(ip.SrcIP.To16()), ip.DstIP.To16()...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, 6)
	default:
		t.Fatalf("unexpected network layer %T", ip)
	}
	if fold(sum(seg, sum(pseudo, 0))) != 0xffff {
		t.Fatalf("bad TCP checksum %#x in %v -> %v", tcp.Checksum, p.src, p.dst)
	}
	return p
}

func sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// streams checks TCP sequence and acknowledgement continuity in both
// directions of every connection in pkts and returns each direction's
// reassembled payload, keyed by "src>dst".
func streams(t testing.TB, pkts []pkt) map[string][]byte {
	t.Helper()
	type dir struct {
		next    uint32
		acked   uint32 // what the other side acknowledged of this direction
		hasAck  bool
		started bool
	}
	dirs := map[[2]netip.AddrPort]*dir{}
	get := func(a, b netip.AddrPort) *dir {
		d := dirs[[2]netip.AddrPort{a, b}]
		if d == nil {
			d = &dir{}
			dirs[[2]netip.AddrPort{a, b}] = d
		}
		return d
	}
	data := map[string][]byte{}
	for i, p := range pkts {
		d, rev := get(p.src, p.dst), get(p.dst, p.src)
		switch {
		case d.started && p.seq != d.next:
			t.Fatalf("packet %d %v>%v: seq %d, want %d", i, p.src, p.dst, p.seq, d.next)
		case !d.started && d.hasAck && !p.syn && p.seq != d.acked:
			t.Fatalf("packet %d %v>%v: first seq %d, but peer acked %d", i, p.src, p.dst, p.seq, d.acked)
		}
		d.started = true
		d.next = p.seq + uint32(len(p.payload))
		if p.syn {
			d.next++
		}
		if p.fin {
			d.next++
		}
		if p.hasAck {
			if rev.started && p.ack != rev.next {
				t.Fatalf("packet %d %v>%v: ack %d, want %d", i, p.src, p.dst, p.ack, rev.next)
			}
			rev.acked, rev.hasAck = p.ack, true
		}
		if len(p.payload) > 0 {
			if !p.psh || !p.hasAck || p.syn || p.fin {
				t.Fatalf("packet %d: data with flags %s", i, p.flags())
			}
			k := p.src.String() + ">" + p.dst.String()
			data[k] = append(data[k], p.payload...)
		}
	}
	return data
}

// ourPcaps lists the files of prefix in dir, oldest first.
func ourPcaps(t testing.TB, dir, prefix string) []string {
	t.Helper()
	w := &Writer{cfg: Config{Dir: dir, Prefix: prefix}}
	files, err := w.ourFiles()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		out = append(out, filepath.Join(dir, f.name))
	}
	return out
}

// fakeClock is an injectable Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustOpen(t testing.TB, cfg Config) *Writer {
	t.Helper()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
