package relay

import (
	"syscall"
	"unsafe"
)

// canWaitReadable: idle TCP connections wait for their next frame without
// a read buffer (conn.waitFrame).
const canWaitReadable = true

// readable is the raw read callback of waitFrame: true when a byte (or an
// end of stream, or an error) is there to read, peeked without taking it;
// false makes the poller wait for readability.
func (c *conn) readable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EINTR
}
