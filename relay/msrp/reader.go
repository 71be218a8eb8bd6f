package msrp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
)

// Limits bound what a Reader accepts before it gives up on a frame.
type Limits struct {
	// MaxHeaderBytes bounds the start line plus all header fields, line
	// endings included. Default 16384.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header fields. Default 64.
	MaxHeaders int
	// MinTransactIDLen and MaxTransactIDLen bound the transact-id length.
	// RFC 4975 §9 ident allows 4 to 32 (the defaults); a deployment with
	// sloppy peers may widen it (at most 255, at least 1). The character
	// set is always the ident one.
	MinTransactIDLen int
	MaxTransactIDLen int
}

// Defaults of Limits' zero fields.
const (
	DefaultMaxHeaderBytes = 16 << 10
	DefaultMaxHeaders     = 64
)

// DefaultLimits returns the limits used for zero fields of Limits.
func DefaultLimits() Limits {
	return Limits{MaxHeaderBytes: DefaultMaxHeaderBytes, MaxHeaders: DefaultMaxHeaders,
		MinTransactIDLen: IdentMinLen, MaxTransactIDLen: IdentMaxLen}
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MinTransactIDLen <= 0 {
		l.MinTransactIDLen = IdentMinLen
	}
	if l.MaxTransactIDLen <= 0 {
		l.MaxTransactIDLen = IdentMaxLen
	}
	l.MaxTransactIDLen = min(l.MaxTransactIDLen, 255)
	l.MinTransactIDLen = min(l.MinTransactIDLen, l.MaxTransactIDLen)
	return l
}

// minBufSize is the smallest bufio buffer a Reader works with: an end-line
// of the longest allowed transact-id plus its leading CRLF must fit, so that
// it can be recognised with one Peek.
const minBufSize = 512

// Reader reads MSRP frames from a stream. It is not safe for concurrent use.
type Reader struct {
	br    *bufio.Reader
	lim   Limits
	hdr   []byte // start line and header fields of the current frame
	lines []int  // end offsets (after CRLF) of header lines in hdr
	f     Frame
	body  Body
	err   error // sticky error of a frame that could not be framed
	// complete is set when the current frame's end-line has been read with
	// its header fields, so Recover has nothing to skip.
	complete bool
}

// NewReader returns a Reader over br. A br with a buffer smaller than 512
// bytes is wrapped in a larger one. Zero fields of lim take DefaultLimits().
func NewReader(br *bufio.Reader, lim Limits) *Reader {
	r := &Reader{
		br:  bufio.NewReaderSize(br, minBufSize),
		lim: lim.withDefaults(),
	}
	r.body.r = r
	r.body.done = true
	return r
}

// Limits returns the limits in force.
func (r *Reader) Limits() Limits { return r.lim }

// ReadFrame reads the next frame's start line and header fields. The body
// is then read through Frame.Body; if the caller does not read it to the end,
// the next ReadFrame discards the rest first.
//
// At a clean end of stream between frames ReadFrame returns io.EOF. A
// malformed frame gives a *FrameError (see the Err* values); after one,
// Recover may skip to the end-line of that frame when its transact-id is known.
// Errors of the underlying reader are returned as they are.
func (r *Reader) ReadFrame() (*Frame, error) {
	if r.err != nil {
		return nil, r.err
	}
	if !r.body.done {
		if _, err := r.body.discardAll(); err != nil {
			return nil, err
		}
	}
	r.hdr = r.hdr[:0]
	r.lines = r.lines[:0]
	r.complete = false
	f := &r.f
	*f = Frame{Headers: f.Headers[:0]}

	blank, err := r.readHead()
	if err != nil {
		return nil, err
	}
	if err := r.parseHead(f, blank); err != nil {
		return nil, err
	}
	f.body = &r.body
	r.body.reset(f)
	return f, nil
}

