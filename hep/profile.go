package hep

import (
	"errors"
	"net/netip"
	"time"
)

// ErrEmptyCorrelationID is returned by the Profile encoders for an empty correlation id:
// heplify-server silently discards non-SIP packets without one (database/postgres.go:148).
var ErrEmptyCorrelationID = errors.New("hep: empty correlation id")

// Profile holds what a destination puts into every packet msrpscope sends to it.
// The zero Profile is usable: type 100 (LOG), capture id 0, colon events, 16 KiB frames.
type Profile struct {
	// ProtoType is chunk 0x000b for frames and events; 0 means ProtoLog (100). Set ProtoNet (0x59)
	// for OpenSIPS "net" compatibility.
	ProtoType uint8
	// CaptureID is chunk 0x000c.
	CaptureID uint32
	// AuthKey (chunk 0x000e) and NodeName (chunk 0x0013) are sent when non-empty.
	AuthKey  []byte
	NodeName []byte
	// EventForm selects the event payload form (FormColon, like OpenSIPS's default, or FormJSON).
	EventForm EventForm
	// FrameLimit is the maximum frame payload size: 0 means DefaultFrameLimit, negative means
	// no limit other than MaxPacketSize.
	FrameLimit int
	// MaxPacketSize bounds every encoded packet (frames are truncated further to fit, other packets
	// fail with ErrTooLarge); 0 means MaxPacketSize (65507). For UDP over a real network a value
	// below the path MTU (e.g. 1400) avoids IP fragmentation.
	MaxPacketSize int
}

// Meta is what changes from packet to packet.
type Meta struct {
	// Src and Dst are the real endpoints of the traced hop, in the direction of the data: for a
	// frame, sender → receiver; for a connection event, the connection's initiator → acceptor (the
	// TCP SYN direction; OpenSIPS always sends remote → local).
	Src, Dst netip.AddrPort
	// Time is the capture time; the zero Time means time.Now().
	Time time.Time
	// CorrelationID must not be empty: the MSRP session id for frames (the same in both directions),
	// a connection id for connection events.
	CorrelationID []byte
}

func (pr *Profile) maxPacket() int {
	if pr.MaxPacketSize > 0 {
		return min(pr.MaxPacketSize, maxTotalLen)
	}
	return MaxPacketSize
}

func (pr *Profile) packet(m *Meta) Packet {
	p := Packet{
		IPProto:       IPProtoTCP,
		Src:           m.Src,
		Dst:           m.Dst,
		Time:          m.Time,
		ProtoType:     pr.ProtoType,
		CaptureID:     pr.CaptureID,
		CorrelationID: m.CorrelationID,
	}
	if p.ProtoType == 0 {
		p.ProtoType = ProtoLog
	}
	if p.Time.IsZero() {
		p.Time = time.Now()
	}
	if len(pr.AuthKey) > 0 {
		p.AuthKey = pr.AuthKey
	}
	if len(pr.NodeName) > 0 {
		p.NodeName = pr.NodeName
	}
	return p
}

// appendWithPayload encodes p with a payload produced in place by fill, so that no intermediate
// payload buffer is needed. maxPayload is passed to fill.
func (pr *Profile) appendWithPayload(dst []byte, p *Packet, fill func(dst []byte, maxPayload int) []byte) ([]byte, error) {
	if len(p.CorrelationID) == 0 {
		return dst, ErrEmptyCorrelationID
	}
	if err := p.check(0); err != nil {
		return dst, err
	}
	overhead := p.headLen() + chunkHeaderLen + p.tailLen()
	maxPayload := pr.maxPacket() - overhead
	if maxPayload < 0 {
		return dst, ErrTooLarge
	}
	start := len(dst)
	dst = p.appendHead(dst)
	chunk := len(dst)
	dst = appendChunkHeader(dst, 0, ChunkPayload, 0)
	dst = fill(dst, maxPayload)
	if n := len(dst) - chunk - chunkHeaderLen; n > maxPayload {
		return dst[:start], ErrTooLarge
	}
	putChunkLen(dst, chunk)
	dst = p.appendTail(dst)
	return finish(dst, start), nil
}

func putChunkLen(dst []byte, chunk int) {
	n := len(dst) - chunk
	dst[chunk+4] = byte(n >> 8)
	dst[chunk+5] = byte(n)
}

// AppendEventPacket appends a complete HEP packet carrying ev (rendered in pr.EventForm) to dst.
// It does not allocate when dst has room.
func (pr *Profile) AppendEventPacket(dst []byte, m Meta, ev Event) ([]byte, error) {
	p := pr.packet(&m)
	form := pr.EventForm
	return pr.appendWithPayload(dst, &p, func(dst []byte, _ int) []byte {
		return AppendEvent(dst, form, ev)
	})
}

// FrameRoom returns the largest frame payload a packet with meta m can carry within
// pr.MaxPacketSize (ignoring pr.FrameLimit): a caller that cuts frames itself cuts them to
// at most this, so that AppendFramePacket does not cut them again.
func (pr *Profile) FrameRoom(m *Meta) int {
	p := pr.packet(m)
	return max(pr.maxPacket()-p.headLen()-chunkHeaderLen-p.tailLen(), 0)
}

// AppendFramePacketFunc appends a complete HEP packet whose payload is what
// appendFrame appends to dst: a frame of at most room bytes, the payload the
// packet has room for within pr.MaxPacketSize (pr.FrameLimit is not
// applied: appendFrame cuts). A longer payload fails with ErrTooLarge.
// It does not allocate when dst has room.
func (pr *Profile) AppendFramePacketFunc(dst []byte, m Meta, appendFrame func(dst []byte, room int) []byte) ([]byte, error) {
	p := pr.packet(&m)
	return pr.appendWithPayload(dst, &p, appendFrame)
}

// AppendFramePacket appends a complete HEP packet carrying the MSRP frame to dst, truncated (see
// AppendFrame) to pr.FrameLimit and further so that the packet fits pr.MaxPacketSize.
// It does not allocate when dst has room.
func (pr *Profile) AppendFramePacket(dst []byte, m Meta, frame []byte) ([]byte, error) {
	p := pr.packet(&m)
	limit := pr.FrameLimit
	if limit == 0 {
		limit = DefaultFrameLimit
	}
	return pr.appendWithPayload(dst, &p, func(dst []byte, maxPayload int) []byte {
		if limit < 0 || limit > maxPayload {
			limit = maxPayload
		}
		return AppendFrame(dst, frame, limit)
	})
}
