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
	// The boundary of another transact-id to watch for (Avoid), while
	// avoidN > 0, and whether it was reached (Avoided).
	avoid   [255]byte
	avoidN  int
	avoided bool
}

func (b *Body) reset(f *Frame) {
	b.f = f
	b.tid = f.TransactID
	b.patN = copy(b.pat[copy(b.pat[:], "\r\n-------"):], b.tid) + 9
	b.done = !f.hasBody
	b.started = false
	b.n = 0
	b.pending = 0
	b.avoidN = 0
	b.avoided = false
}

// Avoid makes the Body watch, from now on, for the boundary CRLF "-------"
// tid of another transact-id: the one a relay forwards the body under.
// RFC 4975 §7.1: a body must not contain its frame's end-line, so data
// from such a boundary on must not be written under tid (msrp.Writer's
// Body refuses it; BodyScanned leaves the check to this). The search is
// the one that looks for the Body's own end-line: the body is scanned
// once. The pieces Next hands out stop before such a boundary, so it
// always starts a piece; Avoided reports, from that piece on, that it
// was reached. The blank line's CRLF counts: a body that starts with
// "-------" tid is caught. Avoid is to be called before the first Next.
func (b *Body) Avoid(tid []byte) {
	if len(tid) == 0 || b.done {
		return
	}
	b.avoidN = copy(b.avoid[:], tid)
}

// Avoided reports whether the boundary given to Avoid has been reached:
// the piece Next returned last starts with it.
func (b *Body) Avoided() bool { return b.avoided }

// hit records that the avoided boundary starts the data ahead; from then
// on only the Body's own end-line is searched for.
func (b *Body) hit() {
	b.avoided = true
	b.avoidN = 0
}

// need is how many bytes decide whether a boundary is the end-line or the
// avoided one: the longer of the two.
func (b *Body) need() int {
	return max(b.patN+3, 9+b.avoidN)
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
				// Read up to the end-line's length; a stream that ends
				// sooner ends the frame only while the bytes that came
				// are still its prefix: otherwise they are data, handed
				// out before the error, whatever the buffer's size.
				endLen := b.patN + 3 // CRLF "-------" tid flag CRLF
				_, perr := br.Peek(endLen - 2)
				buf, _ = br.Peek(min(br.Buffered(), endLen-2))
				switch b.match(buf, 2) {
				case matchFull:
					return nil, b.finish(buf, 2)
				case matchPartial:
					return nil, b.fail(perr)
				}
				buf, _ = br.Peek(br.Buffered())
			}
			// The avoided boundary right after the blank line. While the
			// bytes are a prefix of it, one more byte must come anyway
			// (no end-line is among them: no CR): wait for it, not for
			// the whole boundary, which a frame with a shorter end-line
			// need not be long enough to hold.
			// A stream that ends inside the prefix leaves it data: the
			// boundary never came.
			for b.matchAvoid(buf, 2) == matchPartial {
				_, err := br.Peek(len(buf) + 1)
				more := err == nil || br.Buffered() > len(buf)
				// Peek may have moved the buffered bytes: buf again.
				buf, _ = br.Peek(br.Buffered())
				if !more {
					break
				}
			}
			if b.matchAvoid(buf, 2) == matchFull {
				b.hit()
			}
			b.started = true
		}
		if p, more := b.scan(buf); !more {
			if p == nil {
				return nil, b.finish(buf, 0)
			}
			return p, nil
		}
		// A possible end-line (or avoided boundary) starts the buffer but
		// is not all buffered: no end-line is complete in it, so at least
		// one more byte must come (waiting for the whole length of the
		// longer of the two could wait past the end of the frame).
		if _, err := br.Peek(len(buf) + 1); err != nil && br.Buffered() <= len(buf) {
			// The stream ended inside it. A prefix of the own end-line
			// ends the frame here; one of the avoided boundary alone is
			// data (it never came whole), handed out before the error as
			// it is without Avoid. Peek may have moved the bytes: buf again.
			if buf, _ = br.Peek(br.Buffered()); err == io.EOF && len(buf) > 0 && b.match(buf, 0) == matchNone {
				return buf, nil
			}
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
//
// With a boundary to avoid (Avoid) the search is for the CRLF "-------"
// both begin with, and data stops before the avoided boundary too: when
// it starts buf, it is marked reached (hit) and the scan goes on as data.
func (b *Body) scan(buf []byte) (p []byte, more bool) {
	n, more := b.safe(buf)
	if n > 0 {
		return buf[:n], false
	}
	if more {
		return nil, true
	}
	if b.match(buf, 0) == matchFull {
		return nil, false
	}
	// The avoided boundary starts buf: data from here on, and only the
	// own end-line is searched for.
	b.hit()
	n, _ = b.safe(buf[1:])
	return buf[:n+1], false
}

// safe returns how many bytes at the start of buf are body data for sure:
// they hold no end-line and no avoided boundary, and none of them starts
// one that is cut off at the end of buf. At n < len(buf) one of those
// starts, complete, or cut off (more).
func (b *Body) safe(buf []byte) (n int, more bool) {
	pat := b.pat[:b.patN]
	if b.avoidN > 0 {
		pat = pat[:9] // CRLF "-------", the start of both
	}
	endLen := b.need()
	off := 0
	for {
		i := bytes.Index(buf[off:], pat)
		if i < 0 {
			break
		}
		i += off
		e, a := b.match(buf[i:], 0), b.matchAvoid(buf[i:], 0)
		switch {
		case e == matchFull:
			return i, false
		case e == matchPartial || a == matchPartial:
			return i, true
		case a == matchFull:
			return i, false
		}
		off = i + 1 // a boundary of neither: data
	}
	// No whole boundary at or after off: only a cut-off one at the end.
	for j := max(off, len(buf)-(endLen-1)); j < len(buf); j++ {
		k := bytes.IndexByte(buf[j:], '\r')
		if k < 0 {
			break
		}
		j += k
		if b.match(buf[j:], 0) != matchNone || b.matchAvoid(buf[j:], 0) != matchNone { // partial: full was found above
			return j, true
		}
	}
	return len(buf), false
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

// matchAvoid compares p with the avoided boundary CRLF "-------" tid,
// skipping the first skip bytes of the pattern; matchNone without one.
func (b *Body) matchAvoid(p []byte, skip int) int {
	if b.avoidN == 0 {
		return matchNone
	}
	const lead = "\r\n-------"
	tid := b.avoid[:b.avoidN]
	pos := skip
	for _, c := range p {
		switch {
		case pos < len(lead):
			if c != lead[pos] {
				return matchNone
			}
		case c != tid[pos-len(lead)]:
			return matchNone
		}
		pos++
		if pos == len(lead)+len(tid) {
			return matchFull
		}
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
