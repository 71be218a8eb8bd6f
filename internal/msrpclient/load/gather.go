package load

import (
	"io"
	"net"
)

// Gathering limits of a gatherWriter.
const (
	// gatherMin: body pieces at least this long are referenced, not
	// copied, when the connection takes writev; shorter ones cost less
	// to copy than an iovec.
	gatherMin = 16 << 10
	// gatherMaxIOV and gatherMaxBytes bound what is pending before a
	// write goes out on its own (the caller flushes once per batch):
	// well under IOV_MAX (1024), and a few socket buffers' worth.
	gatherMaxIOV   = 64
	gatherMaxBytes = 1 << 20
)

// gatherWriter is an engine connection's buffered writer: bufio.Writer's
// methods, plus WriteBody, which takes a body piece that stays unchanged
// until the next Flush. On a connection that takes writev (a
// *net.TCPConn) a piece of gatherMin bytes or more is not copied: the
// bytes staged before it (the frame's start line and header fields) and
// the piece itself are iovecs of the one writev a Flush makes (net.Buffers).
// On any other connection (TLS: tls.Conn has no writev, net.Buffers would
// write each piece as a record of its own) every byte is copied into the
// buffer, as bufio.Writer does, and a piece as long as the buffer goes out
// directly after what is staged.
//
// Errors are sticky: after one, writes do nothing and Flush returns it.
// Pending bytes are bounded by the buffer, gatherMaxIOV and gatherMaxBytes:
// beyond them a write flushes first (and may block, like bufio.Writer's).
type gatherWriter struct {
	w    io.Writer
	vec  bool        // w takes writev: big pieces are referenced
	buf  []byte      // staged bytes; cap fixed
	mark int         // buf[:mark] is already in iov
	iov  net.Buffers // pending pieces in order (vec only)
	out  net.Buffers // the copy of iov that WriteTo consumes (a field: no allocation)
	n    int         // bytes in iov
	err  error
}

func newGatherWriter(w io.Writer, size int) *gatherWriter {
	_, vec := w.(*net.TCPConn)
	g := &gatherWriter{w: w, vec: vec, buf: make([]byte, 0, size)}
	if vec {
		g.iov = make(net.Buffers, 0, gatherMaxIOV+2)
	}
	return g
}

// Buffered is the number of bytes pending.
func (g *gatherWriter) Buffered() int { return g.n + len(g.buf) - g.mark }

// AvailableBuffer is an empty slice over the buffer's free space, to append
// to and pass to Write (as bufio.Writer's).
func (g *gatherWriter) AvailableBuffer() []byte { return g.buf[len(g.buf):] }

// Write copies p.
func (g *gatherWriter) Write(p []byte) (int, error) { return copyIn(g, p) }

// WriteString copies s.
func (g *gatherWriter) WriteString(s string) (int, error) { return copyIn(g, s) }

// copyIn copies p into the buffer, flushing it whenever it is full.
func copyIn[S []byte | string](g *gatherWriter, p S) (int, error) {
	n := 0
	for len(p) > 0 && g.err == nil {
		if len(g.buf) == cap(g.buf) {
			_ = g.Flush()
			continue
		}
		m := copy(g.buf[len(g.buf):cap(g.buf)], p)
		g.buf = g.buf[:len(g.buf)+m]
		p = p[m:]
		n += m
	}
	return n, g.err
}

// WriteByte copies c.
func (g *gatherWriter) WriteByte(c byte) error {
	if g.err == nil && len(g.buf) == cap(g.buf) {
		_ = g.Flush()
	}
	if g.err != nil {
		return g.err
	}
	g.buf = append(g.buf, c)
	return nil
}

// WriteBody writes a body piece that the caller leaves unchanged until
// the next Flush returns: referenced when it is long and the connection
// takes writev, else copied (or, at least a buffer long, written directly).
func (g *gatherWriter) WriteBody(p []byte) {
	switch {
	case g.err != nil:
	case g.vec && len(p) >= gatherMin:
		if g.mark < len(g.buf) {
			g.iov = append(g.iov, g.buf[g.mark:])
			g.n += len(g.buf) - g.mark
			g.mark = len(g.buf)
		}
		g.iov = append(g.iov, p)
		g.n += len(p)
		if len(g.iov) >= gatherMaxIOV || g.n >= gatherMaxBytes {
			_ = g.Flush()
		}
	case len(p) >= cap(g.buf):
		if g.Flush() == nil {
			_, g.err = g.w.Write(p)
		}
	default:
		_, _ = g.Write(p)
	}
}

// Flush writes what is pending: one writev when pieces are referenced.
func (g *gatherWriter) Flush() error {
	if g.err != nil {
		return g.err
	}
	if len(g.iov) == 0 {
		if len(g.buf) > 0 {
			_, g.err = g.w.Write(g.buf)
		}
	} else {
		if g.mark < len(g.buf) {
			g.iov = append(g.iov, g.buf[g.mark:])
		}
		g.out = g.iov
		_, g.err = g.out.WriteTo(g.w)
		clear(g.iov) // no reference to a body kept past the Flush
		g.iov = g.iov[:0]
		g.out = nil
	}
	g.buf = g.buf[:0]
	g.mark, g.n = 0, 0
	return g.err
}
