package pcap

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"time"

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

// Header sizes of the synthetic packets.
const (
	ethLen = 14
	ip4Len = 20
	ip6Len = 40
	tcpLen = 20 // no options

	// ethMinFrame is the least length of an Ethernet frame without its
	// FCS: shorter ones (a bare IPv4 TCP segment is 54 bytes) are padded
	// with zeros, as gopacket did (IEEE 802.3 §3.2.8).
	ethMinFrame = 60
)

// packet builds one Ethernet/IP/TCP packet from ep.a to ep.b (ep.b to ep.a if
// reverse) and appends it, with its pcap record header, to the buffer of the
// current file, rotating first if needed. Called with w.mu held.
//
// The headers are written directly, checksums included (RFC 791 §3.1,
// RFC 9293 §3.1, RFC 8200 §8.1 for the IPv6 pseudo-header; the ones'
// complement sum of RFC 1071): what gopacket's SerializeLayers wrote, at a
// fraction of its cost (TestPacketMatchesGopacket).
func (w *Writer) packet(t time.Time, ep endpoints, reverse bool, seq, ack uint32, flags tcpFlags, payload []byte) error {
	if w.waiting() {
		return ErrBackoff
	}
	src, dst := ep.a, ep.b
	if reverse {
		src, dst = dst, src
	}
	sa := src.Addr()
	ipLen := ip6Len
	if sa.Is4() {
		ipLen = ip4Len
	}
	length := max(ethLen+ipLen+tcpLen+len(payload), ethMinFrame)
	capLen := min(length, int(w.cfg.SnapLen))
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
	if w.rec.open && w.rec.at < 0 {
		// The record's first packet in this file.
		w.rec.at, w.rec.packets = w.size, w.packets
		if !w.cut.set {
			w.cut.set, w.cut.at, w.cut.packets = true, w.size, w.packets
		}
	}
	w.ipID++
	w.buf.b = appendPacket(w.buf.b, t, src, dst, w.ipID, seq, ack, flags, payload, capLen)
	w.size += recLen
	w.packets++
	w.pendPackets++
	return nil
}

