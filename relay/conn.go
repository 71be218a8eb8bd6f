package relay

import (
	"bufio"
	"bytes"
	"errors"
	"github.com/msrpscope/msrpscope/tracer/event"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

const connBufSize = 32 << 10

// readBufSize is the read side's buffer: a large body is read (and written
// on) in pieces of up to this much, about one read per 64 KiB chunk, not
// two (halves the reads of 10 MB transfers against 32 KiB). It is held
// only while a frame is read (an idle connection returns it: waitFrame).
const readBufSize = 64 << 10

// conn is one MSRP connection, accepted or dialled. Its read loop (one
// goroutine, owned by the Relay) reads and handles frames; frames that
// other connections forward into it are streamed by their read loops under
// wmu; small frames the relay makes (responses, REPORTs) go through the
// bounded ctrl queue to its writer goroutine.
type conn struct {
	r    *Relay
	info event.ConnInfo
	nc   net.Conn
	key  string   // outbound pool key, "" for an accepted connection
	uri  msrp.URI // our URI on this connection (listener URI; for dialled ones the first own URI of its scheme)

	dr    deadlineReader
	rs    *readSide // nil while an idle TCP connection waits (readPool)
	br    *bufio.Reader
	rd    *msrp.Reader
	raw   syscall.RawConn // plain TCP: waits for readability without a buffer
	lastF *msrp.Frame     // the last frame read: its body must be done before rs goes back

	rawReady func(uintptr) bool
	waitErr  error // the end of the stream or an error readable met

	wmu     sync.Mutex   // held while one frame is written
	writers atomic.Int32 // forwards writing or waiting to write a frame into c: c is busy
	cw      sockWriter
	ws      *writeSide // held while a frame is written, or frames wait in it (writePool)
	// Small frames the relay made wait in ws (written inline, enqueue): a
	// peer that does not take them within send_timeout counts as a write
	// queue that did not drain (Stats.QueueFull; so does a spill that
	// does not drain, conn.drain). Guarded by wmu.
	ctrlBuffered bool

	// The write queue and its writer goroutine start with the first frame
	// queued (an idle connection that never got one has neither).
	ctrl     atomic.Pointer[chan *outFrame]
	queued   atomic.Int32 // frames queued and not yet written: a frame written inline must not pass them
	wmuStart sync.Mutex
	wshut    bool          // run stopped new writers; guarded by wmuStart
	wdone    chan struct{} // closed when the writer ends; nil: none started
	kick     chan struct{} // wakes the writer to drain (kickWriter); made with the queue
	done     chan struct{}

	// addrs: the addresses of a dialled connection, known once its
	// connect completes (info, read without a lock, is set before).
	addrs         atomic.Pointer[[2]netip.AddrPort]
	connectFailed atomic.Bool // never connected: ConnectFailed, not Closed, says so

	closeOnce sync.Once
	queueFull atomic.Bool // counted in Stats.QueueFull
	closed    atomic.Bool
	reason    event.CloseReason
	closeErr  error

	phaseMu     sync.Mutex
	idle        bool // waiting for the next frame (shutdown may interrupt)
	interrupted bool // a shutdown set the read deadline to now while idle: deadlineReader.apply leaves it

	// Graceful shutdown (Relay.shutdown): c is busy while its read loop
	// runs, a frame is written to it (writers), a response is awaited on
	// it (pendingOut) or may have to go back to it (pendingIn).
	readEnded  atomic.Bool
	closing    atomic.Bool // the shutdown queued its close
	pendingOut atomic.Int32
	pendingIn  atomic.Int32

	created    time.Time
	tlsSubject atomic.Pointer[string] // the TLS peer's certificate subject, once known

	requestOK atomic.Bool  // a request succeeded: probation over (RFC 4976 §6.1)
	authFails atomic.Int32 // failed AUTHs since the last success
	// Failed AUTHs that came through another relay, by user and by client
	// (authreq.go); the read loop's own.
	relayedAuthFails map[string]int

	// The read loop's own state (frames read from c, and forwarded by it).
	bigBody   bool            // the last body forwarded was large: read with a large read side (largeread.go)
	inFrame   bool            // the frame being read is counted in Relay.framing (frameDone)
	inStart   time.Time       // when the first byte of the frame being read arrived
	inPaired  time.Time       // the frame being read: event.FrameInfo.Paired (a response: its request's sent time)
	inAnswers string          // the frame being read: event.FrameInfo.Answers (a response: its request's method)
	inReads   uint32          // c.dr.reads then: more reads since, the frame did not come in one
	inCap     []byte          // frame-in capture for the Observer
	capturing bool            // the frame being read is reported to the Observer
	wireIn    bool            // and its wire bytes copied (the Observer's Wire())
	inEv      event.Event     // scratch for frame-in events
	inFI      event.FrameInfo //
	tidBuf    [msrp.TransactIDLen]byte
	hdrBuf    []byte          // header lines of the frame being forwarded
	fwdCap    []byte          // capture of the frame being forwarded, lent to the destination's captureWriter
	fwdSize   int64           //
	fwdEv     event.Event     // scratch for events of forwarded frames
	fwdFI     event.FrameInfo //
	rspCap    []byte          // capture of a small frame written inline (enqueue)
	rspEv     event.Event     // scratch for its event
	rspFI     event.FrameInfo //

	// Write batching (the read loop's own; see flushDirty): the
	// connections this read loop wrote frames into and left in their
	// buffers, flushed before it can block; holding is the one whose wmu
	// it holds (writeForward), flushing guards against re-entry.
	dirty    []*conn
	holding  *conn
	flushing bool

	// The writer goroutine's own state (queued frames written to c).
	wCap  []byte // capture of the queued frame being written, lent to cw
	outEv event.Event
	outFI event.FrameInfo

	// The read loop's own: To-Path URIs parsed for its last frames
	// (route.go).
	uris uriCaches
}

// outFrame is a small frame made by the relay, queued for a writer goroutine.
type outFrame struct {
	buf []byte
	// A frame with a closeReason carries nothing: the writer closes the
	// connection when it reaches it, after the frames queued before.
	closeReason event.CloseReason
	closeErr    error
	method      string
	answers     string // a response's request method (event.FrameInfo.Answers), "" when unknown
	status      int
	messageID   []byte // a copy: the transaction it came from may be recycled before the frame is written
	fromSession string // event.FrameInfo's sessions
	toSession   string
}

// outFrameFree recycles queued frames: at most 1024 kept, each up to 64 KiB
// (release drops larger ones).
var outFrameFree = freeList[outFrame]{max: 1024, new: func() *outFrame { return &outFrame{buf: make([]byte, 0, 512)} }}

func newOutFrame() *outFrame {
	f := outFrameFree.get()
	f.buf = f.buf[:0]
	f.method, f.answers, f.status, f.messageID, f.fromSession, f.toSession = "", "", 0, f.messageID[:0], "", ""
	f.closeReason, f.closeErr = 0, nil
	return f
}

func (f *outFrame) release() {
	if cap(f.buf) <= 64<<10 {
		outFrameFree.put(f)
	}
}

// deadlineReader sets a read deadline before every Read when perRead is
// set (body phase: a stall is what times out, and the body as a whole must
// keep up with minRate bytes/s after the first perRead, and end by until
// when set); otherwise the deadline set by the read loop for the whole
// phase stands.
type deadlineReader struct {
	nc      net.Conn
	perRead time.Duration
	start   time.Time    // body phase: when it began
	n       int64        // body phase: bytes read since start
	reads   uint32       // socket reads (not the readability wait's)
	minRate int64        // bytes/s; 0: no floor
	until   time.Time    // a total limit (first_request_timeout); zero: none
	abort   *atomic.Bool // the relay's shutdown grace is over: frames in flight end
	c       *conn        // whose read loop reads: its unflushed writes go out before a read may block
	// The read deadline the read loop wants (idle, header phase) and the
	// one set on the socket: it is set only when a read from the socket
	// (or a readability wait) comes, so a burst of frames already
	// buffered costs no deadline call per frame.
	want, set time.Time
	// raw: the read loop's readability callback reads (waitFrame): Read
	// goes straight to descriptor fd.
	raw bool
	fd  uintptr
	// pend: bytes read already, served before the socket (a read side
	// that replaces another takes over its buffered bytes: resizeReadSide).
	pend []byte
}

// apply sets the wanted read deadline on the socket if it is not set yet,
// unless a shutdown interrupted the wait (interruptIdle): its deadline
// stands.
func (d *deadlineReader) apply() {
	if d.want == d.set {
		return
	}
	c := d.c
	c.phaseMu.Lock()
	if !c.interrupted {
		_ = d.nc.SetReadDeadline(d.want)
	}
	c.phaseMu.Unlock()
	d.set = d.want
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if len(d.pend) > 0 {
		n := copy(p, d.pend)
		d.pend = d.pend[n:]
		return n, nil
	}
	if d.abort.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	if d.raw {
		return d.rawRead(p) // waitFrame flushed and applied the deadline before its wait
	}
	if c := d.c; len(c.dirty) > 0 || c.holding != nil {
		c.flushBeforeRead()
	}
	if d.perRead > 0 {
		dl := time.Now().Add(d.perRead)
		if d.minRate > 0 {
			allowed := time.Duration(d.n/d.minRate)*time.Second + time.Duration(d.n%d.minRate)*time.Second/time.Duration(d.minRate)
			if t := d.start.Add(d.perRead + allowed); t.Before(dl) {
				dl = t
			}
		}
		if !d.until.IsZero() && d.until.Before(dl) {
			dl = d.until
		}
		d.want = dl
	}
	d.apply()
	d.reads++
	n, err := d.nc.Read(p)
	d.n += int64(n)
	return n, err
}

// body starts the body phase of a frame at now.
func (d *deadlineReader) body(lim *Limits, until, now time.Time) {
	d.perRead, d.start, d.n, d.minRate, d.until = lim.BodyTimeout, now, 0, int64(lim.BodyMinRate), until
}

// sockWriter writes a connection's buffer out to its socket. A write by
// the connection's writer goroutine, or by a read loop in the middle of a
// frame it streams into the connection, blocks under a send timeout
// (progress, not total time): a read loop holding the connection's write
// lock (by, set under wmu) first flushes what it left in other
// connections' buffers, so that they do not wait behind this peer.
//
// A read loop's write between frames (nb: the end of a frame, a small
// frame of its own, a flush of a buffer it left behind; not the end of a
// frame whose body went out in part already) never blocks on a plain TCP
// socket: what the socket does not take at once is spilled, up
// to spillMax, and the connection's writer goroutine writes it out
// (blocking, under the send timeout: a peer that does not take it is
// closed, counted in Stats.QueueFull). So a peer that stops reading stalls
// its own writer goroutine, not the read loops that serve other peers.
// Everything written later goes out after the spill.
type sockWriter struct {
	nc      net.Conn
	timeout time.Duration
	self    *conn
	by      *conn // the read loop writing into self under its wmu; nil: none
	nb      bool  // set by flushOut for a read loop's flush between frames

	// Non-blocking writes straight to the descriptor (plain TCP; a
	// dialled connection's once connected). rawFn, rawP, rawN, rawErr,
	// rawRan: the callback's (one method value per connection).
	raw      syscall.RawConn
	rawTried bool
	rawFn    func(uintptr) bool
	rawP     []byte
	rawN     int
	rawErr   error
	rawRan   bool

	// spill: bytes a write between frames left, to go out before anything
	// written after them; the writer goroutine writes them (conn.drain),
	// taken out from under wmu. drainCh is open while it does: what is
	// written meanwhile joins the spill (a write that must block waits for
	// drainCh first, awaitDrain). collect: drain takes the buffer into the
	// spill.
	spill   []byte
	drainCh chan struct{}
	collect bool
	// streamed: the frame a read loop is writing went to the socket in
	// part already (a body larger than the buffer): its end is written
	// blocking as its body was (its source is paced by this peer anyway;
	// a large transfer takes no spill and hand-off per chunk).
	streamed bool
}

// spillMax bounds what a connection's spill holds: beyond it, a write
// between frames blocks under the send timeout (TCP back-pressure on the
// forwarding read loop, as for a body streamed into a slow peer). Small
// frames of the relay's own never reach it (conn.enqueue queues them once
// something is spilled).
const spillMax = 64 << 10

func (w *sockWriter) Write(p []byte) (int, error) {
	if w.collect {
		w.spill = append(w.spill, p...)
		return len(p), nil
	}
	nb := w.nb
	if w.by != nil && !nb {
		if w.self.ws != nil && w.self.ws.mw.Idle() {
			nb = !w.streamed // the end of a frame: the rest of one that went out in part already follows as it did
			w.streamed = false
		} else {
			w.streamed = true // within a frame: TCP back-pressure
		}
	}
	if nb {
		if raw := w.rawConn(); raw != nil && len(w.spill)+len(p) <= spillMax {
			return w.writeNB(raw, p)
		}
	}
	if by := w.by; by != nil && len(by.dirty) > 0 {
		by.flushDirty(w.self)
	}
	if err := w.awaitDrain(); err != nil {
		return 0, err
	}
	_ = w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	if len(w.spill) > 0 {
		if _, err := w.nc.Write(w.spill); err != nil {
			return 0, err
		}
		w.spill = nil
	}
	return w.nc.Write(p)
}

// writeNB writes p without blocking: the spill first, what the socket
// does not take is spilled (the writer goroutine is woken to write it).
func (w *sockWriter) writeNB(raw syscall.RawConn, p []byte) (int, error) {
	if ch := w.drainCh; ch != nil {
		select {
		case <-ch:
			w.drainCh = nil
		default:
			w.spill = append(w.spill, p...) // behind what the writer goroutine is writing: it takes this next
			return len(p), nil
		}
	}
	if len(w.spill) > 0 {
		n, err := w.rawWrite(raw, w.spill)
		if err != nil {
			return 0, err
		}
		if n < len(w.spill) {
			w.spill = append(w.spill[:copy(w.spill, w.spill[n:])], p...)
			return len(p), nil // the writer goroutine was woken when the spill began
		}
		w.spill = nil
	}
	n, err := w.rawWrite(raw, p)
	if err != nil {
		return n, err
	}
	if n < len(p) {
		w.spill = append(w.spill, p[n:]...) // only when the peer's socket is full
		w.self.kickWriter()
	}
	return len(p), nil
}

// rawConn returns the descriptor for non-blocking writes, nil when there
// is none (TLS; a dialled connection still connecting, whose Write
// buffers without blocking).
func (w *sockWriter) rawConn() syscall.RawConn {
	if w.raw != nil || w.rawTried {
		return w.raw
	}
	nc := w.nc
	if d, ok := nc.(*dialingConn); ok {
		if !d.ready.Load() {
			return nil
		}
		if d.err != nil {
			w.rawTried = true
			return nil
		}
		nc = d.nc
	}
	w.rawTried = true
	if tc, ok := nc.(*net.TCPConn); ok && canWriteNB {
		if raw, err := tc.SyscallConn(); err == nil {
			w.raw = raw
			w.rawFn = w.rawWriteFn
		}
	}
	return w.raw
}

// rawWrite writes what the socket takes of p now.
func (w *sockWriter) rawWrite(raw syscall.RawConn, p []byte) (int, error) {
	w.rawP, w.rawN, w.rawErr, w.rawRan = p, 0, nil, false
	err := raw.Write(w.rawFn)
	if err != nil && !w.rawRan && errors.Is(err, os.ErrDeadlineExceeded) {
		// The expired deadline of an earlier blocking write: cleared.
		_ = w.nc.SetWriteDeadline(time.Time{})
		err = raw.Write(w.rawFn)
	}
	w.rawP = nil
	if err == nil {
		err = w.rawErr
	}
	return w.rawN, err
}

// awaitDrain waits, under wmu, until the writer goroutine has written
// the spill it took out (drain): nothing may pass it. Bounded by that
// write's send timeout.
func (w *sockWriter) awaitDrain() error {
	if ch := w.drainCh; ch != nil {
		select {
		case <-ch:
		case <-w.self.done:
			return net.ErrClosed
		}
		w.drainCh = nil
	}
	return nil
}

// writeSpill writes the spill out, blocking under the send timeout (the
// writer goroutine's, under wmu).
func (w *sockWriter) writeSpill() error {
	if len(w.spill) == 0 {
		return nil
	}
	_ = w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.nc.Write(w.spill)
	w.spill = nil
	return err
}

func newConn(r *Relay, nc net.Conn, dir event.Direction, transport string) *conn {
	c := &conn{
		r:       r,
		nc:      nc,
		done:    make(chan struct{}),
		created: time.Now(),
	}
	c.info = event.ConnInfo{
		ID:        r.newConnID(),
		Transport: transport,
		Local:     addrPort(nc.LocalAddr()),
		Remote:    addrPort(nc.RemoteAddr()),
		Dir:       dir,
	}
	c.setNetConn(nc)
	return c
}

// setAddrs records a dialled connection's addresses once connected.
func (c *conn) setAddrs(local, remote netip.AddrPort) {
	c.addrs.Store(&[2]netip.AddrPort{local, remote})
}

// connInfo is c.info with the addresses known so far.
func (c *conn) connInfo() event.ConnInfo {
	ci := c.info
	if a := c.addrs.Load(); a != nil {
		ci.Local, ci.Remote = a[0], a[1]
	}
	return ci
}

// setNetConn (re)builds the I/O stack over nc (after a TLS handshake).
// The buffers come from pools when needed (issue 14 defect 7: an idle
// connection holds none): the write side for each frame written, the read
// side while a frame is read; a TLS connection keeps its read side once it
// has one (TLS may hold decrypted bytes the socket's readability would not
// show).
func (c *conn) setNetConn(nc net.Conn) {
	c.nc = nc
	c.dr = deadlineReader{nc: nc, abort: &c.r.aborting, c: c}
	c.cw = sockWriter{nc: nc, timeout: c.r.limits().SendTimeout, self: c}
	c.raw = nil
	if tc, ok := nc.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			if canWaitReadable {
				c.raw = raw
				c.rawReady = c.readable // one method value per connection, not one per wait
			}
		}
	}
}

