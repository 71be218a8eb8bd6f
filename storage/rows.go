package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// Frame is one row of the frames table: one traced frame.
type Frame struct {
	TS            time.Time // the frame's first byte, microsecond precision, UTC
	Direction     string    // "in" (read by the relay) or "out" (written)
	Transport     string    // "msrp" or "msrps"
	LocalIP       netip.Addr
	LocalPort     uint16
	RemoteIP      netip.Addr
	RemotePort    uint16
	ConnID        uint64
	SessionID     string // the relay session on the request sender's side (FromSession)
	PeerSessionID string // the relay session on the receiver's side (ToSession)
	CorrelationID string // see CorrelationID
	TransactID    string
	Method        string // "" for a response
	Status        uint16 // 0 for a request
	MessageID     string
	ByteRange     string
	ContentType   string
	AuthUser      string // username= of an Authorization header
	AuthResponse  bool   // a response recognised as an answer to AUTH (see wireFields)
	Flag          string // "$", "+" or "#"
	Size          uint64 // the frame's true size on the wire
	Body          string // the body's first body_bytes bytes, as far as captured
	Node          string
	BatchID       uint64

	localRaw, remoteRaw string // the 16-byte addresses as stored on 18.16
}

// ConnEvent is one row of the events table: one connection event.
type ConnEvent struct {
	TS         time.Time
	Event      string // accepted, connect-start, connected, connect-failed, tls-handshake, closed
	Reason     string // the close reason for closed, "" otherwise
	Error      string
	Direction  string // "in": accepted by a listener; "out": dialled by the relay
	Transport  string
	LocalIP    netip.Addr
	LocalPort  uint16
	RemoteIP   netip.Addr
	RemotePort uint16
	ConnID     uint64
	TLSSubject string
	Node       string
	BatchID    uint64

	localRaw, remoteRaw string
}

// CorrelationID is the key that groups a session's frames: the one the
// HEP sinks use (sink.AppendCorrelationID), for a frame between sessions
// from and to on connection connID.
func CorrelationID(dst []byte, from, to string, connID uint64) []byte {
	f := event.FrameInfo{FromSession: from, ToSession: to}
	e := event.Event{Conn: event.ConnInfo{ID: connID}, Frame: &f}
	return sink.AppendCorrelationID(dst, &e)
}

// IsFrame says whether an event becomes a frames row (else an events row).
func IsFrame(e *event.Event) bool {
	return (e.Kind == event.FrameIn || e.Kind == event.FrameOut) && e.Frame != nil
}

// FrameRow is the row the writer stores for a frame event, as it would
// send it (body cut at bodyBytes). For tests and for other insert paths.
func FrameRow(e *event.Event, bodyBytes int, node string) Frame {
	s := string(appendFrame(nil, e, bodyBytes))
	f, _, err := decodeFrame(s, 1)
	if err != nil {
		panic(err) // appendFrame's output always decodes
	}
	f.Node = node
	return f
}

// EventRow is the row the writer stores for a connection event.
func EventRow(e *event.Event, node string) ConnEvent {
	s := string(appendEvent(nil, e))
	c, _, err := decodeEvent(s, 1)
	if err != nil {
		panic(err)
	}
	c.Node = node
	return c
}

// Row encoding, the form rows take in memory, in batches and in the spool.
// Little-endian fixed fields, then strings as uvarint length + bytes.
//
//	frame: ts(8) dir(1) flag(1) authResponse(1) status(2) conn(8) size(8)
//	       local(16) lport(2) remote(16) rport(2)
//	       transport session peer correlation tid method msgid byterange ctype authuser body
//	event: ts(8) dir(1) conn(8) local(16) lport(2) remote(16) rport(2)
//	       event reason error transport tlssubject
const (
	frameFixed = 8 + 1 + 1 + 1 + 2 + 8 + 8 + 16 + 2 + 16 + 2
	eventFixed = 8 + 1 + 8 + 16 + 2 + 16 + 2
)

func appendAddr(dst []byte, ap netip.AddrPort) []byte {
	a16 := ap.Addr().As16() // IPv4 as IPv4-mapped IPv6; invalid as ::
	if !ap.Addr().IsValid() {
		a16 = [16]byte{}
	}
	dst = append(dst, a16[:]...)
	return binary.LittleEndian.AppendUint16(dst, ap.Port())
}

