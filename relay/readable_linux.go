package relay

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// canWaitReadable: idle TCP connections wait for their next frame without
// a read buffer (conn.waitFrame).
const canWaitReadable = true

// errAgain: a read from the socket in the raw callback found nothing yet.
var errAgain = errors.New("relay: nothing to read yet")

// readable is the raw read callback of waitFrame: it takes a read side and
// reads into it straight from the socket (deadlineReader in raw mode): true
// when it got bytes, the end of the stream or an error (kept in waitErr);
// with nothing there it gives the read side back and returns false, so the
// poller waits holding no buffer. One read syscall per wake-up, no
// MSG_PEEK before it.
func (c *conn) readable(fd uintptr) bool {
	if c.rs == nil {
		c.getReadSide()
	}
	c.dr.fd, c.dr.raw = fd, true
	_, err := c.br.Peek(1)
	c.dr.raw = false
	if errors.Is(err, errAgain) {
		c.putReadSide()
		return false
	}
	c.waitErr = err
	return true
}

// rawRead reads from the socket itself, inside the raw callback (the
// poller holds the descriptor's read lock: no net.Conn call may be made).
func (d *deadlineReader) rawRead(p []byte) (int, error) {
	n, err := syscall.Read(int(d.fd), p)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return 0, errAgain
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	d.n += int64(n)
	return n, nil
}
