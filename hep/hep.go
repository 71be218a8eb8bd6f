// Package hep owns msrpscope's HEPv3 wire format (encoder, strict zero-copy decoder, event and frame payloads)
// and the collector clients (UDP, TCP, TLS) through which every trace leaves the process without blocking.
package hep

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"time"
)

// Generic chunk types (vendor 0x0000), HEP3 Network Protocol Specification rev. 37, "Generic chunk types".
const (
	ChunkIPFamily          uint16 = 0x0001 // uint8: 2 (AF_INET) or 10 (AF_INET6)
	ChunkIPProto           uint16 = 0x0002 // uint8: IP protocol of the captured packet (6 = TCP)
	ChunkIPv4Src           uint16 = 0x0003 // 4 bytes
	ChunkIPv4Dst           uint16 = 0x0004 // 4 bytes
	ChunkIPv6Src           uint16 = 0x0005 // 16 bytes
	ChunkIPv6Dst           uint16 = 0x0006 // 16 bytes
	ChunkSrcPort           uint16 = 0x0007 // uint16
	ChunkDstPort           uint16 = 0x0008 // uint16
	ChunkTimeSec           uint16 = 0x0009 // uint32 seconds since the epoch
	ChunkTimeUsec          uint16 = 0x000a // uint32 microseconds within the second
	ChunkProtoType         uint16 = 0x000b // uint8: payload protocol (1 SIP, 100 LOG, ...)
	ChunkCaptureID         uint16 = 0x000c // uint32 capture agent id
	ChunkKeepAlive         uint16 = 0x000d // uint16 keep-alive timer (seconds)
	ChunkAuthKey           uint16 = 0x000e // octets
	ChunkPayload           uint16 = 0x000f // octets
	ChunkCompressedPayload uint16 = 0x0010 // octets (heplify-server ignores this chunk)
	ChunkCorrelationID     uint16 = 0x0011 // octets ("internal correlation id")
	ChunkVLAN              uint16 = 0x0012 // uint16 VLAN id
	ChunkNodeName          uint16 = 0x0013 // octets (capture agent / node name)
)

// Protocol types (chunk 0x000b) used by msrpscope.
const (
	// ProtoSIP is SIP. heplify-server drops a type-1 payload that does not parse as SIP,
	// so msrpscope never sends MSRP with it.
	ProtoSIP uint8 = 0x01
	// ProtoNet is OpenSIPS's non-standard "net" type (proto_hep/hep.c:85-93). heplify-server stores it
	// in hep_proto_35_default, which a stock homer-app does not search (see docs/HEP.md).
	ProtoNet uint8 = 0x59
	// ProtoLog is type 100 "LOG": the only non-SIP type a stock Homer 7 both stores
	// (hep_proto_100_default) and shows. It is msrpscope's default for frames and events.
	ProtoLog uint8 = 0x64
)

// Address families carried in chunk 0x0001.
const (
	FamilyIPv4 uint8 = 2
	FamilyIPv6 uint8 = 10
)

// IPProtoTCP is the IP protocol number of TCP; MSRP and MSRPS (TLS) both run over it.
const IPProtoTCP uint8 = 6

const (
	headerLen      = 6      // "HEP3" + uint16 total length
	chunkHeaderLen = 6      // vendor uint16 + type uint16 + length uint16 (length includes these 6 bytes)
	maxTotalLen    = 0xffff // the total length is a uint16
	// MaxPacketSize is the largest HEP packet heplify-server accepts: larger TCP packets make it close the
	// connection (heplify-server server/server.go:52 maxPktLen = 65507, server/tcp.go:83-88), and 65507
	// is also the largest IPv4 UDP payload.
	MaxPacketSize = 65507
)

var magic = [4]byte{'H', 'E', 'P', '3'}

// ErrTooLarge is returned when a packet, or one of its chunks, does not fit the uint16 length fields
// or the configured maximum packet size.
var ErrTooLarge = errors.New("hep: packet too large")