// readSide is a connection's frame reader and its buffer, pooled.
type readSide struct {
	br  *bufio.Reader
	rd  *msrp.Reader
	lim msrp.Limits
	big bool // largeReadBufSize, not readBufSize
}

// writeSide is a connection's frame writer and its buffer, pooled.
type writeSide struct {
	bw *bufio.Writer
	mw *msrp.Writer
}

var readPool, writePool sync.Pool

// getReadSide gives c a read side (the read loop's).
func (c *conn) getReadSide() {
	lim := c.r.limits()
	want := msrp.Limits{MaxHeaderBytes: lim.MaxHeaderBytes, MaxHeaders: lim.MaxHeaders}
	pool, size := readSidePool(c.bigBody)
	rs, _ := pool.Get().(*readSide)
	if rs == nil || rs.lim != want {
		br := bufio.NewReaderSize(nil, size)
		rs = &readSide{br: br, rd: msrp.NewReader(br, want), lim: want, big: c.bigBody}
	}
	rs.br.Reset(&c.dr)
	c.rs, c.br, c.rd, c.lastF = rs, rs.br, rs.rd, nil
}

// putReadSide returns c's read side to the pool when it holds nothing of
// c's: no byte buffered, the last frame's body read to its end-line.
func (c *conn) putReadSide() {
	if c.br.Buffered() > 0 || c.lastF != nil && !c.lastF.Body().Done() {
		return
	}
	c.br.Reset(nil)
	pool, _ := readSidePool(c.rs.big)
	pool.Put(c.rs)
	c.rs, c.br, c.rd, c.lastF = nil, nil, nil, nil
}

