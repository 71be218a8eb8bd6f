package load

import (
	"errors"
	"hash/crc32"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// The lean engine. A pair is two connections, A (sender) and B (receiver).
//
// A: one reader goroutine parses responses and REPORTs with msrp.Reader;
// the window is an array of slots whose index and generation are the
// transaction id (no map, no per-transaction goroutine or timer). SENDs
// are rendered from a pre-built template into A's bufio.Writer (only the
// transaction id, Message-ID and Byte-Range vary) and flushed once per
// batch: when the reader has no more buffered input, or the window is full.
// A's state is guarded by amu: the reader holds it while handling a frame
// (never while blocked reading), the pair's ticker while it sweeps timed
// out slots and, with -rate, releases scheduled messages.
//
// A's writer is a gatherWriter: on TCP a chunk's start (start line and
// header fields, staged in the buffer) and its body (slices of the body
// pattern, never copied) go out as iovecs of one writev per batch.
//
// B: one reader goroutine, the only user of B's state; it checks each
// message by Byte-Range and CRC-32C and answers SENDs with 200s, flushed
// once per batch. On large transfers its reads are bReadBufSize long.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type slot struct {
	gen   uint32
	inUse bool
	msg   int32 // index in pair.msgs
	start int64 // ns since run start: latency base (scheduled time for a message's first chunk)
	sent  int64 // ns since run start when written: timeout base
	n     int64 // body bytes
}

type msgRec struct {
	seq     int64
	sched   int64
	pending int32 // chunks written and not answered
	failed  bool
	allSent bool
}

type pair struct {
	idx    int
	r      *runner
	a, b   *mconn
	aUser  string
	toPath string        // A's SENDs
	tidBuf [32]byte      // render's scratch
	head   []byte        // " SEND\r\nTo-Path: ...\r\nFrom-Path: ...\r\nMessage-ID: m"
	wake   chan struct{} // capacity 1: makes the ticker run now
	parked bool          // -rate: the ticker sleeps until the sweep, the window full (amu)

	amu       sync.Mutex
	slots     []slot
	free      []int32
	msgs      []msgRec
	freeMsg   []int32
	cur       int32 // message being chunked; -1: none
	curOff    int64
	started   int64 // messages started
	nextSched int64 // -rate: ns since start of the next message's schedule
	schedBase int64 // -rate: the first message's scheduled time
	lastStart int64 // -rate: when the latest message started
	maxLate   int64 // -rate: the most any message started late
	lateN     int64 // -rate: messages started more than LateTolerance late
	nextSweep int64
	aDead     bool
	aLat      []int64 // latency bases of the 200s of this batch, recorded at its end
	errs      map[string]int64
	sendHist  histogram
	payload   int64

	// read without amu by Run's waits and the progress line
	acked    atomic.Int64 // messages whose every chunk got 200
	frames   atomic.Int64 // SENDs answered 200
	aIdle    atomic.Bool  // no more to send, nothing outstanding (or A is dead)
	closing  atomic.Bool  // Run closes the connections: read errors are expected
	stopping atomic.Bool  // Run ended the sending: no new message starts
	delivrd  atomic.Int64 // messages complete at B, hash ok
	bDead    atomic.Bool

	// B's state: only B's reader goroutine uses it while it runs.
	rx        map[string]*rxMsg
	bErrs     map[string]int64
	delivHist histogram
	recvSends int64
	recvBytes int64
	bLat      []int64 // send times of the messages completed in this batch
}

type rxMsg struct {
	total   int64
	next    int64 // bytes received in order so far
	crc     uint32
	pending map[int64][]byte // out-of-order chunks by 0-based offset
	sched   int64
}

func (p *pair) initWindow(w int) {
	p.slots = make([]slot, w)
	p.free = make([]int32, w)
	for i := range p.free {
		p.free[i] = int32(w - 1 - i)
	}
	p.msgs = make([]msgRec, w+1)
	p.freeMsg = make([]int32, w+1)
	for i := range p.freeMsg {
		p.freeMsg[i] = int32(w - i)
	}
	p.cur = -1
	p.wake = make(chan struct{}, 1)
	p.errs = map[string]int64{}
	p.bErrs = map[string]int64{}
	p.rx = map[string]*rxMsg{}
}