// Chunk is a chunk the Packet struct has no field for: a vendor chunk (vendor id != 0) or a generic
// chunk type this package does not know. Decode keeps them in Packet.Extra and AppendEncode writes them
// back unchanged, so they pass through.
type Chunk struct {
	Vendor uint16
	Type   uint16
	Data   []byte
}

// Packet is one HEPv3 packet. Byte-slice fields are nil when the chunk is absent; after Decode they
// alias the decoded buffer (zero copy).
type Packet struct {
	// Family is chunk 0x0001. Zero means "derive it from Src (or Dst)" when encoding; the chunk is
	// omitted if it is still zero.
	Family uint8
	// IPProto is chunk 0x0002 (6 for TCP).
	IPProto uint8
	// Src and Dst give chunks 0x0003-0x0008. The address chunk is written only when the address is
	// valid (IPv4 → 0x0003/0x0004, anything else → 16-byte 0x0005/0x0006); the port chunks always.
	Src, Dst netip.AddrPort
	// Time gives chunks 0x0009 (seconds) and 0x000a (microseconds). The zero Time is sent as 0/0,
	// which heplify-server replaces with the arrival time.
	Time time.Time
	// ProtoType is chunk 0x000b (always exactly one byte; heplify-server rejects anything else).
	ProtoType uint8
	// CaptureID is chunk 0x000c.
	CaptureID uint32
	// KeepAlive is chunk 0x000d; zero omits it.
	KeepAlive uint16
	// AuthKey is chunk 0x000e.
	AuthKey []byte
	// Payload is chunk 0x000f.
	Payload []byte
	// CompressedPayload is chunk 0x0010 (opaque to this package).
	CompressedPayload []byte
	// CorrelationID is chunk 0x0011. heplify-server silently discards non-SIP packets whose
	// correlation id is empty (database/postgres.go:148), so msrpscope never sends one.
	CorrelationID []byte
	// VLAN is chunk 0x0012; zero omits it.
	VLAN uint16
	// NodeName is chunk 0x0013.
	NodeName []byte
	// Extra holds vendor chunks and unknown generic chunks, written after all others (not the
	// padding chunk of GSO runs, which Decode drops).
	Extra []Chunk
}

// family returns the value of chunk 0x0001 that AppendEncode writes (0 = omitted).
func (p *Packet) family() uint8 {
	if p.Family != 0 {
		return p.Family
	}
	for _, a := range [2]netip.Addr{p.Src.Addr(), p.Dst.Addr()} {
		if a.Is4() {
			return FamilyIPv4
		}
		if a.IsValid() {
			return FamilyIPv6
		}
	}
	return 0
}

// addrLen is the length of the address chunk data written for a (0 = no chunk).
func addrLen(a netip.Addr) int {
	switch {
	case a.Is4():
		return 4
	case a.IsValid():
		return 16
	}
	return 0
}

// headLen is the encoded length of everything before the payload chunks.
func (p *Packet) headLen() int {
	n := headerLen
	if p.family() != 0 {
		n += chunkHeaderLen + 1
	}
	n += 7 + 8 + 8 + 10 + 10 + 7 + 10 // ip proto, ports, sec, usec, proto type, capture id
	if l := addrLen(p.Src.Addr()); l > 0 {
		n += chunkHeaderLen + l
	}
	if l := addrLen(p.Dst.Addr()); l > 0 {
		n += chunkHeaderLen + l
	}
	if p.KeepAlive != 0 {
		n += 8
	}
	if p.AuthKey != nil {
		n += chunkHeaderLen + len(p.AuthKey)
	}
	if p.VLAN != 0 {
		n += 8
	}
	if p.NodeName != nil {
		n += chunkHeaderLen + len(p.NodeName)
	}
	if p.CompressedPayload != nil {
		n += chunkHeaderLen + len(p.CompressedPayload)
	}
	return n
}

// tailLen is the encoded length of everything after the payload chunk.
func (p *Packet) tailLen() int {
	n := 0
	if p.CorrelationID != nil {
		n += chunkHeaderLen + len(p.CorrelationID)
	}
	for i := range p.Extra {
		n += chunkHeaderLen + len(p.Extra[i].Data)
	}
	return n
}