// waitFrame waits for the first byte of the next frame under the read
// deadline set; an idle plain TCP connection waits without a buffer.
func (c *conn) waitFrame() error {
	if c.rs != nil && c.raw != nil {
		c.putReadSide()
	}
	if c.rs != nil && c.rs.big != c.bigBody {
		c.resizeReadSide()
	}
	if c.rs == nil {
		if c.raw != nil {
			c.flushDirty(nil) // nothing buffered to read: this wait may block
			c.dr.apply()
			// Wait for readability (the poller honours the read deadline);
			// readable reads what is there into a read side it takes.
			if err := c.raw.Read(c.rawReady); err != nil {
				return err
			}
			if err := c.waitErr; err != nil {
				c.waitErr = nil
				return err
			}
		} else {
			c.getReadSide()
		}
	}
	_, err := c.br.Peek(1)
	return err
}

// writer gives the frame being written under wmu a write side.
func (c *conn) writer() *writeSide {
	if c.ws == nil {
		ws, _ := writePool.Get().(*writeSide)
		if ws == nil {
			bw := bufio.NewWriterSize(nil, connBufSize)
			ws = &writeSide{bw: bw, mw: msrp.NewWriter(bw)}
		}
		ws.bw.Reset(&c.cw)
		c.ws = ws
	}
	return c.ws
}