func (p *pair) errA(kind string) {
	p.errs[kind]++
	p.r.errTotal.Add(1)
}

func (p *pair) errB(kind string) {
	p.bErrs[kind]++
	p.r.errTotal.Add(1)
}

// mayStart says whether a new message may start now and with which
// scheduled time (amu held).
func (p *pair) mayStart(now int64) (sched int64, ok bool) {
	o := &p.r.opts
	if p.stopping.Load() || p.aDead || o.Count > 0 && p.started >= int64(o.Count) {
		return 0, false
	}
	if p.r.interval > 0 {
		if p.nextSched > now {
			return 0, false
		}
		// The schedule is absolute (start + k·interval): after a late
		// wake-up every message already due starts at once, as far as the
		// window allows, each keeping its own scheduled time.
		sched = p.nextSched
		p.nextSched += p.r.interval
		late := now - sched
		p.lastStart = now
		p.maxLate = max(p.maxLate, late)
		if late > int64(LateTolerance) {
			p.lateN++
		}
		return sched, true
	}
	return now, true
}

// pump fills the window with SEND chunks (amu held); the caller flushes.
func (p *pair) pump(now int64) {
	o := &p.r.opts
	for len(p.free) > 0 && !p.aDead {
		if p.cur < 0 {
			if len(p.freeMsg) == 0 {
				break
			}
			sched, ok := p.mayStart(now)
			if !ok {
				break
			}
			m := p.freeMsg[len(p.freeMsg)-1]
			p.freeMsg = p.freeMsg[:len(p.freeMsg)-1]
			p.msgs[m] = msgRec{seq: p.started, sched: sched}
			p.started++
			p.cur, p.curOff = m, 0
		}
		m := &p.msgs[p.cur]
		n := int64(o.Size) - p.curOff
		if c := int64(o.Chunk); c > 0 && n > c {
			n = c
		}
		s := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		sl := &p.slots[s]
		sl.gen++
		sl.inUse, sl.msg, sl.sent, sl.n = true, p.cur, now, n
		sl.start = now
		if p.curOff == 0 {
			sl.start = m.sched
		}
		last := p.curOff+n >= int64(o.Size)
		p.render(s, sl.gen, m, p.curOff, n, last)
		m.pending++
		p.curOff += n
		if last {
			m.allSent = true
			p.cur = -1
		}
	}
}

// render writes one SEND chunk to A's buffer.
func (p *pair) render(s int32, gen uint32, m *msgRec, off, n int64, last bool) {
	bw := p.a.bw
	tid := appendTID(p.tidBuf[:0], s, gen) // a field: a local array would escape through bufio.Writer.Write
	_, _ = bw.WriteString("MSRP ")
	_, _ = bw.Write(tid)
	_, _ = bw.Write(p.head)
	b := bw.AvailableBuffer()
	b = strconv.AppendInt(b, m.seq, 36)
	b = append(b, '.')
	b = strconv.AppendInt(b, m.sched, 36)
	b = append(b, "\r\nByte-Range: "...)
	b = strconv.AppendInt(b, off+1, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, off+n, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(p.r.opts.Size), 10)
	_, _ = bw.Write(b)
	if p.r.opts.Size > 0 {
		_, _ = bw.WriteString("\r\nFailure-Report: yes\r\nContent-Type: text/plain\r\n\r\n")
		for end := off + n; off < end; {
			piece := p.r.body.slice(off, end-off)
			bw.WriteBody(piece)
			off += int64(len(piece))
		}
		_, _ = bw.WriteString("\r\n-------")
	} else {
		_, _ = bw.WriteString("\r\nFailure-Report: yes\r\n-------")
	}
	_, _ = bw.Write(tid)
	flag := byte(msrp.FlagMore)
	if last {
		flag = msrp.FlagEnd
	}
	_ = bw.WriteByte(flag)
	_, _ = bw.WriteString("\r\n")
}