// readHead reads lines up to the blank line (blank=true) or the end-line
// (blank=false), storing them in r.hdr with their offsets in r.lines.
func (r *Reader) readHead() (blank bool, err error) {
	lineStart := 0
	for {
		chunk, rerr := r.br.ReadSlice('\n')
		if len(r.hdr)+len(chunk) > r.lim.MaxHeaderBytes {
			return false, r.fail(ErrHeaderTooLarge, len(r.lines)+1,
				"more than "+strconv.Itoa(r.lim.MaxHeaderBytes)+" bytes")
		}
		r.hdr = append(r.hdr, chunk...)
		if len(r.lines) == 0 && len(r.hdr) >= 5 && string(r.hdr[:5]) != "MSRP " {
			// Fail fast on garbage instead of waiting for a whole line.
			return false, r.fail(ErrStartLine, 1, "does not start with \"MSRP \"")
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr != nil {
			if rerr == io.EOF {
				if len(r.hdr) == 0 {
					return false, io.EOF
				}
				return false, r.fail(ErrTruncated, len(r.lines)+1, "in the start line or header fields")
			}
			return false, rerr
		}
		line := r.hdr[lineStart:]
		n := len(line)
		if n < 2 || line[n-2] != '\r' {
			return false, r.fail(ErrLineEnding, len(r.lines)+1, "LF without CR")
		}
		content := line[:n-2]
		// No LF in content: ReadSlice stopped at the first.
		if indexByte(content, '\r') >= 0 {
			return false, r.fail(ErrLineEnding, len(r.lines)+1, "CR without LF")
		}
		r.lines = append(r.lines, len(r.hdr))
		lineStart = len(r.hdr)
		if len(r.lines) == 1 {
			if len(content) < 5 || string(content[:5]) != "MSRP " {
				return false, r.fail(ErrStartLine, 1, "does not start with \"MSRP \"")
			}
			// Validate now to fail fast; parseHead parses it again once
			// r.hdr no longer moves.
			if err := r.parseStartLine(&r.f, content); err != nil {
				return false, err
			}
			continue
		}
		if len(content) == 0 {
			return true, nil
		}
		if len(content) >= 7 && string(content[:7]) == "-------" {
			return false, nil
		}
		if len(r.lines)-1 > r.lim.MaxHeaders {
			return false, r.fail(ErrTooManyHeaders, len(r.lines),
				"more than "+strconv.Itoa(r.lim.MaxHeaders))
		}
	}
}

// parseHead parses the lines read by readHead into f.
func (r *Reader) parseHead(f *Frame, blank bool) error {
	if err := r.parseStartLine(f, r.hdr[:r.lines[0]-2]); err != nil {
		return err
	}
	last := len(r.lines) - 1 // the blank line or the end-line
	if !blank {
		end := r.hdr[r.lines[last-1] : r.lines[last]-2]
		tid := f.TransactID
		if len(end) != 7+len(tid)+1 || string(end[7:7+len(tid)]) != string(tid) || !ValidFlag(end[len(end)-1]) {
			return r.fail(ErrEndLine, last+1, strconv.Quote(string(truncate(end, 64))))
		}
		// The frame is fully read whatever else is wrong with it:
		// Recover has nothing to skip.
		f.flag = end[len(end)-1]
		r.complete = true
	}
	prev := r.lines[0]
	for i := 1; i < last; i++ {
		line := r.hdr[prev : r.lines[i]-2]
		prev = r.lines[i]
		h, ok := parseHeaderLine(line)
		if !ok {
			return r.fail(ErrHeaderSyntax, i+1, strconv.Quote(string(truncate(line, 64))))
		}
		f.Headers = append(f.Headers, h)
	}
	f.raw = r.hdr[:prev]
	f.hasBody = blank
	return nil
}

// parseStartLine parses
//
//	req-start  = pMSRP SP transact-id SP method CRLF
//	resp-start = pMSRP SP transact-id SP status-code [SP comment] CRLF
//
// (RFC 4975 §9; "MSRP" is case-sensitive there: %x4D.53.52.50).
func (r *Reader) parseStartLine(f *Frame, line []byte) error {
	rest := line[5:] // "MSRP " checked by readHead
	sp := indexByte(rest, ' ')
	if sp < 0 {
		return r.fail(ErrStartLine, 1, "no method or status after the transact-id")
	}
	tid := rest[:sp]
	if !validIdentLen(tid, r.lim.MinTransactIDLen, r.lim.MaxTransactIDLen) {
		return r.fail(ErrTransactID, 1, strconv.Quote(string(truncate(tid, 64))))
	}
	f.TransactID = tid
	rest = rest[sp+1:]
	if len(rest) >= 3 && isDigit(rest[0]) && isDigit(rest[1]) && isDigit(rest[2]) {
		if len(rest) > 3 && rest[3] != ' ' {
			return r.failTID(ErrStartLine, tid, "status code is not 3 digits")
		}
		f.StatusCode = int(rest[0]-'0')*100 + int(rest[1]-'0')*10 + int(rest[2]-'0')
		if f.StatusCode < 100 {
			return r.failTID(ErrStartLine, tid, "status code below 100")
		}
		if len(rest) > 4 {
			f.Comment = rest[4:]
			if !validText(f.Comment) {
				return r.failTID(ErrStartLine, tid, "control character in comment")
			}
		}
		return nil
	}
	// other-method = 1*UPALPHA
	if len(rest) == 0 {
		return r.failTID(ErrStartLine, tid, "empty method")
	}
	for _, c := range rest {
		if c < 'A' || c > 'Z' {
			return r.failTID(ErrStartLine, tid, "method is not upper-case letters: "+strconv.Quote(string(truncate(rest, 32))))
		}
	}
	f.Method = rest
	return nil
}

// parseHeaderLine splits "name:" [blanks] value [blanks]. RFC 4975 §9 has
// ext-header = hname ":" SP hval; blanks are accepted leniently.
func parseHeaderLine(line []byte) (Header, bool) {
	colon := indexByte(line, ':')
	if colon <= 0 {
		return Header{}, false
	}
	name := line[:colon]
	for _, c := range name {
		if !isTokenChar(c) {
			return Header{}, false
		}
	}
	v := trimBlanks(line[colon+1:])
	if !validText(v) {
		return Header{}, false
	}
	return Header{Name: name, Value: v}, true
}

func (r *Reader) fail(kind error, line int, detail string) error {
	var tid string
	if t := r.startTransactID(); t != nil {
		tid = string(t)
	}
	r.err = &FrameError{Err: kind, TransactID: tid, Line: line, Detail: detail}
	return r.err
}

func (r *Reader) failTID(kind error, tid []byte, detail string) error {
	r.err = &FrameError{Err: kind, TransactID: string(tid), Line: 1, Detail: detail}
	return r.err
}

// startTransactID returns the transact-id of a complete start line, or nil.
func (r *Reader) startTransactID() []byte {
	if len(r.lines) == 0 {
		return nil
	}
	line := r.hdr[:r.lines[0]-2]
	if len(line) < 5 || string(line[:5]) != "MSRP " {
		return nil
	}
	rest := line[5:]
	sp := indexByte(rest, ' ')
	if sp < 0 {
		return nil
	}
	if !validIdentLen(rest[:sp], r.lim.MinTransactIDLen, r.lim.MaxTransactIDLen) {
		return nil
	}
	return rest[:sp]
}

// Recover skips, after a *FrameError that named a transact-id, everything up
// to and including that frame's end-line, so the next ReadFrame starts at
// the next frame. It reads at most maxSkip bytes; it returns the original
// error when the transact-id is unknown (the stream cannot be re-framed and
// should be closed) or when the end-line is not found within maxSkip.
func (r *Reader) Recover(maxSkip int64) error {
	var fe *FrameError
	if r.err == nil {
		return nil
	}
	if !errors.As(r.err, &fe) || fe.TransactID == "" || errors.Is(fe, ErrTruncated) {
		return r.err
	}
	if r.complete {
		r.err = nil
		return nil
	}
	tid := []byte(fe.TransactID)
	// The end-line may directly follow a header line: look for it after
	// a CRLF, starting with the CRLF that ended the bytes already read.
	var m endMatcher
	m.init(tid)
	if len(r.hdr) >= 2 && r.hdr[len(r.hdr)-2] == '\r' && r.hdr[len(r.hdr)-1] == '\n' {
		m.prime()
	}
	for skipped := int64(0); skipped < maxSkip; skipped++ {
		c, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return r.err
			}
			return err
		}
		if m.feed(c) {
			r.err = nil
			r.body.done = true
			return nil
		}
	}
	return r.err
}

