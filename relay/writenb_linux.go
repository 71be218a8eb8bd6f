package relay

import (
	"os"
	"syscall"
	"unsafe"
)

// canWriteNB: a read loop's writes between frames do not block
// (sockWriter.writeNB).
const canWriteNB = true

// rawWriteFn is the raw write callback of sockWriter.rawWrite: it writes
// what the socket takes of rawP without waiting for room.
//
// The socket is non-blocking (the poller's): the write never sleeps, so it
// is a raw syscall, without the runtime's entersyscall/exitsyscall around
// it, as rawRead's (readable_linux.go): no bookkeeping per write, and no
// sysmon retake of the P when a write outlasts a 20 µs tick (on loopback
// the receiver's softirq work runs inside the sender's write).
func (w *sockWriter) rawWriteFn(fd uintptr) bool {
	w.rawRan = true
	for w.rawN < len(w.rawP) {
		p := w.rawP[w.rawN:]
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		n, err := int(r), error(nil)
		if e != 0 {
			err = e
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // full: the rest is spilled, no wait
		case err != nil:
			w.rawErr = os.NewSyscallError("write", err)
			return true
		}
		w.rawN += n
	}
	return true
}