// appendTID: "t" gen "." slot in base 36 (an RFC 4975 §9 ident of 4+ chars).
func appendTID(dst []byte, s int32, gen uint32) []byte {
	dst = append(dst, 't')
	dst = strconv.AppendUint(dst, uint64(gen), 36)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, uint64(s), 36)
}

func parseTID(tid []byte) (s int32, gen uint32, ok bool) {
	if len(tid) < 4 || tid[0] != 't' {
		return 0, 0, false
	}
	dot := -1
	for i, c := range tid {
		if c == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return 0, 0, false
	}
	g, ok1 := parse36(tid[1:dot])
	v, ok2 := parse36(tid[dot+1:])
	if !ok1 || !ok2 || g > 1<<32-1 || v > 1<<31-1 {
		return 0, 0, false
	}
	return int32(v), uint32(g), true
}

func parse36(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 12 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'z':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v*36 + uint64(d)
	}
	return v, true
}

// schedOf is the scheduled time carried in a Message-ID "m<seq>.<sched>".
func schedOf(mid []byte) (int64, bool) {
	for i := len(mid) - 1; i > 0; i-- {
		if mid[i] == '.' {
			v, ok := parse36(mid[i+1:])
			return int64(v), ok
		}
	}
	return 0, false
}

// finishSlot frees slot s after its response or timeout (amu held).
func (p *pair) finishSlot(s int32, ok bool) {
	sl := &p.slots[s]
	sl.inUse = false
	p.free = append(p.free, s)
	m := &p.msgs[sl.msg]
	m.pending--
	if !ok {
		m.failed = true
	}
	if m.pending == 0 && m.allSent {
		if !m.failed {
			p.acked.Add(1)
		}
		p.freeMsg = append(p.freeMsg, sl.msg)
	}
}

// readA is A's reader goroutine.
func (p *pair) readA() {
	c := p.a
	for {
		f, err := c.rd.ReadFrame()
		p.amu.Lock()
		if err != nil {
			if !p.closing.Load() {
				p.errA(connKind(err))
			}
			p.aDead = true
			p.recordA(p.r.now())
			p.checkIdle()
			p.amu.Unlock()
			return
		}
		p.handleA(f)
		if c.br.Buffered() == 0 || len(p.free) > len(p.slots)/2 {
			// One clock read per batch: it ends the 200s' latencies (a
			// bound from above: they arrived before) and stamps the SENDs.
			now := p.r.now()
			p.recordA(now)
			p.pump(now)
			p.flushA()
			p.checkIdle()
			p.unpark()
		}
		p.amu.Unlock()
	}
}

// recordA adds the batch's SEND→200 latencies, ending at now (amu held).
func (p *pair) recordA(now int64) {
	for _, start := range p.aLat {
		p.sendHist.add(time.Duration(now - start))
	}
	p.aLat = p.aLat[:0]
}

func (p *pair) flushA() {
	if p.a.bw.Buffered() == 0 || p.aDead {
		return
	}
	if err := p.a.bw.Flush(); err != nil {
		if !p.closing.Load() {
			p.errA(connKind(err))
		}
		p.aDead = true
	}
}

// checkIdle publishes whether A is done (amu held).
func (p *pair) checkIdle() {
	o := &p.r.opts
	noMore := p.stopping.Load() || o.Count > 0 && p.started >= int64(o.Count)
	idle := p.aDead || noMore && p.cur < 0 && len(p.free) == len(p.slots)
	if idle && !p.aIdle.Load() {
		p.aIdle.Store(true)
		p.r.notify()
	}
}