// EncodedLen returns the number of bytes AppendEncode appends.
func (p *Packet) EncodedLen() int {
	n := p.headLen() + p.tailLen()
	if p.Payload != nil {
		n += chunkHeaderLen + len(p.Payload)
	}
	return n
}

func appendChunkHeader(dst []byte, vendor, typ uint16, dataLen int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, vendor)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	return binary.BigEndian.AppendUint16(dst, uint16(chunkHeaderLen+dataLen))
}

func appendU8(dst []byte, typ uint16, v uint8) []byte {
	return append(appendChunkHeader(dst, 0, typ, 1), v)
}

func appendU16(dst []byte, typ uint16, v uint16) []byte {
	return binary.BigEndian.AppendUint16(appendChunkHeader(dst, 0, typ, 2), v)
}

func appendU32(dst []byte, typ uint16, v uint32) []byte {
	return binary.BigEndian.AppendUint32(appendChunkHeader(dst, 0, typ, 4), v)
}

func appendBytes(dst []byte, vendor, typ uint16, v []byte) []byte {
	return append(appendChunkHeader(dst, vendor, typ, len(v)), v...)
}

func appendAddr(dst []byte, typ4, typ6 uint16, a netip.Addr) []byte {
	switch {
	case a.Is4():
		b := a.As4()
		return append(appendChunkHeader(dst, 0, typ4, 4), b[:]...)
	case a.IsValid():
		b := a.As16()
		return append(appendChunkHeader(dst, 0, typ6, 16), b[:]...)
	}
	return dst
}

// appendHead appends the packet header (with a zero total length, patched by finish) and every
// chunk that precedes the payload. The order follows OpenSIPS's build_hep3_buf (OpenSIPS proto_hep/hep.c): the
// fixed block 1,2,7,8,9,10,11,12, then the addresses, then the optional chunks. The space is
// reserved once (headLen) and written in place: one capacity check rather than one per field.
func (p *Packet) appendHead(dst []byte) []byte {
	n := p.headLen()
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	b := dst[start : start+n]
	copy(b, magic[:])
	b[4], b[5] = 0, 0
	i := headerLen
	if f := p.family(); f != 0 {
		i = putU8(b, i, ChunkIPFamily, f)
	}
	i = putU8(b, i, ChunkIPProto, p.IPProto)
	i = putU16(b, i, ChunkSrcPort, p.Src.Port())
	i = putU16(b, i, ChunkDstPort, p.Dst.Port())
	var sec, usec uint32
	if !p.Time.IsZero() {
		sec = uint32(p.Time.Unix())
		usec = uint32(p.Time.Nanosecond() / 1000)
	}
	i = putU32(b, i, ChunkTimeSec, sec)
	i = putU32(b, i, ChunkTimeUsec, usec)
	i = putU8(b, i, ChunkProtoType, p.ProtoType)
	i = putU32(b, i, ChunkCaptureID, p.CaptureID)
	i = putAddr(b, i, ChunkIPv4Src, ChunkIPv6Src, p.Src.Addr())
	i = putAddr(b, i, ChunkIPv4Dst, ChunkIPv6Dst, p.Dst.Addr())
	if p.KeepAlive != 0 {
		i = putU16(b, i, ChunkKeepAlive, p.KeepAlive)
	}
	if p.AuthKey != nil {
		i = putBytes(b, i, ChunkAuthKey, p.AuthKey)
	}
	if p.VLAN != 0 {
		i = putU16(b, i, ChunkVLAN, p.VLAN)
	}
	if p.NodeName != nil {
		i = putBytes(b, i, ChunkNodeName, p.NodeName)
	}
	if p.CompressedPayload != nil {
		putBytes(b, i, ChunkCompressedPayload, p.CompressedPayload)
	}
	return dst
}