// releaseWriter returns the write side after a frame, under wmu; what it
// still buffered is dropped (flush first).
func (c *conn) releaseWriter() {
	c.ctrlBuffered, c.cw.streamed = false, false
	if ws := c.ws; ws != nil {
		c.ws = nil
		// A frame that broke off (write error) leaves the writer in its
		// body: end it into nothing, so the next user starts idle.
		ws.bw.Reset(io.Discard)
		_ = ws.mw.End(msrp.FlagAbort)
		ws.bw.Reset(nil)
		writePool.Put(ws)
	}
}

// Write batching. A frame written into a connection's buffer is flushed
// at once unless its writer knows more frames will follow without waiting:
// a read loop whose read buffer holds more input (the next frame is
// already here), or the writer goroutine with more frames queued. A read
// loop that leaves a buffer unflushed adopts it (dirty) and flushes it
// before it can block: before a read from its socket (deadlineReader),
// before waiting for readability (waitFrame), before waiting for another
// connection's write lock (writeForward) or socket (sockWriter) or for
// room in a queue (enqueue), and when its loop ends. So a burst of frames
// read with one read goes out with one write per destination, and nothing
// waits in a buffer while its writer waits for something else. Several
// read loops may write into one destination: the bytes go out in the
// order they were buffered, under its wmu. A flush of another's buffer
// takes its wmu with TryLock only, never waiting (one write lock held at
// a time stays true for waits): when it is held, the holder flushes it or
// adopts it before releasing, so it is never left behind. The buffer
// bounds what waits (connBufSize; a fuller one writes out, blocking as
// before: back-pressure).

