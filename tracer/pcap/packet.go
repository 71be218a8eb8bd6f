package pcap

import (
	"fmt"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

type tcpFlags uint8

const (
	finFlag tcpFlags = 1 << iota
	synFlag
	rstFlag
	pshFlag
	ackFlag
)

var serializeOpts = gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}

// packet builds one Ethernet/IP/TCP packet from ep.a to ep.b (ep.b to ep.a if
// reverse) and writes it to the current file, rotating first if needed.
// Called with w.mu held; reuses the Writer's layers and buffer.
func (w *Writer) packet(t time.Time, ep endpoints, reverse bool, seq, ack uint32, flags tcpFlags, payload []byte) error {
	if w.waiting() {
		return ErrBackoff
	}
	src, dst := ep.a, ep.b
	if reverse {
		src, dst = dst, src
	}
	sa, da := src.Addr(), dst.Addr()
	var stack []gopacket.SerializableLayer
	if sa.Is4() {
		s4, d4 := sa.As4(), da.As4()
		copy(w.srcIP[:], s4[:])
		copy(w.dstIP[:], d4[:])
		w.ip4.SrcIP, w.ip4.DstIP = w.srcIP[:4], w.dstIP[:4]
		w.ipID++
		w.ip4.Id = w.ipID
		w.eth.EthernetType = layers.EthernetTypeIPv4
		if err := w.tcp.SetNetworkLayerForChecksum(&w.ip4); err != nil {
			return w.fail(fmt.Errorf("pcap: build packet: %w", err))
		}
		stack = w.stack4
	} else {
		w.srcIP, w.dstIP = sa.As16(), da.As16()
		w.ip6.SrcIP, w.ip6.DstIP = w.srcIP[:], w.dstIP[:]
		w.eth.EthernetType = layers.EthernetTypeIPv6
		if err := w.tcp.SetNetworkLayerForChecksum(&w.ip6); err != nil {
			return w.fail(fmt.Errorf("pcap: build packet: %w", err))
		}
		stack = w.stack6
	}
	// Locally administered unicast MACs 02:00:<last four address bytes>.
	macFrom(&w.srcMAC, sa.Is4(), &w.srcIP)
	macFrom(&w.dstMAC, da.Is4(), &w.dstIP)

	w.tcp.SrcPort, w.tcp.DstPort = layers.TCPPort(src.Port()), layers.TCPPort(dst.Port())
	w.tcp.Seq, w.tcp.Ack = seq, ack
	w.tcp.FIN, w.tcp.SYN, w.tcp.RST = flags&finFlag != 0, flags&synFlag != 0, flags&rstFlag != 0
	w.tcp.PSH, w.tcp.ACK = flags&pshFlag != 0, flags&ackFlag != 0
	w.tcp.Window = tcpWindow
	w.payload = payload
	err := gopacket.SerializeLayers(w.sbuf, serializeOpts, stack...)
	w.payload = nil
	if err != nil {
		return w.fail(fmt.Errorf("pcap: build packet %v -> %v: %w", src, dst, err))
	}
	data := w.sbuf.Bytes()
	capLen := min(len(data), int(w.cfg.SnapLen))
	recLen := int64(recordHeaderLen + capLen)

	if len(w.buf.b) >= bufSize {
		// Before the packet, so a record's last packet is always
		// buffered when its call returns: Records stays exact.
		if err := w.flush(); err != nil {
			return err
		}
	}
	if w.f == nil || w.rotateDue || (w.packets > 0 && w.size+recLen > w.cfg.MaxFileBytes) {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	if t.IsZero() {
		t = w.cfg.Now()
	}
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: capLen, Length: len(data)}
	if err := w.pw.WritePacket(ci, data[:capLen]); err != nil {
		return w.fail(fmt.Errorf("pcap: buffer packet: %w", err)) // appendBuf does not fail
	}
	w.size += recLen
	w.packets++
	w.pendPackets++
	return nil
}

// macFrom fills mac with 02:00 followed by the address's last four bytes.
func macFrom(mac *[6]byte, is4 bool, ip *[16]byte) {
	last := ip[12:16]
	if is4 {
		last = ip[0:4]
	}
	mac[0], mac[1] = 0x02, 0x00
	copy(mac[2:], last)
}
