package msrp

// Canonical header field names (RFC 4975 §9, RFC 4976 §8, RFC 7701).
// Lookups compare names case-insensitively.
const (
	HdrToPath            = "To-Path"
	HdrFromPath          = "From-Path"
	HdrMessageID         = "Message-ID"
	HdrSuccessReport     = "Success-Report"
	HdrFailureReport     = "Failure-Report"
	HdrByteRange         = "Byte-Range"
	HdrStatus            = "Status"
	HdrContentType       = "Content-Type"
	HdrExpires           = "Expires"
	HdrMinExpires        = "Min-Expires"
	HdrMaxExpires        = "Max-Expires"
	HdrUsePath           = "Use-Path"
	HdrWWWAuthenticate   = "WWW-Authenticate"
	HdrAuthorization     = "Authorization"
	HdrAuthenticationInf = "Authentication-Info"
	HdrUseNickname       = "Use-Nickname"
)

// Continuation flags of an end-line (RFC 4975 §7.1).
const (
	FlagEnd        byte = '$' // last chunk of the message
	FlagMore       byte = '+' // more chunks follow
	FlagAbort      byte = '#' // message aborted, no more chunks
	flagUnknownYet byte = 0
)

// ValidFlag reports whether c is one of '$', '+', '#'.
func ValidFlag(c byte) bool { return c == FlagEnd || c == FlagMore || c == FlagAbort }

// Header is one header field. Name and Value are slices into the Reader's
// buffer, valid until the next ReadFrame; Value has surrounding blanks removed.
type Header struct {
	Name  []byte
	Value []byte
}

// Frame is one MSRP request or response as read by a Reader. Every slice
// points into the Reader's buffer and is valid until the next ReadFrame.
type Frame struct {
	TransactID []byte
	Method     []byte // request method; nil for a response
	StatusCode int    // response status code (100-999); 0 for a request
	Comment    []byte // response comment; may be empty
	Headers    []Header

	raw     []byte // start line and header fields, each ending in CRLF
	hasBody bool
	flag    byte
	body    *Body
}

// IsRequest reports whether the frame is a request (has a method).
func (f *Frame) IsRequest() bool { return f.Method != nil }

// Get returns the value of the first header field named name (compared
// case-insensitively), or nil when there is none.
func (f *Frame) Get(name string) []byte {
	for i := range f.Headers {
		if equalFold(f.Headers[i].Name, name) {
			return f.Headers[i].Value
		}
	}
	return nil
}

// Has reports whether a header field named name is present.
func (f *Frame) Has(name string) bool {
	for i := range f.Headers {
		if equalFold(f.Headers[i].Name, name) {
			return true
		}
	}
	return false
}

// Count returns how many header fields are named name.
func (f *Frame) Count(name string) int {
	n := 0
	for i := range f.Headers {
		if equalFold(f.Headers[i].Name, name) {
			n++
		}
	}
	return n
}

// Raw returns the start line and header fields exactly as received, each
// line ending in CRLF (without the blank line that precedes a body).
func (f *Frame) Raw() []byte { return f.raw }

// HasBody reports whether the frame carries a body (a blank line followed
// the header fields). A body may still be empty.
func (f *Frame) HasBody() bool { return f.hasBody }

// Body returns the frame's body: an io.Reader ending at the frame's
// end-line. It reads io.EOF at once for a frame without a body.
func (f *Frame) Body() *Body { return f.body }

// Flag returns the end-line's continuation flag ('$', '+' or '#'). It is
// known once the body has been read to io.EOF (at once for a frame without a
// body) and is 0 before.
func (f *Frame) Flag() byte { return f.flag }

// equalFold compares ASCII b and s case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