// adopt records that c's read loop left frames in d's buffer (under d.wmu).
func (c *conn) adopt(d *conn) {
	d.cw.streamed = false // the frame ended
	for _, x := range c.dirty {
		if x == d {
			return
		}
	}
	c.dirty = append(c.dirty, d)
}

// moreInput reports whether c's read loop has input buffered: its next
// frame (or part of it) is here, read without waiting.
func (c *conn) moreInput() bool { return c.br != nil && c.br.Buffered() > 0 }

// flushDirty flushes what c's read loop left in other connections'
// buffers, except skip (being written by c right now, in its wmu). No
// flush blocks (flushOut, sockWriter.writeNB): a destination whose peer
// has no room for its frames does not delay the next destination's in
// the same burst.
func (c *conn) flushDirty(skip *conn) {
	if c.flushing || len(c.dirty) == 0 {
		return
	}
	c.flushing = true
	for i, d := range c.dirty {
		c.dirty[i] = nil
		if d != skip {
			d.flushOut(d == c.holding, true)
		}
	}
	c.dirty = c.dirty[:0]
	c.flushing = false
}

// flushBeforeRead runs before c's read loop reads its socket: its dirty
// connections are flushed, and so is the destination it writes a frame
// into (holding), up to the part of that frame written so far, so the
// frames before it do not wait for the rest of its body. The others
// first: the holder's flush is in the middle of a frame and may block (a
// peer that does not read: TCP back-pressure, as for the rest of the
// body) for up to send_timeout; frames to other peers must not wait
// behind it.
func (c *conn) flushBeforeRead() {
	h := c.holding
	c.flushDirty(h)
	if h != nil && !c.flushing {
		c.flushing = true
		h.flushOut(true, false)
		c.flushing = false
	}
}

// flushOut writes out what c's buffer holds; locked: the caller holds
// c.wmu (in the middle of a frame: the write side stays), otherwise it is
// taken with TryLock (a holder flushes or adopts before it releases) and
// the write side goes back to its pool. nb: a read loop's flush between
// frames, which must not block: what the socket does not take is spilled
// for c's writer goroutine; when the spill is full already, the buffer is
// left to that goroutine, woken for it.
func (c *conn) flushOut(locked, nb bool) {
	if !locked {
		if !c.wmu.TryLock() {
			return
		}
		defer c.wmu.Unlock()
	}
	ws := c.ws
	if ws == nil {
		return
	}
	if ws.bw.Buffered() > 0 && !c.isClosed() {
		if nb && len(c.cw.spill)+ws.bw.Buffered() > spillMax {
			c.kickWriter() // drain writes the spill and this buffer out
			return
		}
		// Held: the error sticks in the buffer and comes back to the
		// frame's writer, who closes c when its frame ends (forward).
		c.cw.nb = nb
		err := ws.bw.Flush()
		c.cw.nb = false
		if err != nil && !locked {
			if c.ctrlBuffered && errors.Is(err, os.ErrDeadlineExceeded) {
				c.countQueueFull()
			}
			c.close(writeCloseReason(err), err)
		}
	}
	c.ctrlBuffered = false
	if !locked {
		c.releaseWriter()
	}
}

func (c *conn) isClosed() bool { return c.closed.Load() }

// close closes the connection once, recording why.
func (c *conn) close(reason event.CloseReason, err error) {
	if c.markClosed(reason, err) {
		_ = c.nc.Close()
	}
}

// markClosed marks c closed once, recording why; it reports whether this
// call did, and then the caller closes the socket.
func (c *conn) markClosed(reason event.CloseReason, err error) (first bool) {
	c.closeOnce.Do(func() {
		c.reason, c.closeErr = reason, err
		c.closed.Store(true)
		close(c.done)
		first = true
	})
	return first
}

// closeLinger bounds how long a graceful close reads what the peer still
// sends after our last frame.
const closeLinger = 2 * time.Second

// closeGracefully ends the socket of a connection closed after its last
// frame: the write side first (FIN after everything written), then what
// the peer still sends is read and dropped until it closes too or
// closeLinger passes. Closing with unread data would reset the connection
// and could discard frames not yet delivered (a kernel drops its send
// buffer on a reset).
func (c *conn) closeGracefully() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(closeLinger))
		var buf [512]byte
		for {
			if _, err := c.nc.Read(buf[:]); err != nil {
				break
			}
		}
	}
	_ = c.nc.Close()
}

// enqueue hands a small frame to the writer goroutine. A full queue
// applies back-pressure to c's own read loop (its responses; issue 14
// defect 1): it waits for room, so it stops reading c's requests until
// c's peer has read what is queued; the writer's send timeout bounds it
// (a peer that does not read is closed). Another connection's read loop
// (a response or REPORT it routes to c) does not wait: it serves other
// peers, and a peer that does not read costs only itself: c is closed at
// once, counted in Stats.QueueFull. Any other goroutine waits at most
// send_timeout; a queue that did not drain for that long closes c,
// counted in Stats.QueueFull.
//
// by is the read loop calling (nil: another goroutine). A read loop writes
// the frame itself, into c's buffer (write batching, flushDirty), when
// nothing is queued or spilled before it and c's write lock is free: no
// hand-off to the writer goroutine, and no wait (sockWriter.writeNB). A
// close (closeReason) always goes through the queue.
func (c *conn) enqueue(f *outFrame, by *conn) {
	if c.isClosed() {
		f.release()
		return
	}
	if by != nil && f.closeReason == 0 && c.queued.Load() == 0 && c.wmu.TryLock() {
		if len(c.cw.spill) == 0 && c.cw.drainCh == nil {
			by.writeInline(c, f)
			return
		}
		c.wmu.Unlock() // c's peer is behind: the frame waits in the queue, after what is spilled
	}
	q := c.queue()
	if q == nil {
		f.release() // closing: run stopped the writer
		return
	}
	c.queued.Add(1)
	select {
	case q <- f:
		return
	default:
	}
	if by != nil {
		by.flushDirty(nil) // before waiting
		if by != c {
			// Another connection's read loop serves other peers: it does
			// not wait for c's. A peer that left write_queue frames
			// unread is closed.
			c.queued.Add(-1)
			f.release()
			c.countQueueFull()
			c.close(event.CloseLimit, errors.New("write queue full: the peer does not read"))
			return
		}
	}
	t := time.NewTimer(c.r.limits().SendTimeout)
	defer t.Stop()
	select {
	case q <- f:
	case <-c.done:
		c.queued.Add(-1)
		f.release()
		c.countQueueFull()
	case <-t.C:
		c.queued.Add(-1)
		f.release()
		c.countQueueFull()
		c.close(event.CloseLimit, errors.New("write queue not drained within send_timeout"))
	}
}

