package sink

import (
	"net/netip"
	"strconv"
	"unicode/utf8"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// TruncationMarker begins the line AppendFrame puts where it cut a frame:
// "[msrpscope: frame truncated, N of M bytes omitted]".
const TruncationMarker = "[msrpscope: frame truncated, "

// MaxFrameOverhead bounds what AppendFrame adds to the bytes it keeps of a
// cut frame: CRLF, the marker line with two 19-digit counts, and the
// end-line (CRLF, 7 dashes, a transact-id of at most 32 characters (RFC 4975
// §9: 3-32), the flag, CRLF), with slack for a longer non-conforming id.
const MaxFrameOverhead = 2 + len(TruncationMarker) + 2*19 + len(" of  bytes omitted]") + 2 + 7 + 64 + 1 + 2

// AppendFrame appends frame f as traced and is the one place where a frame
// is cut. The frame is f.Size bytes on the wire, of which the relay
// captured the first len(f.Wire). When all of it was captured and it is not
// longer than limit (limit <= 0: no limit of the sink's own), the wire
// bytes are appended unchanged. Otherwise the first min(len(f.Wire), limit)
// bytes are kept (one fewer to three fewer, so that no UTF-8 sequence is
// split: heplify-server drops invalid UTF-8), then a line stating the true
// totals, "[msrpscope: frame truncated, N of M bytes omitted]" (M = f.Size,
// N = M minus the bytes kept), then the frame's end-line (RFC 4975 §7.1),
// so that what a sink writes is still one well-formed MSRP frame. What is
// appended is at most the bytes kept plus MaxFrameOverhead. It does not
// allocate when dst has room.
func AppendFrame(dst []byte, f *event.FrameInfo, limit int) []byte {
	wire := f.Wire
	if int64(len(wire)) > f.Size {
		wire = wire[:f.Size] // never more than the frame
	}
	head := len(wire)
	if limit > 0 && head > limit {
		head = limit
	}
	if int64(head) == f.Size {
		return append(dst, wire...)
	}
	if head < len(wire) {
		for k := 0; k < utf8.UTFMax-1 && head > 0 && !utf8.RuneStart(wire[head]); k++ {
			head--
		}
	}
	dst = append(dst, wire[:head]...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, TruncationMarker...)
	dst = strconv.AppendInt(dst, f.Size-int64(head), 10)
	dst = append(dst, " of "...)
	dst = strconv.AppendInt(dst, f.Size, 10)
	dst = append(dst, " bytes omitted]\r\n-------"...)
	tid := f.TransactID
	if len(tid) > 64 {
		tid = tid[:64]
	}
	dst = append(dst, tid...)
	flag := f.Flag
	if flag == 0 {
		flag = '#' // RFC 4975 §7.1: a frame that did not end (continues elsewhere)
	}
	return append(dst, flag, '\r', '\n')
}

// Endpoints returns where a traced record goes from and to: for a frame,
// sender → receiver; for a connection event, initiator → acceptor (the
// direction of the TCP SYN). An unknown end (a connect-start to a name, the
// local end before connect) is the unspecified address of the other end's
// family with port 0, never a made-up address.
func Endpoints(e *event.Event) (src, dst netip.AddrPort) {
	c := &e.Conn
	in := c.Dir == event.DirIn
	if e.Frame != nil {
		in = e.Frame.Dir == event.DirIn
	}
	local, remote := c.Local, c.Remote
	switch {
	case !local.IsValid() && remote.IsValid():
		local = netip.AddrPortFrom(unspecified(remote.Addr()), 0)
	case !remote.IsValid() && local.IsValid():
		remote = netip.AddrPortFrom(unspecified(local.Addr()), 0)
	case !remote.IsValid() && !local.IsValid():
		local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		remote = local
	}
	if in {
		return remote, local
	}
	return local, remote
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// AppendCorrelationID appends the correlation id of e (docs/HEP.md,
// "Correlation"): for a frame, its relay sessions, both when both are set,
// sorted and joined with "~" so that both directions of a chat share one
// id; the one that is set otherwise; for a frame with no session and for a
// connection event, "conn-" and the connection id (unique per relay
// instance). Never empty.
func AppendCorrelationID(dst []byte, e *event.Event) []byte {
	if f := e.Frame; f != nil {
		a, b := f.FromSession, f.ToSession
		switch {
		case a != "" && b != "" && a != b:
			if b < a {
				a, b = b, a
			}
			dst = append(dst, a...)
			dst = append(dst, '~')
			return append(dst, b...)
		case a != "":
			return append(dst, a...)
		case b != "":
			return append(dst, b...)
		}
	}
	dst = append(dst, "conn-"...)
	return strconv.AppendUint(dst, e.Conn.ID, 10)
}
