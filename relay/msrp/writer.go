package msrp

import (
	"bufio"
	"bytes"
	"io"
)

// Writer writes MSRP frames: a start line, header fields, an optional body
// streamed in pieces, and the end-line with its flag. It refuses body data
// that contains the frame's own end-line (RFC 4975 §7.1). Output is buffered;
// End flushes. It is not safe for concurrent use.
//
//	w.StartRequest(tid, "SEND")
//	w.Header(msrp.HdrToPath, to) ...
//	body := w.Body(); body.Write(p) ...
//	w.End(msrp.FlagEnd)
type Writer struct {
	bw    *bufio.Writer
	state int
	tid   [255]byte
	tidN  int
	// The last bytes sent of the body, so that an end-line split across
	// two Writes is still caught. Starts as CRLF: the blank line before
	// the body ends in one.
	win  [9 + 255]byte
	winN int
	bw2  bodyWriter
	bw3  scannedWriter
	err  error
	// Capture (see Capture): bytes written since, and the first ones kept.
	n       int64
	capBuf  []byte
	capRoom int
}

const (
	wIdle = iota
	wHeaders
	wBody
)

// NewWriter returns a Writer that writes to w, through a bufio.Writer of
// its own unless w is already a *bufio.Writer.
func NewWriter(w io.Writer) *Writer {
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriter(w)
	}
	wr := &Writer{bw: bw}
	wr.bw2.w = wr
	wr.bw3.w = wr
	return wr
}

func (w *Writer) setTID(tid []byte) bool {
	if len(tid) == 0 || len(tid) > len(w.tid) {
		return false
	}
	w.tidN = copy(w.tid[:], tid)
	return true
}

// StartRequest begins a request "MSRP tid method". An empty tid makes the
// Writer pick a new random one (see TransactID).
func (w *Writer) StartRequest(tid []byte, method string) error {
	if w.state != wIdle {
		return ErrWriterState
	}
	if len(tid) == 0 {
		tid = AppendTransactID(w.tid[:0])
	}
	if !w.setTID(tid) || method == "" {
		return ErrWriterState
	}
	w.put(AppendRequestLine(w.room(w.tidN+len(method)+8), w.tid[:w.tidN], method))
	w.state = wHeaders
	return nil
}

// StartResponse begins a response "MSRP tid code [comment]".
func (w *Writer) StartResponse(tid []byte, code int, comment string) error {
	if w.state != wIdle {
		return ErrWriterState
	}
	if code < 100 || code > 999 || !w.setTID(tid) {
		return ErrWriterState
	}
	w.put(AppendResponseLine(w.room(w.tidN+len(comment)+12), w.tid[:w.tidN], code, comment))
	w.state = wHeaders
	return nil
}

// room returns the buffer's free space to build n bytes in, flushing first
// when they do not fit (a line longer than the whole buffer is built in a
// new slice: the only case that allocates).
func (w *Writer) room(n int) []byte {
	if w.bw.Available() < n {
		_ = w.bw.Flush() // an error stays in bw and comes back from End
	}
	return w.bw.AvailableBuffer()
}

// TransactID returns the transact-id of the frame being written.
func (w *Writer) TransactID() []byte { return w.tid[:w.tidN] }

// Header writes one header field "name: value".
func (w *Writer) Header(name string, value []byte) {
	if w.state != wHeaders {
		w.err = ErrWriterState
		return
	}
	w.put(AppendHeader(w.room(len(name)+len(value)+4), name, value))
}

// HeaderString is Header with a string value.
func (w *Writer) HeaderString(name, value string) {
	if w.state != wHeaders {
		w.err = ErrWriterState
		return
	}
	w.put(AppendHeader(w.room(len(name)+len(value)+4), name, value))
}

// RawHeaders writes whole header field lines that are already formatted
// (e.g. with AppendHeader, or copied from a received Frame): lines must be
// empty or end in CRLF, and must not hold the blank line that ends the
// header fields. Anything else is refused with ErrRawHeaders (reported by
// End) and nothing of it is written, so a piece of a line can never end up
// on the wire.
func (w *Writer) RawHeaders(lines []byte) {
	if w.state != wHeaders {
		w.err = ErrWriterState
		return
	}
	if !wholeLines(lines) {
		if w.err == nil {
			w.err = ErrRawHeaders
		}
		return
	}
	w.put(lines)
}

// wholeLines reports whether b is a run of non-empty CRLF-ended lines.
func wholeLines(b []byte) bool {
	n := len(b)
	if n == 0 {
		return true
	}
	return n >= 3 && b[n-2] == '\r' && b[n-1] == '\n' && b[0] != '\r' && !bytes.Contains(b, []byte("\r\n\r\n"))
}

// Body ends the header fields with the blank line and returns a writer for
// the body. Each Write is checked for the end-line; see ErrEndLineInBody.
func (w *Writer) Body() io.Writer {
	if w.state != wHeaders {
		w.err = ErrWriterState
		return &w.bw2
	}
	w.put(crlfBytes)
	w.state = wBody
	w.winN = copy(w.win[:], "\r\n")
	return &w.bw2
}

