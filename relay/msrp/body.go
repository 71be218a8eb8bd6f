package msrp

import (
	"bytes"
	"io"
)

// Body streams a frame's body. It ends (io.EOF) at the frame's own end-line:
// CRLF "-------" transact-id flag CRLF (RFC 4975 §7.1). Anything else,
// including CRLF "-------" followed by another transact-id or by no valid
// flag, is body data. It is valid until the next ReadFrame.
type Body struct {
	r       *Reader
	f       *Frame
	tid     []byte
	done    bool
	started bool  // some body bytes were handed out already
	n       int64 // body bytes handed out
	pending int   // bytes of the last Next slice still to be discarded
	// pat is the boundary CRLF "-------" tid that the end-line starts with.
	pat  [9 + 255]byte
	patN int
}

func (b *Body) reset(f *Frame) {
	b.f = f
	b.tid = f.TransactID
	b.patN = copy(b.pat[copy(b.pat[:], "\r\n-------"):], b.tid) + 9
	b.done = !f.hasBody
	b.started = false
	b.n = 0
	b.pending = 0
}

// Len returns the number of body bytes read so far.
func (b *Body) Len() int64 { return b.n }

// Done reports whether the end-line has been read.
func (b *Body) Done() bool { return b.done }

// Next returns the next piece of body data, a slice of the Reader's buffer
// valid until the next call on the Body or Reader. At the end-line it returns
// nil, io.EOF and the frame's Flag is set. It never copies.
func (b *Body) Next() ([]byte, error) {
	p, err := b.peek()
	if err != nil {
		return nil, err
	}
	b.pending = len(p)
	b.n += int64(len(p))
	b.started = true
	return p, nil
}

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	q, err := b.peek()
	if err != nil {
		return 0, err
	}
	n := copy(p, q)
	b.pending = n
	b.n += int64(n)
	b.started = true
	return n, nil
}

// WriteTo implements io.WriterTo: it writes the rest of the body to w
// straight from the Reader's buffer.
func (b *Body) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		p, err := b.Next()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, werr := w.Write(p)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
	}
}

func (b *Body) discardAll() (int64, error) { return b.WriteTo(io.Discard) }

// peek discards what was handed out last and returns the body data that is
// buffered before the next possible end-line, reading more when needed.
func (b *Body) peek() ([]byte, error) {
	br := b.r.br
	if b.pending > 0 {
		_, _ = br.Discard(b.pending) // these bytes are buffered: cannot fail
		b.pending = 0
	}
	if b.done {
		return nil, io.EOF
	}
	endLen := 9 + len(b.tid) + 3 // CRLF "-------" tid flag CRLF
	for {
		n := br.Buffered()
		if n == 0 {
			n = 1
		}
		buf, err := br.Peek(n)
		if len(buf) == 0 {
			return nil, b.fail(err)
		}
		// Lenient: a sender that omits the CRLF between the blank line and
		// the end-line of an empty body sends "-------tid$" right after the
		// blank line, whose CRLF then doubles as the end-line's.
		if !b.started {
			switch b.match(buf, 2) {
			case matchFull:
				return nil, b.finish(buf, 2)
			case matchPartial:
				if _, err := br.Peek(endLen - 2); err != nil && br.Buffered() < endLen-2 {
					return nil, b.fail(err)
				}
				if buf, _ = br.Peek(min(br.Buffered(), endLen-2)); b.match(buf, 2) == matchFull {
					return nil, b.finish(buf, 2)
				}
			}
			b.started = true
		}
		if p, more := b.scan(buf); !more {
			if p == nil {
				return nil, b.finish(buf, 0)
			}
			return p, nil
		}
		// A possible end-line starts the buffer but is not all buffered.
		if _, err := br.Peek(endLen); err != nil && br.Buffered() < endLen {
			return nil, b.fail(err)
		}
		// re-scan with the end-line's worth buffered
	}
}

// scan looks for the frame's end-line in buf (body data buffered, not
// started by one skipped by the lenient case). It returns the body data
// before the first possible end-line: all of buf when none can start in
// it; nil when a complete end-line starts buf; more when one may start
// buf but is not all buffered. The search is for the whole boundary
// CRLF "-------" tid (bytes.Index, vectorised), then the flag and CRLF are
// checked: a boundary of another transact-id or with no valid flag is body
// data (RFC 4975 §7.1). Near the end of buf a boundary may be cut off:
// only its prefix is there, checked at each CR of the last endLen-1 bytes.
func (b *Body) scan(buf []byte) (p []byte, more bool) {
	pat := b.pat[:b.patN]
	endLen := b.patN + 3
	off := 0
	for {
		i := bytes.Index(buf[off:], pat)
		if i < 0 {
			break
		}
		i += off
		switch b.match(buf[i:], 0) {
		case matchNone: // boundary followed by no valid flag and CRLF: data
			off = i + 1
			continue
		case matchFull:
			if i > 0 {
				return buf[:i], false
			}
			return nil, false
		}
		if i > 0 {
			return buf[:i], false
		}
		return nil, true
	}
	// No whole boundary at or after off: only a cut-off one at the end.
	for j := max(off, len(buf)-(endLen-1)); j < len(buf); j++ {
		k := bytes.IndexByte(buf[j:], '\r')
		if k < 0 {
			break
		}
		j += k
		if b.match(buf[j:], 0) != matchNone { // partial: full was found above
			if j > 0 {
				return buf[:j], false
			}
			return nil, true
		}
	}
	return buf, false
}

const (
	matchNone = iota
	matchPartial
	matchFull
)

// match compares p with the end-line CRLF "-------" tid flag CRLF, skipping
// the first skip bytes of the pattern.
func (b *Body) match(p []byte, skip int) int {
	const lead = "\r\n-------"
	pos := skip // position in the pattern
	for _, c := range p {
		var ok bool
		switch {
		case pos < len(lead):
			ok = c == lead[pos]
		case pos < len(lead)+len(b.tid):
			ok = c == b.tid[pos-len(lead)]
		case pos == len(lead)+len(b.tid):
			ok = ValidFlag(c)
		case pos == len(lead)+len(b.tid)+1:
			ok = c == '\r'
		default:
			if c == '\n' {
				return matchFull
			}
		}
		if !ok {
			return matchNone
		}
		pos++
	}
	return matchPartial
}

// finish consumes the end-line at the start of buf (whose first skip
// pattern bytes are not in buf) and records the flag.
func (b *Body) finish(buf []byte, skip int) error {
	flagAt := 9 + len(b.tid) - skip
	b.f.flag = buf[flagAt]
	_, _ = b.r.br.Discard(flagAt + 3)
	b.done = true
	return io.EOF
}

func (b *Body) fail(err error) error {
	if err == io.EOF || err == nil {
		b.r.err = &FrameError{Err: ErrTruncated, TransactID: string(b.tid), Detail: "in the body"}
		b.done = true
		return b.r.err
	}
	return err
}