// writeInline writes the small frame f into dst's buffer for c's read
// loop, which holds dst.wmu (taken by enqueue) and adopts dst when more
// input follows; it reports the frame to the Observer after unlocking.
func (c *conn) writeInline(dst *conn, f *outFrame) {
	defer f.release()
	if dst.isClosed() {
		dst.wmu.Unlock()
		return
	}
	obs := c.r.tracing()
	var sent time.Time
	if obs {
		sent = time.Now()
		if c.r.wire() {
			c.rspCap = append(c.rspCap[:0], f.buf[:min(len(f.buf), c.r.captureBytes)]...)
		} else {
			c.rspCap = c.rspCap[:0]
		}
	}
	dst.cw.by = c
	ws := dst.writer()
	_, err := ws.bw.Write(f.buf)
	if err == nil && !c.moreInput() {
		err = ws.bw.Flush()
	}
	dst.cw.by = nil
	switch {
	case err != nil:
		dst.releaseWriter()
	case ws.bw.Buffered() > 0:
		dst.ctrlBuffered = true
		c.adopt(dst)
	default:
		dst.releaseWriter()
	}
	dst.wmu.Unlock()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The peer did not take its responses for send_timeout: as a
			// write queue that did not drain (limits.write_queue).
			dst.countQueueFull()
		}
		dst.close(writeCloseReason(err), err)
		return
	}
	if obs {
		c.rspFI = event.FrameInfo{}
		dst.observeOut(f, sent, c.rspCap, c.r.wire(), &c.rspEv, &c.rspFI)
	}
}

// observeOut reports a small frame the relay wrote to c (ev and fi: the
// writer's scratch).
func (c *conn) observeOut(f *outFrame, sent time.Time, capd []byte, wire bool, ev *event.Event, fi *event.FrameInfo) {
	tid := f.buf[5:]
	tid = tid[:max(0, bytes.IndexByte(tid, ' '))]
	*fi = event.FrameInfo{Dir: event.DirOut, TransactID: tid, Status: f.status, MessageID: f.messageID,
		FromSession: f.fromSession, ToSession: f.toSession, Flag: msrp.FlagEnd, Size: int64(len(f.buf)), Wire: capd,
		Answers: f.answers}
	if !wire {
		fi.Wire = nil
	}
	if f.method != "" {
		fi.Method = []byte(f.method)
	}
	*ev = event.Event{Kind: event.FrameOut, Time: sent, Conn: c.connInfo(), Frame: fi}
	c.r.obs.Observe(ev)
}

// countQueueFull counts c once in Stats.QueueFull: it closed while frames
// waited for room in its queue.
func (c *conn) countQueueFull() {
	if c.queueFull.CompareAndSwap(false, true) {
		c.r.stats.queueFull.Add(1)
		c.r.logLimit(c, limitWriteQueue, slog.String("event", "queue_full"), slog.String("reason", event.CloseLimit.String()))
	}
}

// queue returns c's write queue, starting it and its writer goroutine on
// first use; nil once run has stopped writers (c closed).
func (c *conn) queue() chan *outFrame {
	if q := c.ctrl.Load(); q != nil {
		return *q
	}
	c.wmuStart.Lock()
	defer c.wmuStart.Unlock()
	if q := c.ctrl.Load(); q != nil {
		return *q
	}
	if c.wshut {
		return nil
	}
	q := make(chan *outFrame, c.r.limits().WriteQueue)
	c.kick = make(chan struct{}, 1)
	c.ctrl.Store(&q)
	c.wdone = make(chan struct{})
	go func() {
		defer close(c.wdone)
		defer c.r.recoverConn(c, "writer")
		c.writeLoop(q)
	}()
	return q
}

// queueRoom reports whether a frame can be queued for c without waiting.
func (c *conn) queueRoom() bool {
	q := c.ctrl.Load()
	return q == nil || len(*q) < cap(*q)
}

// queueDepth is the number of frames waiting in c's queue.
func (c *conn) queueDepth() int {
	if q := c.ctrl.Load(); q != nil {
		return len(*q)
	}
	return 0
}

// stopWriter keeps writers from starting and waits for the one running,
// if any (it ends when c closes).
func (c *conn) stopWriter() {
	c.wmuStart.Lock()
	c.wshut = true
	wdone := c.wdone
	c.wmuStart.Unlock()
	if wdone != nil {
		<-wdone
	}
}

// writeLoop writes queued frames until the connection closes.
func (c *conn) writeLoop(q chan *outFrame) {
	for {
		select {
		case f := <-q:
			c.writeQueued(f, len(q) > 0)
		case <-c.kick:
			c.drain()
		case <-c.done:
			return
		}
	}
}