// BodyScanned is Body for data already checked for the end-line of this
// frame's transact-id: the pieces of a Body told to Avoid(TransactID())
// and written only while it has not been reached (Body.Avoided). Its
// Writes are not scanned again (a second pass over every byte of a
// relayed body). Every body Write of the frame must then go through it.
func (w *Writer) BodyScanned() io.Writer {
	if w.state != wHeaders {
		w.err = ErrWriterState
		return &w.bw3
	}
	w.put(crlfBytes)
	w.state = wBody
	return &w.bw3
}

type scannedWriter struct{ w *Writer }

func (b *scannedWriter) Write(p []byte) (int, error) {
	if b.w.state != wBody {
		return 0, ErrWriterState
	}
	return b.w.put(p)
}

type bodyWriter struct{ w *Writer }

func (b *bodyWriter) Write(p []byte) (int, error) { return b.w.writeBody(p) }

func (w *Writer) writeBody(p []byte) (int, error) {
	if w.state != wBody {
		return 0, ErrWriterState
	}
	if len(p) == 0 {
		return 0, nil
	}
	var patBuf [9 + 255]byte
	pat := append(append(patBuf[:0], "\r\n-------"...), w.tid[:w.tidN]...)
	// An end-line split between the previous bytes and p.
	var seam [2 * (9 + 255)]byte
	s := append(append(seam[:0], w.win[:w.winN]...), p[:min(len(p), len(pat)-1)]...)
	if bytes.Contains(s, pat) || bytes.Contains(p, pat) {
		return 0, ErrEndLineInBody
	}
	n, err := w.put(p)
	// Keep the last len(pat)-1 bytes for the next seam.
	keep := len(pat) - 1
	if len(p) >= keep {
		w.winN = copy(w.win[:], p[len(p)-keep:])
	} else {
		tail := append(w.win[:w.winN], p...)
		if len(tail) > keep {
			tail = tail[len(tail)-keep:]
		}
		w.winN = copy(w.win[:], tail)
	}
	return n, err
}

// End writes the end-line with flag ('$', '+' or '#'; preceded by CRLF when
// a body was written) and flushes the frame.
func (w *Writer) End(flag byte) error {
	if err := w.EndBuffered(flag); err != nil {
		return err
	}
	return w.bw.Flush()
}

// EndBuffered is End without the flush: the frame may stay in the buffer,
// behind the frames written before it, until a Flush (or a full buffer)
// writes it out. Frames written to a Writer in turn go out in that order.
func (w *Writer) EndBuffered(flag byte) error {
	if w.err != nil {
		err := w.err
		w.err = nil
		w.state = wIdle
		return err
	}
	if w.state == wIdle || !ValidFlag(flag) {
		return ErrWriterState
	}
	if w.state == wBody {
		w.put(crlfBytes)
	}
	_, err := w.put(AppendEndLine(w.room(w.tidN+10), w.tid[:w.tidN], flag))
	w.state = wIdle
	return err // a write error of this frame (also from a flush while it was written) sticks in the buffer
}

// Capture starts counting the bytes of what is written from now on and,
// with limit > 0, keeping their first limit bytes, appended to buf[:0]
// (lent by the caller, for a tracer: it sees the frame as written whether
// or not it has left the buffer yet). Captured ends it.
func (w *Writer) Capture(buf []byte, limit int) {
	w.capBuf, w.capRoom, w.n = buf[:0], limit, 0
}

// Captured ends a Capture and returns the bytes kept (the buffer lent)
// and the count of bytes written meanwhile.
func (w *Writer) Captured() ([]byte, int64) {
	b, n := w.capBuf, w.n
	w.capBuf, w.capRoom, w.n = nil, 0, 0
	return b, n
}

// put writes p into the buffer, counted and captured.
func (w *Writer) put(p []byte) (int, error) {
	w.n += int64(len(p))
	if w.capRoom > 0 {
		k := min(w.capRoom, len(p))
		w.capBuf = append(w.capBuf, p[:k]...)
		w.capRoom -= k
	}
	return w.bw.Write(p)
}

var crlfBytes = []byte("\r\n")

// Buffered returns the bytes waiting in the Writer's buffer.
func (w *Writer) Buffered() int { return w.bw.Buffered() }

// Flush writes out buffered bytes (End already does).
func (w *Writer) Flush() error { return w.bw.Flush() }

// TransactIDFor returns a new random transact-id appended to dst that does
// not occur as an end-line in body, as RFC 4975 §7.1 requires of senders.
func TransactIDFor(dst, body []byte) []byte {
	for {
		out := AppendTransactID(dst)
		tid := out[len(dst):]
		var patBuf [9 + IdentMaxLen]byte
		pat := append(append(patBuf[:0], "\r\n-------"...), tid...)
		if !bytes.Contains(body, pat) && !bytes.HasPrefix(body, pat[2:]) {
			return out
		}
	}
}

// Idle reports whether no frame is being written: the last one ended (or
// none began).
func (w *Writer) Idle() bool { return w.state == wIdle }
