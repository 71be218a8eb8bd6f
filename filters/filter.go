// Package filters owns the trace filter language: it compiles expressions (expr-lang syntax) once,
// reporting errors with line and column, into matchers that evaluate an Input with zero allocations.
//
// # Names
//
//	remote.ip, local.ip     address  (IPv4-mapped IPv6 is unmapped, an IPv6 zone is ignored)
//	remote.port, local.port number
//	transport               string   "msrp" | "msrps"
//	tls.subject             string   peer certificate subject, "" when none (yet)
//	direction               string   "in" | "out"
//	event                   string   "accepted", "connect-start", "connected", "connect-failed",
//	                                 "tls-handshake", "closed", "frame"
//	method                  string   frame method ("SEND", "REPORT", "AUTH", ...; "" for responses)
//	status                  number   response status, 0 for requests
//	session                 string   session id
//	message_id              string   Message-ID
//	content_type            string   Content-Type
//	size                    number   frame bytes on the wire
//
// Frame names (method … size) are zero/empty for connection events. A string
// literal compared with transport, direction or event must be one of the
// values listed, so a typo is a compile error rather than a silent non-match.
//
// # Grammar
//
//	expr    = expr ("&&" | "and" | "||" | "or") expr | ("!" | "not") expr | "(" expr ")"
//	        | value ("==" | "!=") value
//	        | value ("<" | "<=" | ">" | ">=") value          numbers or strings
//	        | value ["not"] "in" set
//	        | value ["not"] ("contains" | "startsWith" | "endsWith") value   strings
//	        | value ["not"] "matches" "regexp"               RE2, unanchored, compiled once
//	        | "true" | "false"
//	set     = "[" literal {"," literal} "]" | int ".." int | cidr(...)
//	literal = number | "string" | int ".." int | ip("…") | cidr("…")
//	value   = name | number | "string" | ip("192.0.2.1") | ip("2001:db8::1")
//
// cidr("203.0.113.0/24", "2001:db8::/32", ...) is a set of prefixes for
// "remote.ip in cidr(...)"; ip("...") is one address. Where an address is
// expected (compared with remote.ip / local.ip, or in a list or on the right
// of "in" against one) a plain string literal is parsed as an address, or a
// prefix when it contains "/". Lists may mix addresses and prefixes, or
// numbers and ranges (local.port in [2855, 2856, 9000..9010]). Literals
// that do not parse, unknown names, type mismatches and anything else of
// the expr language (arithmetic, maps, builtins, let, if, ?:, ...) are
// compile errors with a position. The whole expression must be boolean;
// "true" matches everything.
package filters

import (
	"fmt"
	"net/netip"
	"strings"
)

// Input is what one evaluation sees. The tracer fills one per connection
// event or frame, reusing it.
type Input struct {
	RemoteIP   netip.Addr
	RemotePort uint16
	LocalIP    netip.Addr
	LocalPort  uint16
	Transport  string // "msrp" | "msrps"
	Direction  string // "in" | "out": for events, accepted (in) or dialled (out); for frames, received (in) or sent (out) by the relay
	Event      string // "accepted","connect-start","connected","connect-failed","tls-handshake","closed","frame"
	TLSSubject string // peer certificate subject, "" when none

	// Frame fields; zero for connection events.
	Method, Session, MessageID, ContentType string
	Status                                  int   // response status, 0 for requests
	Size                                    int64 // frame bytes on the wire
}

// Fields is a set of the Input fields an expression reads.
type Fields uint32

// The fields, one bit each.
const (
	FieldRemoteIP Fields = 1 << iota
	FieldRemotePort
	FieldLocalIP
	FieldLocalPort
	FieldTransport
	FieldTLSSubject
	FieldDirection
	FieldEvent
	FieldMethod
	FieldStatus
	FieldSession
	FieldMessageID
	FieldContentType
	FieldSize
)

const connectionFields = FieldRemoteIP | FieldRemotePort | FieldLocalIP | FieldLocalPort | FieldTransport | FieldTLSSubject

// ConnectionOnly reports whether fs holds only per-connection fields
// (remote.*, local.*, transport, tls.subject): the verdict is then the same
// for every event and frame of a connection and can be cached, recomputed
// when an address or the TLS subject becomes known.
func (fs Fields) ConnectionOnly() bool { return fs&^connectionFields == 0 }

// String lists the names in fs, like "remote.ip|local.port".
func (fs Fields) String() string {
	var b strings.Builder
	for _, d := range fieldDefs {
		if fs&d.bit != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(d.name)
		}
	}
	return b.String()
}

// Filter is a compiled expression. It is immutable and safe for concurrent
// use by many goroutines. A nil *Filter matches everything.
type Filter struct {
	src  string
	uses Fields
	eval func(*Input) bool
}

// Match reports whether in matches. It does not allocate.
func (f *Filter) Match(in *Input) bool {
	if f == nil {
		return true
	}
	return f.eval(in)
}

// Uses returns the fields the expression reads.
func (f *Filter) Uses() Fields {
	if f == nil {
		return 0
	}
	return f.uses
}

// String returns the source expression.
func (f *Filter) String() string {
	if f == nil {
		return "true"
	}
	return f.src
}

// Error is a compile error. Line and Column are 1-based; Column counts
// characters (runes).
type Error struct {
	Expr         string
	Line, Column int
	Msg          string
}

func (e *Error) Error() string {
	return fmt.Sprintf("filter %q: line %d, column %d: %s", e.Expr, e.Line, e.Column, e.Msg)
}

// newError places msg at rune offset pos of src.
func newError(src string, pos int, msg string) *Error {
	line, col, n := 1, 1, 0
	for _, r := range src {
		if n == pos {
			break
		}
		n++
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &Error{Expr: src, Line: line, Column: col, Msg: msg}
}
