package relay

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"
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
//
// The socket is non-blocking (the poller's), so the read never sleeps: it
// is made as a raw syscall, without the runtime's entersyscall/exitsyscall
// around it. That saves their cost on every read (up to three a relayed
// SEND, one of them finding nothing) and, more, keeps the goroutine's P
// out of the syscall state, where sysmon retakes a P whose syscall outlasts
// one of its 20 µs ticks (a read descheduled on a busy host): each retake
// hands the P to another thread and keeps sysmon polling every 20 µs
// instead of backing off to 10 ms.
func (d *deadlineReader) rawRead(p []byte) (int, error) {
	var n int
	var err error
	if len(p) > 0 {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, d.fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		n = int(r)
		if e != 0 {
			n, err = -1, e
		}
	}
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
