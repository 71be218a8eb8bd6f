package hep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Decode errors. Every error returned by Decode wraps exactly one of them (use errors.Is) and adds
// the offset and chunk type where the problem was found.
var (
	// ErrShort: fewer bytes than a HEP header (6) or than the total length announces.
	ErrShort = errors.New("hep: packet truncated")
	// ErrMagic: the packet does not start with "HEP3" (HEPv1/v2 are not supported).
	ErrMagic = errors.New("hep: not a HEPv3 packet")
	// ErrTotalLength: the total length field is smaller than the header or does not match the buffer.
	ErrTotalLength = errors.New("hep: bad total length")
	// ErrChunkLength: a chunk length is smaller than its 6-byte header or runs past the packet end.
	ErrChunkLength = errors.New("hep: bad chunk length")
	// ErrChunkSize: a fixed-size generic chunk has the wrong size for its type.
	ErrChunkSize = errors.New("hep: wrong chunk size for type")
	// ErrDuplicateChunk: a generic chunk type occurs twice, or both the IPv4 and IPv6 form of an address.
	ErrDuplicateChunk = errors.New("hep: duplicate chunk")
	// ErrBadValue: a chunk value out of range (address family not 2 or 10, microseconds >= 1e6,
	// family inconsistent with the address chunks).
	ErrBadValue = errors.New("hep: bad chunk value")
)

// fixedSize gives the required data size of the fixed-size generic chunks (0 = variable).
var fixedSize = [...]int{
	ChunkIPFamily:  1,
	ChunkIPProto:   1,
	ChunkIPv4Src:   4,
	ChunkIPv4Dst:   4,
	ChunkIPv6Src:   16,
	ChunkIPv6Dst:   16,
	ChunkSrcPort:   2,
	ChunkDstPort:   2,
	ChunkTimeSec:   4,
	ChunkTimeUsec:  4,
	ChunkProtoType: 1, // heplify-server decoder/hep.go:31-34 rejects any other size
	ChunkCaptureID: 4,
	ChunkKeepAlive: 2,
	ChunkVLAN:      2,
	ChunkNodeName:  0,
}

// PacketLen returns the total length announced by the HEPv3 header at the start of b, for framing
// a stream (HEP over TCP/TLS has no other framing). b needs at least 6 bytes.
func PacketLen(b []byte) (int, error) {
	if len(b) < headerLen {
		return 0, fmt.Errorf("hep: %d bytes, need %d for the header: %w", len(b), headerLen, ErrShort)
	}
	if [4]byte(b[:4]) != magic {
		return 0, fmt.Errorf("hep: magic %q: %w", b[:4], ErrMagic)
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < headerLen {
		return 0, fmt.Errorf("hep: total length %d < %d: %w", n, headerLen, ErrTotalLength)
	}
	return n, nil
}

// ReadPacket reads one HEPv3 packet from a stream into buf (grown if needed) and returns it.
// The result aliases buf. io.EOF is returned only when the stream ends cleanly between packets.
func ReadPacket(r io.Reader, buf []byte) ([]byte, error) {
	if cap(buf) < headerLen {
		buf = make([]byte, 0, 4096)
	}
	buf = buf[:headerLen]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("hep: reading header: %w", ErrShort)
		}
		return nil, err
	}
	n, err := PacketLen(buf)
	if err != nil {
		return nil, err
	}
	if cap(buf) < n {
		nb := make([]byte, n)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf[headerLen:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("hep: reading %d-byte packet: %w", n, ErrShort)
		}
		return nil, err
	}
	return buf, nil
}

// Decode parses one HEPv3 packet that fills b exactly. The returned Packet's byte slices alias b.
// Decoding is strict: see the Err* variables.
func Decode(b []byte) (Packet, error) {
	var p Packet
	if err := p.Unmarshal(b); err != nil {
		return Packet{}, err
	}
	return p, nil
}

// Unmarshal is Decode into p, reusing the capacity of p.Extra: it does not allocate when p.Extra
// has room for the packet's vendor/unknown chunks. On error p is the zero Packet (Extra keeps
// its backing array, with length 0).
func (p *Packet) Unmarshal(b []byte) error {
	extra := p.Extra[:0]
	*p = Packet{}
	if err := p.unmarshal(b, extra); err != nil {
		if p.Extra != nil {
			extra = p.Extra
		}
		*p = Packet{Extra: extra[:0]}
		return err
	}
	return nil
}