// kickWriter wakes c's writer goroutine (starting it) to write out what a
// read loop's write between frames left (drain); under c.wmu.
func (c *conn) kickWriter() {
	if c.queue() == nil {
		return // closing: run stopped the writer
	}
	select {
	case c.kick <- struct{}{}:
	default: // woken already
	}
}

// drain writes out, for the writer goroutine, what writes between frames
// left: the spill, and the buffer when it was left behind a full spill,
// blocking under send_timeout but without c's write lock: read loops
// that write into c meanwhile add to the spill (up to spillMax) and go
// on; drain takes what they added next. A peer that does not take it is
// closed and counted in Stats.QueueFull (a write queue that did not
// drain).
func (c *conn) drain() {
	for {
		c.wmu.Lock()
		c.cw.drainCh = nil // the last round's, closed
		if c.isClosed() {
			c.cw.spill = nil
			c.wmu.Unlock()
			return
		}
		if ws := c.ws; ws != nil {
			// Whole frames (nobody is in the middle of one: it would hold
			// wmu); a read loop that adopted c finds nothing left.
			c.cw.collect = true
			_ = ws.bw.Flush()
			c.cw.collect = false
			c.releaseWriter()
		}
		buf := c.cw.spill
		if len(buf) == 0 {
			c.wmu.Unlock()
			return
		}
		c.cw.spill = nil
		ch := make(chan struct{})
		c.cw.drainCh = ch
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.cw.timeout))
		_, err := c.nc.Write(buf)
		close(ch)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.countQueueFull()
			}
			c.close(writeCloseReason(err), err)
			return
		}
	}
}

// writeQueued writes a queued frame; more: more are queued, the buffer
// need not be flushed yet (write batching).
func (c *conn) writeQueued(f *outFrame, more bool) {
	defer f.release()
	defer c.queued.Add(-1)
	if f.closeReason != 0 {
		// Not in the middle of a frame forwarded into c (issue 15 defect 4):
		// the close waits for the write lock, and what is buffered goes
		// out first.
		c.wmu.Lock()
		if !c.isClosed() && c.cw.writeSpill() == nil {
			c.flushOut(true, false)
		}
		c.releaseWriter()
		first := c.markClosed(f.closeReason, f.closeErr)
		c.wmu.Unlock()
		if first {
			c.closeGracefully()
		}
		return
	}
	obs := c.r.tracing()
	wire := obs && c.r.wire()
	if wire {
		c.wCap = append(c.wCap[:0], f.buf[:min(len(f.buf), c.r.captureBytes)]...)
	}
	sent, err := c.writeLocked(f.buf, more, obs)
	if err != nil {
		c.close(writeCloseReason(err), err)
		return
	}
	if obs {
		// After the write lock: the scratch is the writer goroutine's.
		c.observeOut(f, sent, c.wCap, wire, &c.outEv, &c.outFI)
	}
}

// writeLocked writes one whole frame under the write lock, flushed unless
// more follow; sent (with obs) is when it started out, before the peer
// can react.
func (c *conn) writeLocked(frame []byte, more, obs bool) (sent time.Time, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if obs {
		sent = time.Now()
	}
	ws := c.writer()
	_, err = ws.bw.Write(frame)
	if err == nil && !more {
		err = ws.bw.Flush()
	}
	if err != nil || ws.bw.Buffered() == 0 {
		c.releaseWriter()
	}
	return sent, err
}

func writeCloseReason(err error) event.CloseReason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return event.CloseSendTimeout
	}
	return event.CloseWriteError
}

// readLoop reads frames until the connection ends.
func (c *conn) readLoop() {
	defer c.flushDirty(nil) // what it left in buffers goes out when it ends
	defer c.frameDone()
	for {
		c.frameDone()
		lim := c.r.limits() // per frame: a reload applies from the next one
		// The coarse clock (Relay.now, late by up to a sweep tick) plus
		// that tick: never earlier than idle_timeout, no clock read. The
		// sweeper may lag (it starts with Serve, a busy machine delays
		// it): never count from before the accept or the last frame.
		base := c.r.now()
		if c.inStart.After(base) {
			base = c.inStart
		}
		if c.created.After(base) {
			base = c.created
		}
		idleUntil := base.Add(lim.IdleTimeout + txnTick)
		var until time.Time // total limit of a connection on probation
		if c.info.Dir == event.DirIn && !c.requestOK.Load() {
			// RFC 4976 §6.1: first_request_timeout counts from the accept
			// whatever is sent meanwhile (a drip, failing requests).
			until = c.created.Add(lim.FirstRequestTimeout)
			idleUntil = earliest(idleUntil, until)
		}
		if !c.enterIdle(idleUntil) {
			return // shutting down: run flushes and closes
		}
		err := c.waitFrame()
		if err == nil {
			// In a frame, its destination unknown yet: a graceful
			// shutdown keeps every connection reading until it is done
			// (awaitsResponses). Counted before its clock read: a frame
			// that began after the shutdown's other read loops saw none
			// in flight is refused (refusesNew), not relayed.
			c.r.framing.Add(1)
			c.inFrame = true
		}
		now := time.Now() // the frame's time is when its first byte arrived: its only clock read
		c.inStart, c.inReads = now, c.dr.reads
		c.leaveIdle()
		if err != nil {
			c.closeOnReadErr(err, event.CloseIdleTimeout)
			return
		}
		c.dr.want = earliest(now.Add(lim.HeaderTimeout), until)
		f, err := c.rd.ReadFrame()
		c.lastF = f
		if err != nil {
			var fe *msrp.FrameError
			if errors.As(err, &fe) {
				if c.badFrame(fe, until) {
					continue
				}
				return
			}
			c.closeOnReadErr(err, event.CloseHeaderTimeout)
			return
		}
		c.dr.body(lim, until, now)
		err = c.handleFrame(f)
		c.dr.perRead = 0
		if err != nil {
			c.closeOnReadErr(err, event.CloseBodyTimeout)
			return
		}
		if c.isClosed() {
			return
		}
	}
}

