package relay

import (
	"os"
	"syscall"
)

// canWriteNB: a read loop's writes between frames do not block
// (sockWriter.writeNB).
const canWriteNB = true

// rawWriteFn is the raw write callback of sockWriter.rawWrite: it writes
// what the socket takes of rawP without waiting for room.
func (w *sockWriter) rawWriteFn(fd uintptr) bool {
	w.rawRan = true
	for w.rawN < len(w.rawP) {
		n, err := syscall.Write(int(fd), w.rawP[w.rawN:])
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