func (p *pair) handleA(f *msrp.Frame) {
	if f.IsRequest() {
		if string(f.Method) == "REPORT" {
			if st, err := msrp.ParseStatus(f.Get(msrp.HdrStatus)); err == nil && st.Code != 200 {
				p.errA(statusKind("REPORT", st.Code, st.Reason))
			}
			return
		}
		p.errA(kindUnexpected)
		return
	}
	s, gen, ok := parseTID(f.TransactID)
	if !ok || int(s) >= len(p.slots) || !p.slots[s].inUse || p.slots[s].gen != gen {
		p.errA(kindUnknownTID)
		return
	}
	sl := &p.slots[s]
	if f.StatusCode == 200 {
		p.frames.Add(1)
		p.payload += sl.n
		p.aLat = append(p.aLat, sl.start)
		p.finishSlot(s, true)
		return
	}
	p.errA(statusKind("SEND", f.StatusCode, string(f.Comment)))
	p.finishSlot(s, false)
}

// sweep fails slots without a response within the timeout (amu held).
func (p *pair) sweep(now int64) {
	to := int64(p.r.opts.ResponseTimeout)
	for i := range p.slots {
		if sl := &p.slots[i]; sl.inUse && now-sl.sent > to {
			p.errA(kindTimeout)
			p.finishSlot(int32(i), false)
		}
	}
}

// tick is the pair's ticker goroutine: the timeout sweep, and with -rate
// the release of scheduled messages. It stops when stop closes.
func (p *pair) tick(stop <-chan struct{}) {
	sweepEvery := min(max(int64(p.r.opts.ResponseTimeout)/4, int64(10*time.Millisecond)), int64(time.Second))
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-p.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		p.amu.Lock()
		now := p.r.now()
		if now >= p.nextSweep {
			p.sweep(now)
			p.nextSweep = now + sweepEvery
		}
		p.pump(now)
		p.flushA()
		p.checkIdle()
		next := p.nextWake(now)
		p.amu.Unlock()
		t.Reset(time.Duration(next - now))
	}
}

// nextWake is when the ticker must run next (amu held): the sweep, or
// with -rate the next scheduled message. With the window full the next
// message cannot start on time anyway: the ticker sleeps until the sweep,
// parked, and A's reader wakes it when a 200 frees a slot (unpark);
// without that a message due after the last 200 of a full window would
// wait for the sweep, up to a second, and the rate would fall far behind.
func (p *pair) nextWake(now int64) int64 {
	next := p.nextSweep
	p.parked = false
	if p.r.interval > 0 && !p.stopping.Load() && p.nextSched < next {
		if len(p.free) == 0 {
			p.parked = true
		} else {
			next = max(p.nextSched, now+int64(100*time.Microsecond))
		}
	}
	return next
}

