package bench

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// floorLoop is one event loop of the epoll floor: it owns duplicates of
// its connections' descriptors, reads whatever is ready (level
// triggered: once per readiness, again only when the read filled the
// buffer) and writes it to the peer at once.
type floorLoop struct {
	ep     int
	wake   [2]int // a pipe in the epoll set: close() writes to it
	mu     sync.Mutex
	peer   map[int32]int32
	closed bool
}

func newFloorLoop() (*floorLoop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &floorLoop{ep: ep, peer: map[int32]int32{}}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(ep)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake[0])}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		syscall.Close(ep)
		syscall.Close(l.wake[0])
		syscall.Close(l.wake[1])
		return nil, err
	}
	return l, nil
}

// dupFD is a non-blocking duplicate of c's descriptor.
func dupFD(c net.Conn) (int32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = dupCloexec(int(s))
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return int32(fd), nil
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// add takes duplicates of a's and b's descriptors (the caller closes its
// own) and forwards between them.
func (l *floorLoop) add(a, b net.Conn) error {
	fa, err := dupFD(a)
	if err != nil {
		return err
	}
	fb, err := dupFD(b)
	if err != nil {
		syscall.Close(int(fa))
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		syscall.Close(int(fa))
		syscall.Close(int(fb))
		return errors.New("stopping")
	}
	l.peer[fa], l.peer[fb] = fb, fa
	for _, fd := range []int32{fa, fb} {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: fd}
		if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			l.dropLocked(fa)
			return err
		}
	}
	return nil
}

// dropLocked closes fd and its peer.
func (l *floorLoop) dropLocked(fd int32) {
	p, ok := l.peer[fd]
	if !ok {
		return
	}
	for _, x := range []int32{fd, p} {
		_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, int(x), nil)
		syscall.Close(int(x))
		delete(l.peer, x)
	}
}

// close stops run, which closes every descriptor.
func (l *floorLoop) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	_, _ = syscall.Write(l.wake[1], []byte{1})
}

// run is the loop, on a thread of its own until close.
func (l *floorLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, floorBuf)
	evs := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(l.ep, evs, -1)
		if err == syscall.EINTR {
			continue
		}
		l.mu.Lock()
		if err != nil || l.closed {
			for fd := range l.peer {
				l.dropLocked(fd)
			}
			l.mu.Unlock()
			syscall.Close(l.ep)
			syscall.Close(l.wake[0])
			syscall.Close(l.wake[1])
			return
		}
		for _, ev := range evs[:n] {
			if peer, ok := l.peer[ev.Fd]; ok && !l.forward(ev.Fd, peer, buf) {
				l.dropLocked(ev.Fd)
			}
		}
		l.mu.Unlock()
	}
}

// forward reads what fd has (again only while a read fills buf) and
// writes it to peer; false when either side ended or failed.
func (l *floorLoop) forward(fd, peer int32, buf []byte) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		switch {
		case e == syscall.EAGAIN || e == syscall.EINTR:
			return true
		case e != 0 || r == 0:
			return false
		}
		if !writeAll(peer, buf[:r]) {
			return false
		}
		if int(r) < len(buf) {
			return true
		}
	}
}

// writeAll writes p to the non-blocking fd, waiting in poll(2) while its
// send buffer is full (the loop waits with it: a floor, not a relay).
func writeAll(fd int32, p []byte) bool {
	for len(p) > 0 {
		w, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case e == syscall.EAGAIN:
			pfd := [1]struct {
				fd             int32
				events, revent int16
			}{{fd: fd, events: 0x4}} // POLLOUT
			if _, _, e := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 1000); e != 0 && e != syscall.EINTR {
				return false
			}
			continue
		case e == syscall.EINTR:
			continue
		case e != 0:
			return false
		}
		p = p[w:]
	}
	return true
}