// appendPacket appends a pcap record (pcapgo's nanosecond format,
// little-endian header) of an Ethernet/IP/TCP packet from src to dst
// carrying payload, its first capLen bytes captured. src and dst are of
// one family. An IPv4 packet has id ipID and Don't Fragment set.
func appendPacket(b []byte, t time.Time, src, dst netip.AddrPort, ipID uint16, seq, ack uint32, flags tcpFlags, payload []byte, capLen int) []byte {
	var hb [recordHeaderLen + ethLen + ip6Len + tcpLen]byte
	h := hb[:0]
	sa, da := src.Addr(), dst.Addr()
	ipLen := ip6Len
	if sa.Is4() {
		ipLen = ip4Len
	}
	tcpLength := tcpLen + len(payload)
	h = binary.LittleEndian.AppendUint32(h, uint32(t.Unix()))
	h = binary.LittleEndian.AppendUint32(h, uint32(t.Nanosecond()))
	h = binary.LittleEndian.AppendUint32(h, uint32(capLen))
	h = binary.LittleEndian.AppendUint32(h, uint32(max(ethLen+ipLen+tcpLength, ethMinFrame)))

	// Ethernet: locally administered unicast MACs 02:00:<last four address bytes>.
	h = appendMAC(h, da)
	h = appendMAC(h, sa)
	var pseudo uint64 // the TCP checksum's pseudo-header sum
	if sa.Is4() {
		h = binary.BigEndian.AppendUint16(h, uint16(layers.EthernetTypeIPv4))
		s4, d4 := sa.As4(), da.As4()
		ip := len(h)
		h = append(h, 0x45, 0) // version 4, IHL 5; TOS 0
		h = binary.BigEndian.AppendUint16(h, uint16(ip4Len+tcpLength))
		h = binary.BigEndian.AppendUint16(h, ipID)
		h = append(h, 0x40, 0, ipTTL, byte(layers.IPProtocolTCP), 0, 0) // DF, no fragment offset; checksum below
		h = append(h, s4[:]...)
		h = append(h, d4[:]...)
		binary.BigEndian.PutUint16(h[ip+10:], csumFold(csum(0, h[ip:ip+ip4Len])))
		pseudo = csum(0, s4[:]) + csum(0, d4[:]) + uint64(layers.IPProtocolTCP) + uint64(tcpLength)
	} else {
		h = binary.BigEndian.AppendUint16(h, uint16(layers.EthernetTypeIPv6))
		s16, d16 := sa.As16(), da.As16()
		h = append(h, 0x60, 0, 0, 0) // version 6, traffic class 0, flow label 0
		h = binary.BigEndian.AppendUint16(h, uint16(tcpLength))
		h = append(h, byte(layers.IPProtocolTCP), ipTTL)
		h = append(h, s16[:]...)
		h = append(h, d16[:]...)
		pseudo = csum(0, s16[:]) + csum(0, d16[:]) + uint64(layers.IPProtocolTCP) + uint64(tcpLength)
	}
	tcp := len(h)
	h = binary.BigEndian.AppendUint16(h, src.Port())
	h = binary.BigEndian.AppendUint16(h, dst.Port())
	h = binary.BigEndian.AppendUint32(h, seq)
	h = binary.BigEndian.AppendUint32(h, ack)
	var fl byte
	if flags&finFlag != 0 {
		fl |= 0x01
	}
	if flags&synFlag != 0 {
		fl |= 0x02
	}
	if flags&rstFlag != 0 {
		fl |= 0x04
	}
	if flags&pshFlag != 0 {
		fl |= 0x08
	}
	if flags&ackFlag != 0 {
		fl |= 0x10
	}
	h = append(h, tcpLen/4<<4, fl) // data offset: 5 words
	h = binary.BigEndian.AppendUint16(h, tcpWindow)
	h = append(h, 0, 0, 0, 0) // checksum below; urgent pointer 0
	binary.BigEndian.PutUint16(h[tcp+16:], csumFold(csum(csum(pseudo, h[tcp:]), payload)))

	hdrs := len(h) - recordHeaderLen
	if capLen <= hdrs {
		return append(b, h[:recordHeaderLen+capLen]...)
	}
	b = append(b, h...)
	n := min(capLen-hdrs, len(payload))
	b = append(b, payload[:n]...)
	var pad [ethMinFrame]byte
	return append(b, pad[:capLen-hdrs-n]...)
}

// appendMAC appends 02:00 followed by the address's last four bytes.
func appendMAC(dst []byte, a netip.Addr) []byte {
	dst = append(dst, 0x02, 0x00)
	if a.Is4() {
		b := a.As4()
		return append(dst, b[:]...)
	}
	b := a.As16()
	return append(dst, b[12:16]...)
}

// csum adds b to the ones' complement sum s (RFC 1071), taking b as
// big-endian 16-bit words, an odd last byte padded with zero. It adds
// 64-bit words at a time with end-around carry: 2^16, and so 2^64, is 1
// modulo 0xffff, so csumFold's result is the same. The result is below
// 2^33 (callers add sums of csum with +).
func csum(s uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	var t uint64 // at most 0xffffffff + 0xffff + 0xff00: no carry out of t
	if len(b) >= 4 {
		t += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		t += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		t += uint64(b[0]) << 8
	}
	s, c = bits.Add64(s, t, c)
	s, c = bits.Add64(s, c, 0)
	s += c // c is 1 only if s wrapped to 0: no further carry
	// Folded to at most 33 bits, so that callers may add a few sums.
	return s>>32 + s&0xffffffff
}

// csumFold reduces a sum of csum to 16 bits and complements it: the checksum.
func csumFold(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