// putChunkHeader writes a generic chunk's header at b[i:] and returns the
// index after it.
func putChunkHeader(b []byte, i int, typ uint16, dataLen int) int {
	b = b[i : i+chunkHeaderLen]
	b[0], b[1] = 0, 0
	binary.BigEndian.PutUint16(b[2:], typ)
	binary.BigEndian.PutUint16(b[4:], uint16(chunkHeaderLen+dataLen))
	return i + chunkHeaderLen
}

func putU8(b []byte, i int, typ uint16, v uint8) int {
	i = putChunkHeader(b, i, typ, 1)
	b[i] = v
	return i + 1
}

func putU16(b []byte, i int, typ uint16, v uint16) int {
	i = putChunkHeader(b, i, typ, 2)
	binary.BigEndian.PutUint16(b[i:], v)
	return i + 2
}

func putU32(b []byte, i int, typ uint16, v uint32) int {
	i = putChunkHeader(b, i, typ, 4)
	binary.BigEndian.PutUint32(b[i:], v)
	return i + 4
}

func putBytes(b []byte, i int, typ uint16, v []byte) int {
	i = putChunkHeader(b, i, typ, len(v))
	return i + copy(b[i:], v)
}

func putAddr(b []byte, i int, typ4, typ6 uint16, a netip.Addr) int {
	switch {
	case a.Is4():
		i = putChunkHeader(b, i, typ4, 4)
		a4 := a.As4()
		return i + copy(b[i:], a4[:])
	case a.IsValid():
		i = putChunkHeader(b, i, typ6, 16)
		a16 := a.As16()
		return i + copy(b[i:], a16[:])
	}
	return i
}

// appendTail appends the chunks that follow the payload: correlation id, then Extra.
func (p *Packet) appendTail(dst []byte) []byte {
	if p.CorrelationID != nil {
		dst = appendBytes(dst, 0, ChunkCorrelationID, p.CorrelationID)
	}
	for i := range p.Extra {
		c := &p.Extra[i]
		dst = appendBytes(dst, c.Vendor, c.Type, c.Data)
	}
	return dst
}

// finish patches the total length of the packet that starts at dst[start:].
func finish(dst []byte, start int) []byte {
	binary.BigEndian.PutUint16(dst[start+4:], uint16(len(dst)-start))
	return dst
}

// check reports ErrBadValue when the address family is inconsistent with the addresses (Decode
// rejects such packets) and ErrTooLarge when a variable chunk overflows its uint16 length.
func (p *Packet) check(payloadLen int) error {
	if f := p.family(); f != 0 {
		for _, a := range [2]netip.Addr{p.Src.Addr(), p.Dst.Addr()} {
			if a.IsValid() && a.Is4() != (f == FamilyIPv4) {
				return ErrBadValue
			}
		}
	}
	const maxData = maxTotalLen - chunkHeaderLen
	if len(p.AuthKey) > maxData || len(p.NodeName) > maxData || len(p.CompressedPayload) > maxData ||
		len(p.CorrelationID) > maxData || payloadLen > maxData {
		return ErrTooLarge
	}
	for i := range p.Extra {
		if len(p.Extra[i].Data) > maxData {
			return ErrTooLarge
		}
	}
	return nil
}

// AppendEncode appends the HEPv3 encoding of p to dst and returns the extended buffer. It does not
// allocate when dst has room for EncodedLen bytes. It returns dst unchanged and ErrTooLarge when the
// packet exceeds 65535 bytes (the uint16 total length), or ErrBadValue when Src and Dst (or Family)
// mix IPv4 and IPv6.
func (p *Packet) AppendEncode(dst []byte) ([]byte, error) {
	if err := p.check(len(p.Payload)); err != nil {
		return dst, err
	}
	if p.EncodedLen() > maxTotalLen {
		return dst, ErrTooLarge
	}
	start := len(dst)
	dst = p.appendHead(dst)
	if p.Payload != nil {
		dst = appendBytes(dst, 0, ChunkPayload, p.Payload)
	}
	dst = p.appendTail(dst)
	return finish(dst, start), nil
}
