package relay

import "sync"

// largeReadBufSize is the read side of a connection whose last forwarded
// body was larger than connBufSize (a file transfer's chunks): a body is
// read, and written on, in pieces of up to this much, so a 64 KiB chunk
// or several come with one read and go out with about one write, against
// about two of each with readBufSize. Measured in BENCHMARKS.md ("Large
// transfers"). Only such connections hold it, while they read: an idle
// one returns it (putReadSide), and one whose bodies became small again
// moves back to readBufSize (resizeReadSide). Plain TCP only: a TLS
// connection waits for its next frame in a read that holds its read side
// (an idle one would keep 256 KiB), and tls.Conn returns one record at a
// time.
const largeReadBufSize = 256 << 10

var readPoolLarge sync.Pool

// readSidePool is the pool of read sides of one size and that size.
func readSidePool(large bool) (*sync.Pool, int) {
	if large {
		return &readPoolLarge, largeReadBufSize
	}
	return &readPool, readBufSize
}

// testHookResize, when set (tests), is called after each resizeReadSide.
var testHookResize func(large bool)

// resizeReadSide moves c's read loop, between frames, to a read side of
// the size c.bigBody asks for. The bytes buffered (the next frames, or
// part of them) go with it: the new buffer's first fill takes them from
// deadlineReader.pend, one copy, no socket read. It waits while the last
// frame's body is not read to its end (the next ReadFrame skips the rest
// first) or, to shrink, while more is buffered than the smaller buffer
// holds.
func (c *conn) resizeReadSide() {
	old := c.rs
	n := old.br.Buffered()
	if c.lastF != nil && !c.lastF.Body().Done() || !c.bigBody && n > readBufSize {
		return
	}
	buffered, _ := old.br.Peek(n) // buffered: cannot fail
	c.rs = nil
	c.getReadSide()
	if n > 0 {
		c.dr.pend = buffered
		_, _ = c.br.Peek(n) // served by pend: cannot fail
		c.dr.pend = nil
	}
	old.br.Reset(nil)
	pool, _ := readSidePool(old.big)
	pool.Put(old)
	if h := testHookResize; h != nil {
		h(c.rs.big)
	}
}