// endMatcher recognises "\r\n-------" tid flag "\r\n" one byte at a time
// (used only for recovery; the body path matches on buffered slices).
type endMatcher struct {
	pat []byte
	pos int
}

func (m *endMatcher) init(tid []byte) {
	m.pat = append(append([]byte("\r\n-------"), tid...), 0, '\r', '\n')
}

func (m *endMatcher) prime() { m.pos = 2 }

func (m *endMatcher) feed(c byte) bool {
	for {
		want := m.pat[m.pos]
		ok := c == want || (want == 0 && ValidFlag(c))
		if ok {
			m.pos++
			if m.pos == len(m.pat) {
				return true
			}
			return false
		}
		if m.pos == 0 {
			return false
		}
		// Restart: the only self-overlap of the pattern is at "\r".
		m.pos = 0
		if c != '\r' {
			return false
		}
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isTokenChar: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") (RFC 3261 §25.1).
func isTokenChar(c byte) bool { return charClass[c]&classToken != 0 }

// validText: utf8text = *(HTAB / %x20-7E / UTF8-NONASCII) (RFC 4975 §9);
// non-ASCII bytes are passed on without UTF-8 validation.
func validText(b []byte) bool {
	// Eight bytes at a time: a word with no byte below 0x20 and none equal
	// to 0x7f is valid (the has-less-than and has-zero-byte tests of
	// "Bit Twiddling Hacks"); one that may hold either is checked byte by
	// byte (HTAB is below 0x20 and valid).
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		del := w ^ (0x7f * ones)
		if ((w-0x20*ones)&^w|(del-ones)&^del)&highs != 0 && !validTextBytes(b[:8]) {
			return false
		}
		b = b[8:]
	}
	return validTextBytes(b)
}

func validTextBytes(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func indexByte(b []byte, c byte) int { return bytes.IndexByte(b, c) }

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// FailedHeader returns, after a *FrameError, the value of the first header
// field named name among the complete lines read of the failed frame, or
// nil. It lets a relay address an error response (which needs From-Path
// and To-Path) to a frame it could not parse; the value is a best effort,
// valid until the next ReadFrame or Recover.
func (r *Reader) FailedHeader(name string) []byte {
	if r.err == nil || len(r.lines) < 2 {
		return nil
	}
	prev := r.lines[0]
	for _, end := range r.lines[1:] {
		line := r.hdr[prev : end-2]
		prev = end
		if h, ok := parseHeaderLine(line); ok && equalFold(h.Name, name) {
			return h.Value
		}
	}
	return nil
}

// FailedMethod returns, after a *FrameError, the method of the failed
// frame when its start line was a well-formed request line, else "".
func (r *Reader) FailedMethod() string {
	if r.err == nil || len(r.lines) == 0 {
		return ""
	}
	var f Frame
	saved := r.err
	err := r.parseStartLine(&f, r.hdr[:r.lines[0]-2])
	r.err = saved
	if err != nil || f.Method == nil {
		return ""
	}
	return string(f.Method)
}