// frameDone ends the count of c's frame in Relay.framing, if it is
// counted: it was routed (its destination is busy with it: writers), or
// handled, or refused in a graceful shutdown (it goes nowhere): other
// connections need not go on reading for it.
func (c *conn) frameDone() {
	if c.inFrame {
		c.inFrame = false
		c.r.framing.Add(-1)
	}
}

// enterIdle marks the connection as waiting for a frame, unless the relay
// is shutting down.
func (c *conn) enterIdle(until time.Time) bool {
	c.phaseMu.Lock()
	defer c.phaseMu.Unlock()
	if c.r.shuttingDown.Load() && !c.awaitsResponses() {
		return false
	}
	c.idle = true
	c.dr.want = until // set when the wait comes (deadlineReader.apply)
	return true
}

// earliest returns the earlier of a and b, b when a is zero, a when b is.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func (c *conn) leaveIdle() {
	c.phaseMu.Lock()
	c.idle = false
	if c.interrupted {
		// A frame came anyway: it is read under its own deadlines.
		c.interrupted = false
		c.dr.set = time.Time{} // the next wanted deadline is applied before a read
	}
	c.phaseMu.Unlock()
}

// awaitsResponses reports whether c's read loop must go on reading during
// a graceful shutdown: responses to requests forwarded to it are awaited,
// a frame is being written to it (its response will follow), or a frame
// is being read on any connection and not routed yet (it may be routed to
// c: until it is, c shows neither; c stopped and closed, that frame in
// flight would fail), and the grace period is not over.
func (c *conn) awaitsResponses() bool {
	return !c.r.aborting.Load() && (c.pendingOut.Load() > 0 || c.writers.Load() > 0 || c.r.framing.Load() > 0)
}

// interruptIdle wakes a connection that waits for its next frame, for a
// graceful shutdown, unless it awaits responses; a connection in the
// middle of a frame finishes it.
func (c *conn) interruptIdle() {
	c.phaseMu.Lock()
	if c.idle && !c.awaitsResponses() {
		c.interrupted = true
		_ = c.nc.SetReadDeadline(time.Now())
	}
	c.phaseMu.Unlock()
}

// interruptNow ends whatever read c's read loop waits in (the end of the
// shutdown grace; deadlineReader refuses the next read).
func (c *conn) interruptNow() {
	c.phaseMu.Lock()
	c.interrupted = true
	_ = c.nc.SetReadDeadline(time.Now())
	c.phaseMu.Unlock()
}

// quiet reports whether c may close in a graceful shutdown: its read loop
// ended, no frame is being written to it, no response may have to go back
// to it.
func (c *conn) quiet() bool {
	return c.readEnded.Load() && c.writers.Load() == 0 && c.pendingIn.Load() == 0
}

func (c *conn) closeOnReadErr(err error, timeoutReason event.CloseReason) {
	switch {
	case c.isClosed():
	case c.r.shuttingDown.Load() && errors.Is(err, os.ErrDeadlineExceeded):
		// Interrupted while idle: run flushes and closes.
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.close(timeoutReason, err)
	case errors.Is(err, io.EOF):
		// The peer shut down its write side; it may still read. What the
		// relay holds for it (its responses and REPORTs, frames forwarded
		// to it, buffered, spilled or queued) goes out before the close,
		// as in a graceful shutdown: the writer goroutine closes it after
		// the frames queued before, once no frame is being written into
		// it (writeQueued), within send_timeout.
		if c.closing.CompareAndSwap(false, true) {
			c.closeAfterFlush(event.CloseEOF, nil, c)
		}
	case errors.Is(err, net.ErrClosed):
		c.close(event.CloseEOF, nil)
	default:
		c.close(event.CloseReadError, err)
	}
}

// badFrame handles a frame the reader could not parse: it is traced and
// skipped up to its end-line when its transact-id is known; otherwise the
// stream cannot be re-framed and the connection is closed. It reports
// whether reading may go on. until is the total limit of a connection on
// probation (zero: none).
func (c *conn) badFrame(fe *msrp.FrameError, until time.Time) bool {
	c.frameDone() // goes nowhere: a graceful shutdown need not wait for its skip
	c.r.stats.badFrames.Add(1)
	c.r.plog.Info("bad_frame", "malformed MSRP frame", slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()),
		slog.String("error", fe.Error()), slog.String("event", "bad_frame"))
	if errors.Is(fe, msrp.ErrTruncated) {
		if c.closing.CompareAndSwap(false, true) {
			c.closeAfterFlush(event.CloseEOF, fe, c) // as at the end of the stream (closeOnReadErr)
		}
		return false
	}
	if fe.TransactID != "" {
		c.answerBadFrame(fe)
		c.dr.body(c.r.limits(), until, time.Now()) // until: first_request_timeout still counts (RFC 4976 §6.1)
		err := c.rd.Recover(maxRecoverBytes)
		c.dr.perRead = 0
		if err == nil {
			return true
		}
	}
	c.close(event.CloseProtocol, fe)
	return false
}

// maxRecoverBytes bounds how far a malformed frame is skipped.
const maxRecoverBytes = 1 << 20

// addrPort returns a's address and port, IPv4-mapped IPv6 unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.TCPAddr:
		ap = v.AddrPort()
	case *net.UDPAddr:
		ap = v.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
