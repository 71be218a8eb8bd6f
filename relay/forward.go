package relay

import (
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// forward streams q's frame to dst with a new transact-id: our URI moves
// from the front of To-Path to the front of From-Path (RFC 4976 §6.4), every
// other header field and the body pass unchanged, and the end-line keeps
// its flag. A body that breaks off is ended with "#" (RFC 4975 §7.1).
func (c *conn) forward(q *request, dst *conn, toOut []byte, prefix [][]byte) error {
	r := c.r
	f := q.f
	tid := msrp.AppendTransactID(c.tidBuf[:0])
	var x *txn
	if !q.isREPORT && !(q.isSEND && q.mode == msrp.ReportNo) {
		x = newTxn(tid, f, q)
		defer x.release() // this forward's reference (txn.refs)
		x.dst, x.src = dst, c
		r.txns.register(x) // before the first byte: a next hop may answer early
	}

	// The header fields as they go out, whole lines in c's own buffer.
	hdr := c.hdrBuf[:0]
	for _, h := range f.Headers {
		switch {
		case equalFoldName(h.Name, msrp.HdrToPath):
			hdr = msrp.AppendHeader(hdr, h.Name, toOut)
		case equalFoldName(h.Name, msrp.HdrFromPath):
			hdr = msrp.AppendPathHeader(hdr, h.Name, prefix, h.Value)
		default:
			hdr = msrp.AppendHeader(hdr, h.Name, h.Value)
		}
	}
	c.hdrBuf = hdr

	obs := r.tracing()
	wire := obs && r.wire()
	sent, flag, writeErr, bodyErr := c.writeForward(q, dst, x, tid, hdr, obs, wire)
	// The Observer runs after the destination's lock is released, so its
	// filters and encoding do not lengthen every forwarder's wait. The
	// source side first: it is complete (or broken) before the copy is.
	c.endIn(f, q.from, q.to, bodyErr == nil)
	if obs && writeErr == nil {
		// After the destination's lock: the capture is c's (fwdCap).
		c.fwdFI = event.FrameInfo{Dir: event.DirOut, TransactID: tid, Method: f.Method, MessageID: f.Get(msrp.HdrMessageID),
			ContentType: f.Get(msrp.HdrContentType), FromSession: q.from, ToSession: q.to, Flag: flag, Size: c.fwdSize, Wire: c.fwdCap,
			Paired: c.inStart}
		if !wire {
			c.fwdFI.Wire = nil
		}
		c.fwdEv = event.Event{Kind: event.FrameOut, Time: sent, Conn: dst.connInfo(), Frame: &c.fwdFI}
		r.obs.Observe(&c.fwdEv)
	}

	if writeErr != nil && !errors.Is(writeErr, msrp.ErrEndLineInBody) {
		dst.close(writeCloseReason(writeErr), writeErr)
	}
	if bodyErr != nil {
		return bodyErr // the source broke off; its read loop closes it
	}
	c.requestOK.Store(true) // a request relayed whole: probation over (RFC 4976 §6.1)
	r.stats.forwarded.Add(1)
	if s := q.fromS; s != nil {
		s.framesIn.Add(1)
		s.bytesIn.Add(uint64(frameSize(f)))
	}
	if s := q.toS; s != nil && writeErr == nil {
		s.framesOut.Add(1)
		s.bytesOut.Add(uint64(c.fwdSize))
	}
	if writeErr != nil {
		r.stats.forwardFailed.Add(1)
		r.plog.Info("forward_failed", "forwarding failed", slog.Uint64("conn", c.info.ID), slog.Uint64("next_conn", dst.info.ID),
			slog.String("error", writeErr.Error()), slog.String("event", "forward_failed"))
		if x != nil && r.txns.cancel(x) {
			x.bodyLen, x.flag = f.Body().Len(), flag
			r.failTxn(x, 408, "Forwarding failed", c)
			x.release() // the table's reference, handed over by cancel
		}
		if q.isSEND && q.mode == msrp.ReportYes {
			c.respond(q, 200, "OK")
		}
		return nil
	}
	// Hop-by-hop success for a SEND once the chunk is in (RFC 4976 §6.4.1).
	if q.isSEND && q.mode == msrp.ReportYes {
		c.respond(q, 200, "OK")
	}
	return nil
}

// writeForward writes the frame to dst under its write lock: start line,
// the header lines hdr, the body streamed from the source, the end-line.
// Its size is kept in c.fwdSize and, with wire, its first bytes in c.fwdCap
// (c's, not dst's: dst's lock is released before the Observer is called).
// sent (with obs) is when the frame started out. When more input of c is
// buffered the frame stays in dst's buffer, adopted (write batching,
// conn.flushDirty).
//
// x (nil: no response awaited) is armed before the end-line goes out: a
// next hop may answer as soon as it has it, and a chunk the source broke
// off (ended with '#') is answered or expires as any other.
func (c *conn) writeForward(q *request, dst *conn, x *txn, tid, hdr []byte, obs, wire bool) (sent time.Time, flag byte, writeErr, bodyErr error) {
	f := q.f
	dst.writers.Add(1)
	defer dst.writers.Add(-1)
	c.frameDone() // routed: dst is busy from here on (a graceful shutdown keeps it open), others need not wait
	if !dst.wmu.TryLock() {
		c.flushDirty(nil) // before waiting for the lock
		dst.wmu.Lock()
	}
	c.holding, dst.cw.by = dst, c
	defer func() { // also when something panics: the lock must not outlive this frame
		c.holding, dst.cw.by = nil, nil
		dst.wmu.Unlock()
	}()
	if obs {
		sent = time.Now()
	}
	lent := false // c.fwdCap is dst's capture buffer until taken back
	if dst.isClosed() {
		writeErr = errors.New("next hop connection closed")
		// The body is still read to its end-line: the next frame of c
		// starts after it (issue 14 defect 2: left unread, it made c's
		// idle wait a header read, cut by header_timeout).
		if f.HasBody() {
			bodyErr = c.readIn(f)
		}
	} else {
		w := dst.writer().mw
		limit := 0
		if wire {
			limit = c.r.captureBytes
		}
		w.Capture(c.fwdCap, limit)
		lent = true
		_ = w.StartRequest(tid, bstr(f.Method))
		w.RawHeaders(hdr)
		if f.HasBody() {
			// One scan of the body finds both its end-line and the
			// end-line of tid, which must not go out in it (RFC 4975
			// §7.1; a peer cannot guess tid, but the next hop may show it
			// to a peer before the body is all sent).
			bw := w.BodyScanned()
			body := f.Body()
			body.Avoid(tid)
			for {
				p, err := body.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					bodyErr = err
					break
				}
				c.capIn(p)
				if writeErr == nil {
					if body.Avoided() {
						writeErr = msrp.ErrEndLineInBody
					} else {
						_, writeErr = bw.Write(p)
					}
				}
			}
		}
	}
	// A large body: the next frames are read with a large read side
	// (largeread.go); plain TCP only: a TLS connection's wait for its next
	// frame holds its read side, and tls.Conn reads one record (16 KiB at
	// most) at a time anyway.
	c.bigBody = c.raw != nil && f.Body().Len() > connBufSize
	flag = f.Flag()
	if bodyErr != nil {
		flag = msrp.FlagAbort
	}
	batch := false
	if writeErr == nil || errors.Is(writeErr, msrp.ErrEndLineInBody) {
		if errors.Is(writeErr, msrp.ErrEndLineInBody) {
			flag = msrp.FlagAbort
		}
		w := dst.writer().mw
		if x != nil && writeErr == nil {
			// The timer starts after the last byte (RFC 4976 §6.4.1): for a
			// frame that came with the read that began it, its arrival time
			// is that within microseconds (no clock read; the timing wheel
			// rounds up to 250 ms anyway); one whose rest needed more reads
			// (a large body, a slow link) ends now.
			end := c.inStart
			if c.dr.reads != c.inReads || f.Body().Len() > connBufSize || bodyErr != nil {
				end = time.Now()
			}
			c.r.txns.arm(x, end.Add(c.r.limits().TransactionTimeout), f.Body().Len(), flag, sent)
		}
		batch = writeErr == nil && bodyErr == nil && c.moreInput()
		end := w.End
		if batch {
			end = w.EndBuffered
		}
		if err := end(flag); err != nil && writeErr == nil {
			writeErr = err
		}
	}
	if lent {
		c.fwdCap, c.fwdSize = dst.ws.mw.Captured()
	}
	if batch && writeErr == nil && dst.ws.bw.Buffered() > 0 {
		c.adopt(dst)
	} else {
		dst.releaseWriter()
	}
	return sent, flag, writeErr, bodyErr
}

func equalFoldName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i]|0x20, s[i]|0x20 // ASCII letters only differ in bit 5; '-' stays '-'|0x20 == '-'
		if x != y {
			return false
		}
	}
	return true
}