func (p *Packet) unmarshal(b []byte, extra []Chunk) error {
	n, err := PacketLen(b)
	if err != nil {
		return err
	}
	if n > len(b) {
		return fmt.Errorf("hep: total length %d > %d bytes received: %w", n, len(b), ErrShort)
	}
	if n < len(b) {
		return fmt.Errorf("hep: total length %d, %d trailing bytes: %w", n, len(b)-n, ErrTotalLength)
	}
	var (
		seen          uint32 // bit t set when generic chunk t (1..19) was seen
		src, dst      netip.Addr
		sport, dport  uint16
		sec, usec     uint32
		hasSec, hasUS bool
	)
	for off := headerLen; off < n; {
		if n-off < chunkHeaderLen {
			return fmt.Errorf("hep: %d bytes left at offset %d, need a %d-byte chunk header: %w",
				n-off, off, chunkHeaderLen, ErrChunkLength)
		}
		vendor := binary.BigEndian.Uint16(b[off:])
		typ := binary.BigEndian.Uint16(b[off+2:])
		clen := int(binary.BigEndian.Uint16(b[off+4:]))
		if clen < chunkHeaderLen || clen > n-off {
			return fmt.Errorf("hep: chunk 0x%04x at offset %d: length %d (%d bytes left): %w",
				typ, off, clen, n-off, ErrChunkLength)
		}
		data := b[off+chunkHeaderLen : off+clen : off+clen]
		if vendor == PadVendor && typ == PadType {
			off += clen // padding (see gso.go) is not data
			continue
		}
		if vendor != 0 || typ == 0 || typ > ChunkNodeName {
			p.Extra = append(extra, Chunk{Vendor: vendor, Type: typ, Data: data})
			extra = p.Extra
			off += clen
			continue
		}
		if want := fixedSize[typ]; want != 0 && len(data) != want {
			return fmt.Errorf("hep: chunk 0x%04x at offset %d: %d data bytes, want %d: %w",
				typ, off, len(data), want, ErrChunkSize)
		}
		// Each address is one logical field whichever family carries it.
		bit := typ
		switch typ {
		case ChunkIPv6Src:
			bit = ChunkIPv4Src
		case ChunkIPv6Dst:
			bit = ChunkIPv4Dst
		}
		if seen&(1<<bit) != 0 {
			return fmt.Errorf("hep: chunk 0x%04x at offset %d: %w", typ, off, ErrDuplicateChunk)
		}
		seen |= 1 << bit
		switch typ {
		case ChunkIPFamily:
			p.Family = data[0]
			if p.Family != FamilyIPv4 && p.Family != FamilyIPv6 {
				return fmt.Errorf("hep: chunk 0x%04x at offset %d: address family %d: %w", typ, off, p.Family, ErrBadValue)
			}
		case ChunkIPProto:
			p.IPProto = data[0]
		case ChunkIPv4Src:
			src = netip.AddrFrom4([4]byte(data))
		case ChunkIPv4Dst:
			dst = netip.AddrFrom4([4]byte(data))
		case ChunkIPv6Src:
			src = netip.AddrFrom16([16]byte(data))
		case ChunkIPv6Dst:
			dst = netip.AddrFrom16([16]byte(data))
		case ChunkSrcPort:
			sport = binary.BigEndian.Uint16(data)
		case ChunkDstPort:
			dport = binary.BigEndian.Uint16(data)
		case ChunkTimeSec:
			sec, hasSec = binary.BigEndian.Uint32(data), true
		case ChunkTimeUsec:
			usec, hasUS = binary.BigEndian.Uint32(data), true
			if usec > 999_999 {
				return fmt.Errorf("hep: chunk 0x%04x at offset %d: %d microseconds: %w", typ, off, usec, ErrBadValue)
			}
		case ChunkProtoType:
			p.ProtoType = data[0]
		case ChunkCaptureID:
			p.CaptureID = binary.BigEndian.Uint32(data)
		case ChunkKeepAlive:
			p.KeepAlive = binary.BigEndian.Uint16(data)
		case ChunkAuthKey:
			p.AuthKey = data
		case ChunkPayload:
			p.Payload = data
		case ChunkCompressedPayload:
			p.CompressedPayload = data
		case ChunkCorrelationID:
			p.CorrelationID = data
		case ChunkVLAN:
			p.VLAN = binary.BigEndian.Uint16(data)
		case ChunkNodeName:
			p.NodeName = data
		}
		off += clen
	}
	p.Src = netip.AddrPortFrom(src, sport)
	p.Dst = netip.AddrPortFrom(dst, dport)
	if (hasSec || hasUS) && (sec != 0 || usec != 0) {
		p.Time = time.Unix(int64(sec), int64(usec)*1000).UTC()
	}
	if p.Family == 0 {
		// No family chunk: report what the addresses imply, which is also what AppendEncode writes
		// (and then both addresses must be of that family: one IPv4 and one IPv6 address is not a
		// packet any capture could have seen).
		p.Family = p.family()
	}
	for _, a := range [2]netip.Addr{src, dst} {
		if a.IsValid() && a.Is4() != (p.Family == FamilyIPv4) {
			return fmt.Errorf("hep: address family %d but address %s: %w", p.Family, a, ErrBadValue)
		}
	}
	return nil
}