// unpark wakes the ticker parked on a full window once a slot is free
// (amu held).
func (p *pair) unpark() {
	if p.parked && len(p.free) > 0 {
		p.parked = false
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// stop ends the pair's sending: no new message starts (a chunked one
// in progress is finished). It never waits for amu, which a write to a
// stalled relay may hold: the ticker, woken, publishes the pair's idleness.
func (p *pair) stop() {
	p.stopping.Store(true)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// readB is B's reader goroutine.
func (p *pair) readB() {
	c := p.b
	for {
		f, err := c.rd.ReadFrame()
		if err == nil {
			err = p.handleB(f)
		}
		if err == nil && c.br.Buffered() == 0 {
			p.recordB()
			err = c.bw.Flush()
		}
		if err != nil {
			p.recordB()
			if !p.closing.Load() {
				p.errB(connKind(err))
			}
			for range p.rx {
				p.errB(kindIncomplete)
			}
			clear(p.rx)
			p.bDead.Store(true)
			p.r.notify()
			return
		}
	}
}

func (p *pair) handleB(f *msrp.Frame) error {
	if !f.IsRequest() {
		return nil // a response to nothing we sent: ignore
	}
	if string(f.Method) != "SEND" {
		return nil // e.g. a REPORT: not asked for
	}
	p.recvSends++
	mid := f.Get(msrp.HdrMessageID)
	rng, rerr := msrp.ParseByteRange(f.Get(msrp.HdrByteRange))
	body := f.Body()
	o := &p.r.opts
	single := rerr == nil && rng.Start == 1 && rng.Total >= 0 && (rng.End == rng.Total || rng.End < 0)
	var rx *rxMsg
	var buf []byte
	if rerr == nil && !single {
		rx = p.rx[string(mid)]
		if rx == nil {
			sched, _ := schedOf(mid)
			rx = &rxMsg{total: rng.Total, sched: sched}
			p.rx[string(mid)] = rx
		}
		if rng.Start-1 != rx.next {
			buf = []byte{} // out of order: keep a copy
		}
	}
	var crc uint32
	var n int64
	for {
		piece, err := body.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		n += int64(len(piece))
		switch {
		case buf != nil:
			buf = append(buf, piece...)
		case rx != nil:
			rx.crc = crc32.Update(rx.crc, castagnoli, piece)
		default:
			crc = crc32.Update(crc, castagnoli, piece)
		}
	}
	p.recvBytes += n
	if fr := f.Get(msrp.HdrFailureReport); fr == nil || equalFoldASCII(fr, "yes") {
		p.respond200(f)
	}
	flag := f.Flag()
	switch {
	case flag == msrp.FlagAbort: // RFC 4975 §7.1: the body may stop short of its Byte-Range
		p.errB(kindAborted)
		delete(p.rx, string(mid))
	case rerr != nil || rng.End >= 0 && rng.End-rng.Start+1 != n:
		p.errB(kindBadRange)
	case single:
		if flag != msrp.FlagEnd || n != rng.Total {
			p.errB(kindIncomplete)
		} else if crc != p.r.bodyCRC || n != int64(o.Size) {
			p.errB(kindHashMismatch)
		} else {
			sched, _ := schedOf(mid)
			p.delivered(sched)
		}
	default:
		if buf != nil {
			if rx.pending == nil {
				rx.pending = map[int64][]byte{}
			}
			rx.pending[rng.Start-1] = buf
		} else {
			rx.next += n
		}
		for len(rx.pending) > 0 {
			q, ok := rx.pending[rx.next]
			if !ok {
				break
			}
			delete(rx.pending, rx.next)
			rx.crc = crc32.Update(rx.crc, castagnoli, q)
			rx.next += int64(len(q))
		}
		if rx.next >= rx.total && len(rx.pending) == 0 {
			delete(p.rx, string(mid))
			if rx.crc != p.r.bodyCRC || rx.total != int64(o.Size) {
				p.errB(kindHashMismatch)
			} else {
				p.delivered(rx.sched)
			}
		}
	}
	return nil
}

// recordB adds the batch's delivery latencies, ending at one clock read
// after the batch (a bound from above).
func (p *pair) recordB() {
	if len(p.bLat) == 0 {
		return
	}
	now := p.r.now()
	for _, sched := range p.bLat {
		p.delivHist.add(time.Duration(now - sched))
	}
	p.bLat = p.bLat[:0]
}

func (p *pair) delivered(sched int64) {
	p.bLat = append(p.bLat, sched)
	if v := p.delivrd.Add(1); p.r.draining.Load() && v >= p.acked.Load() {
		p.r.notify()
	}
}

// respond200 answers a SEND (RFC 4975 §7.2: To-Path is the first URI of
// the request's From-Path, the previous hop).
func (p *pair) respond200(f *msrp.Frame) {
	bw := p.b.bw
	to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
	_, _ = bw.WriteString("MSRP ")
	_, _ = bw.Write(f.TransactID)
	_, _ = bw.WriteString(" 200 OK\r\nTo-Path: ")
	_, _ = bw.Write(to)
	_, _ = bw.WriteString("\r\nFrom-Path: ")
	_, _ = bw.WriteString(p.b.uri)
	_, _ = bw.WriteString("\r\n-------")
	_, _ = bw.Write(f.TransactID)
	_, _ = bw.WriteString("$\r\n")
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