func appendStr[T string | []byte](dst []byte, s T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendFrame encodes the frames row of e (IsFrame(e) must hold).
func appendFrame(dst []byte, e *event.Event, bodyBytes int) []byte {
	f := e.Frame
	w := parseWire(f.Wire, f.TransactID, f.Method == nil)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Time.UnixMicro()))
	dst = append(dst, byte(f.Dir), f.Flag, b2u(w.authResponse))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(min(max(f.Status, 0), 999)))
	dst = binary.LittleEndian.AppendUint64(dst, e.Conn.ID)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(max(f.Size, 0)))
	dst = appendAddr(dst, e.Conn.Local)
	dst = appendAddr(dst, e.Conn.Remote)
	dst = appendStr(dst, e.Conn.Transport)
	dst = appendStr(dst, f.FromSession)
	dst = appendStr(dst, f.ToSession)
	var cid [128]byte
	dst = appendStr(dst, CorrelationID(cid[:0], f.FromSession, f.ToSession, e.Conn.ID))
	dst = appendStr(dst, f.TransactID)
	dst = appendStr(dst, f.Method)
	dst = appendStr(dst, f.MessageID)
	dst = appendStr(dst, w.byteRange)
	dst = appendStr(dst, f.ContentType)
	dst = appendStr(dst, w.authUser)
	body := w.body
	if len(body) > bodyBytes {
		body = body[:max(bodyBytes, 0)]
	}
	return appendStr(dst, body)
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// appendEvent encodes the events row of a connection event.
func appendEvent(dst []byte, e *event.Event) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Time.UnixMicro()))
	dst = append(dst, byte(e.Conn.Dir))
	dst = binary.LittleEndian.AppendUint64(dst, e.Conn.ID)
	dst = appendAddr(dst, e.Conn.Local)
	dst = appendAddr(dst, e.Conn.Remote)
	dst = appendStr(dst, e.Kind.String())
	reason := ""
	if e.Kind == event.Closed && e.Reason != 0 {
		reason = e.Reason.String()
	}
	dst = appendStr(dst, reason)
	errText := ""
	if e.Err != nil {
		errText = e.Err.Error()
	}
	dst = appendStr(dst, errText)
	dst = appendStr(dst, e.Conn.Transport)
	subject := ""
	if e.TLS != nil {
		subject = e.TLS.PeerSubject
	}
	return appendStr(dst, subject)
}

var errRow = errors.New("storage: malformed row")

// reader decodes rows from a string without allocating: every string field
// is a substring of the record.
type reader struct {
	s   string
	off int
	err error
}

func (r *reader) fixed(n int) string {
	if r.err != nil || len(r.s)-r.off < n {
		r.err = errRow
		return ""
	}
	v := r.s[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) u8() byte {
	v := r.fixed(1)
	if v == "" {
		return 0
	}
	return v[0]
}

func (r *reader) u16() uint16 {
	v := r.fixed(2)
	if len(v) < 2 {
		return 0
	}
	return uint16(v[0]) | uint16(v[1])<<8
}

func (r *reader) u32() uint32 {
	v := r.fixed(4)
	if len(v) < 4 {
		return 0
	}
	return uint32(v[0]) | uint32(v[1])<<8 | uint32(v[2])<<16 | uint32(v[3])<<24
}

func (r *reader) u64() uint64 {
	v := r.fixed(8)
	if len(v) < 8 {
		return 0
	}
	var x uint64
	for i := 7; i >= 0; i-- {
		x = x<<8 | uint64(v[i])
	}
	return x
}

func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	var n uint64
	var shift uint
	for i := 0; ; i++ {
		if r.off >= len(r.s) || i == 10 {
			r.err = errRow
			return ""
		}
		c := r.s[r.off]
		r.off++
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
		shift += 7
	}
	if n > uint64(len(r.s)-r.off) {
		r.err = errRow
		return ""
	}
	return r.fixed(int(n))
}

func (r *reader) addr() (raw string, a netip.Addr, port uint16) {
	raw = r.fixed(16)
	port = r.u16()
	if len(raw) == 16 {
		var a16 [16]byte
		copy(a16[:], raw)
		a = netip.AddrFrom16(a16).Unmap()
	}
	return raw, a, port
}

func dirName(d byte) string {
	if event.Direction(d) == event.DirOut {
		return "out"
	}
	return "in"
}

func flagName(f byte) string {
	switch f {
	case '$':
		return "$"
	case '+':
		return "+"
	case '#':
		return "#"
	}
	return ""
}

// decodeFrame decodes one frames row of s; n is the bytes it took.
func decodeFrame(s string, batchID uint64) (f Frame, n int, err error) {
	r := reader{s: s}
	f.TS = time.UnixMicro(int64(r.u64())).UTC()
	f.Direction = dirName(r.u8())
	f.Flag = flagName(r.u8())
	f.AuthResponse = r.u8() == 1
	f.Status = r.u16()
	f.ConnID = r.u64()
	f.Size = r.u64()
	f.localRaw, f.LocalIP, f.LocalPort = r.addr()
	f.remoteRaw, f.RemoteIP, f.RemotePort = r.addr()
	f.Transport = r.str()
	f.SessionID = r.str()
	f.PeerSessionID = r.str()
	f.CorrelationID = r.str()
	f.TransactID = r.str()
	f.Method = r.str()
	f.MessageID = r.str()
	f.ByteRange = r.str()
	f.ContentType = r.str()
	f.AuthUser = r.str()
	f.Body = r.str()
	f.BatchID = batchID
	if r.err != nil {
		return Frame{}, 0, fmt.Errorf("frame row at byte %d: %w", r.off, r.err)
	}
	return f, r.off, nil
}

// decodeEvent decodes one events row of s.
func decodeEvent(s string, batchID uint64) (c ConnEvent, n int, err error) {
	r := reader{s: s}
	c.TS = time.UnixMicro(int64(r.u64())).UTC()
	c.Direction = dirName(r.u8())
	c.ConnID = r.u64()
	c.localRaw, c.LocalIP, c.LocalPort = r.addr()
	c.remoteRaw, c.RemoteIP, c.RemotePort = r.addr()
	c.Event = r.str()
	c.Reason = r.str()
	c.Error = r.str()
	c.Transport = r.str()
	c.TLSSubject = r.str()
	c.BatchID = batchID
	if r.err != nil {
		return ConnEvent{}, 0, fmt.Errorf("event row at byte %d: %w", r.off, r.err)
	}
	return c, r.off, nil
}
