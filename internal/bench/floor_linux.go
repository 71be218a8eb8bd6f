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
// buffer) and writes it to the peer at once. Nothing in it blocks: what a
// peer's socket does not take waits in that peer's pending bytes, and
// the side that sent them is not read again until they are written
// (back-pressure, as a relay's). An end read from one side is passed on
// to the other (shutdown for writing) once its pending bytes are out;
// the pair is closed when both sides ended or either failed.
type floorLoop struct {
	ep      int
	wake    [2]int // a pipe in the epoll set: close() writes to it
	mu      sync.Mutex
	conns   map[int32]*floorConn
	closed  bool // close() was called
	running bool // run() owns the descriptors
}

// floorConn is one side of a forwarded pair.
type floorConn struct {
	fd      int32
	peer    *floorConn
	pending []byte // read from peer, not yet written to fd
	eof     bool   // fd's sender ended: nothing more to read
	shut    bool   // fd shut down for writing (peer ended, pending written)
	events  uint32 // what fd is registered for (0: out of the set)
}

func newFloorLoop() (*floorLoop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &floorLoop{ep: ep, conns: map[int32]*floorConn{}}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(ep)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake[0])}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// release closes the loop's own descriptors (and its connections'): by
// run when it ends, or by close when run never started.
func (l *floorLoop) release() {
	for _, c := range l.conns {
		syscall.Close(int(c.fd))
	}
	clear(l.conns)
	syscall.Close(l.ep)
	syscall.Close(l.wake[0])
	syscall.Close(l.wake[1])
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
	ca, cb := &floorConn{fd: fa}, &floorConn{fd: fb}
	ca.peer, cb.peer = cb, ca
	l.conns[fa], l.conns[fb] = ca, cb
	for _, c := range []*floorConn{ca, cb} {
		if err := l.register(c); err != nil {
			l.drop(c, true)
			return err
		}
	}
	return nil
}

// want is what c waits for: reading while its sender has not ended and
// its peer has nothing pending (back-pressure); writing while it has.
func (c *floorConn) want() uint32 {
	var ev uint32
	if !c.eof && len(c.peer.pending) == 0 {
		ev |= syscall.EPOLLIN
	}
	if len(c.pending) > 0 {
		ev |= syscall.EPOLLOUT
	}
	return ev
}

// register brings c's registration in line with want. A descriptor that
// waits for nothing leaves the set: level-triggered, its hang-up would
// wake the loop for ever.
func (l *floorLoop) register(c *floorConn) error {
	ev := c.want()
	if ev == c.events {
		return nil
	}
	var err error
	switch {
	case ev == 0:
		err = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
	case c.events == 0:
		err = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, int(c.fd), &syscall.EpollEvent{Events: ev, Fd: c.fd})
	default:
		err = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_MOD, int(c.fd), &syscall.EpollEvent{Events: ev, Fd: c.fd})
	}
	if err == nil {
		c.events = ev
	}
	return err
}

// drop closes c's pair. After a failure (abort) both are reset rather
// than ended: bytes one side still held for the other are lost with the
// failed side, and a clean end would hide that (a shortened reply
// followed by EOF); a reset tells the client.
func (l *floorLoop) drop(c *floorConn, abort bool) {
	for _, x := range []*floorConn{c, c.peer} {
		if _, ok := l.conns[x.fd]; !ok {
			continue
		}
		if x.events != 0 {
			_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, int(x.fd), nil)
		}
		if abort {
			_ = syscall.SetsockoptLinger(int(x.fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
		}
		syscall.Close(int(x.fd))
		delete(l.conns, x.fd)
	}
}

// close stops run, which closes every descriptor; when run never
// started, close closes them itself.
func (l *floorLoop) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if !l.running {
		l.release()
		return
	}
	_, _ = syscall.Write(l.wake[1], []byte{1})
}

// run is the loop, on a thread of its own until close.
func (l *floorLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return // close released everything
	}
	l.running = true
	l.mu.Unlock()
	buf := make([]byte, floorBuf)
	evs := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(l.ep, evs, -1)
		if err == syscall.EINTR {
			continue
		}
		l.mu.Lock()
		if err != nil || l.closed {
			l.closed = true // add refuses from now on
			l.release()
			l.mu.Unlock()
			return
		}
		for _, ev := range evs[:n] {
			// A pair dropped earlier in this batch is gone from the map
			// (its descriptors closed, their numbers not yet reused:
			// only this loop, under l.mu, closes and adds them).
			if c, ok := l.conns[ev.Fd]; ok {
				l.handle(c, ev.Events, buf)
			}
		}
		l.mu.Unlock()
	}
}

// handle serves one readiness of c.
func (l *floorLoop) handle(c *floorConn, events uint32, buf []byte) {
	if events&syscall.EPOLLOUT != 0 || events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 && len(c.pending) > 0 {
		if !l.flush(c) {
			l.drop(c, true)
			return
		}
	}
	if c.want()&syscall.EPOLLIN != 0 && events&(syscall.EPOLLIN|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
		if !l.read(c, buf) {
			l.drop(c, true)
			return
		}
	}
	if c.eof && c.peer.eof && len(c.pending) == 0 && len(c.peer.pending) == 0 {
		l.drop(c, false) // both ends passed on
		return
	}
	for _, x := range []*floorConn{c, c.peer} {
		if err := l.register(x); err != nil {
			l.drop(c, true)
			return
		}
	}
}

// read reads what c has (again only while a read fills buf) and writes
// it to c's peer; what the peer does not take waits in its pending
// bytes. False when c failed or the peer did.
func (l *floorLoop) read(c *floorConn, buf []byte) bool {
	for len(c.peer.pending) == 0 {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(c.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		switch {
		case e == syscall.EAGAIN || e == syscall.EINTR:
			return true
		case e != 0:
			return false
		case r == 0: // c's sender ended: pass it on
			c.eof = true
			return l.shutPeer(c)
		}
		p := c.peer
		w, ok := writeSome(p.fd, buf[:r])
		if !ok {
			return false
		}
		if w < int(r) {
			p.pending = append(p.pending[:0], buf[w:r]...)
			return true
		}
		if int(r) < len(buf) {
			return true
		}
	}
	return true
}

// flush writes c's pending bytes; when they are out and c's peer ended,
// c is shut down for writing. False when c failed.
func (l *floorLoop) flush(c *floorConn) bool {
	w, ok := writeSome(c.fd, c.pending)
	if !ok {
		return false
	}
	c.pending = c.pending[:copy(c.pending, c.pending[w:])]
	if len(c.pending) == 0 && c.peer.eof {
		return l.shutPeer(c.peer)
	}
	return true
}

// shutPeer passes c's end on: c's peer is shut down for writing once it
// has nothing pending.
func (l *floorLoop) shutPeer(c *floorConn) bool {
	p := c.peer
	if p.shut || len(p.pending) > 0 {
		return true
	}
	p.shut = true
	return syscall.Shutdown(int(p.fd), syscall.SHUT_WR) == nil
}

// writeSome writes as much of b to the non-blocking fd as it takes now:
// the bytes written, false when fd failed.
func writeSome(fd int32, b []byte) (int, bool) {
	n := 0
	for n < len(b) {
		w, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
		switch {
		case e == syscall.EAGAIN:
			return n, true
		case e == syscall.EINTR:
			continue
		case e != 0:
			return n, false
		}
		n += int(w)
	}
	return n, true
}
