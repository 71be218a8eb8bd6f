package hep

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// EventForm selects how AppendEvent renders a connection event.
type EventForm uint8

const (
	// FormColon is OpenSIPS's default "homer5" form (proto_hep homer5_on=1, hep.c:1730-1767): the
	// values of Protocol, Event, Status, Message and then of every extra attribute, joined by ':',
	// e.g. "MSRP:CONNECTED:SUCCESS:Successfully connected...". Values are not escaped (as in OpenSIPS).
	FormColon EventForm = iota
	// FormJSON is OpenSIPS's homer5_on=0 form as one compact JSON object with the same keys in the
	// same order: {"Protocol":"MSRP","Event":"CONNECTED","Status":"SUCCESS","Message":"...",<extras>}.
	FormJSON
)

// String returns "colon" or "json".
func (f EventForm) String() string {
	if f == FormJSON {
		return "json"
	}
	return "colon"
}

// Protocol labels. OpenSIPS labels MSRP connections "TCP" even for MSRPS; msrpscope
// uses the real transport.
const (
	ProtocolMSRP  = "MSRP"
	ProtocolMSRPS = "MSRPS"
)

// Event names: OpenSIPS's "net" events (net/trans_trace.c:23-34) plus CONNECT_FAILED and
// TLS_HANDSHAKE, which OpenSIPS never produces for MSRP (it
// reports neither failed connects nor TLS handshakes of MSRP connections).
const (
	EventAccepted      = "ACCEPTED"
	EventConnectStart  = "CONNECT_START"
	EventConnected     = "CONNECTED"
	EventConnectFailed = "CONNECT_FAILED"
	EventTLSHandshake  = "TLS_HANDSHAKE"
	EventClosed        = "CLOSED"
)

// Event statuses (net/trans_trace.c:23-34).
const (
	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"
)

// Extra attribute keys for TLS_HANDSHAKE, named as OpenSIPS's proto_tls trace names them
// (tls_openssl/openssl_trace.h:41-84). The TLS master key is deliberately not offered.
const (
	AttrClientSubject = "client-subject"
	AttrClientIssuer  = "client-issuer"
	AttrServerSubject = "server-subject"
	AttrServerIssuer  = "server-issuer"
)

// Attr is one extra key/value of an Event.
type Attr struct {
	Key, Value string
}

// Event is a connection event in OpenSIPS "net" shape.
type Event struct {
	Protocol string // ProtocolMSRP or ProtocolMSRPS
	Name     string // Event* constant
	Status   string // StatusSuccess or StatusFailure
	Message  string // human-readable reason, e.g. "Connection accepted" or the close reason
	Extra    []Attr // optional, e.g. AttrClientSubject
}

// AppendEvent appends ev rendered in form to dst. It does not allocate when dst has room.
// FormJSON output is always valid JSON: strings are escaped and invalid UTF-8 becomes U+FFFD.
func AppendEvent(dst []byte, form EventForm, ev Event) []byte {
	if form == FormJSON {
		dst = append(dst, `{"Protocol":`...)
		dst = appendJSONString(dst, ev.Protocol)
		dst = append(dst, `,"Event":`...)
		dst = appendJSONString(dst, ev.Name)
		dst = append(dst, `,"Status":`...)
		dst = appendJSONString(dst, ev.Status)
		dst = append(dst, `,"Message":`...)
		dst = appendJSONString(dst, ev.Message)
		for _, a := range ev.Extra {
			dst = append(dst, ',')
			dst = appendJSONString(dst, a.Key)
			dst = append(dst, ':')
			dst = appendJSONString(dst, a.Value)
		}
		return append(dst, '}')
	}
	dst = append(dst, ev.Protocol...)
	dst = append(dst, ':')
	dst = append(dst, ev.Name...)
	dst = append(dst, ':')
	dst = append(dst, ev.Status...)
	dst = append(dst, ':')
	dst = append(dst, ev.Message...)
	for _, a := range ev.Extra {
		dst = append(dst, ':')
		dst = append(dst, a.Value...)
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal (RFC 8259 §7).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not valid inside JavaScript string literals
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Frame truncation.
const (
	// DefaultFrameLimit is the default maximum size of a frame payload: big enough for every text
	// message, well under heplify-server's 65507-byte packet limit and common UDP reassembly limits.
	DefaultFrameLimit = 16 * 1024
	// MinFrameLimit is the smallest limit AppendFrame honours; smaller positive limits are raised to it
	// so that the start line, the marker and the end-line always fit.
	MinFrameLimit = 256
	// TruncationMarker starts the line AppendFrame puts where it cut a frame:
	// "\r\n[msrpscope: frame truncated, N of M bytes omitted]".
	TruncationMarker = "[msrpscope: frame truncated, "
	// maxEndLine bounds the search for the end-line: CRLF + 7 dashes + transact-id (RFC 4975: at most
	// 32 chars) + flag + CRLF = 44 bytes; a little slack for non-conforming peers.
	maxEndLine = 80
)

var endLinePrefix = []byte("\r\n-------")

// AppendFrame appends an MSRP frame (the bytes as on the wire) to dst. If limit > 0 and the frame is
// longer than limit, the appended payload is at most max(limit, MinFrameLimit) bytes: the beginning of
// the frame (cut on a UTF-8 boundary), then "\r\n[msrpscope: frame truncated, N of M bytes omitted]",
// then the frame's end-line ("\r\n-------<transact-id><flag>\r\n") when one is found at its end.
// limit <= 0 means no limit. It does not allocate when dst has room.
func AppendFrame(dst, frame []byte, limit int) []byte {
	if limit <= 0 || len(frame) <= limit {
		return append(dst, frame...)
	}
	if limit < MinFrameLimit {
		limit = MinFrameLimit
		if len(frame) <= limit {
			return append(dst, frame...)
		}
	}
	var tail []byte
	if i := bytes.LastIndex(frame[max(0, len(frame)-maxEndLine):], endLinePrefix); i >= 0 {
		tail = frame[max(0, len(frame)-maxEndLine)+i:]
	}
	// Reserve the marker for the widest count so that the result never exceeds limit.
	markerMax := len("\r\n") + len(TruncationMarker) + 2*digits(len(frame)) + len(" of  bytes omitted]")
	head := limit - markerMax - len(tail)
	for k := 0; k < utf8.UTFMax-1 && head > 0 && !utf8.RuneStart(frame[head]); k++ {
		head-- // do not split a UTF-8 sequence: heplify-server drops invalid UTF-8
	}
	head = max(head, 0)
	dst = append(dst, frame[:head]...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, TruncationMarker...)
	dst = strconv.AppendInt(dst, int64(len(frame)-head-len(tail)), 10)
	dst = append(dst, " of "...)
	dst = strconv.AppendInt(dst, int64(len(frame)), 10)
	dst = append(dst, " bytes omitted]"...)
	return append(dst, tail...)
}

func digits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}
