package hep

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/tracer/spool"
)

// A TCP/TLS Client with ClientConfig.Spool keeps what it cannot send on disk:
//
//   - while the collector is unreachable (dialing, backing off), the writer
//     moves queued packets into the spool instead of letting the queue
//     overflow: every packet it takes joins one spool record with whatever
//     else is queued at that moment, so a burst costs one fsync, not one per
//     packet;
//   - a stream write that fails puts its batch into the spool instead of
//     dropping it (some of its bytes may have reached the collector: it may
//     then see those packets twice);
//   - on Close (or when the context ends) packets still queued go to the
//     spool, so the next process replays them;
//   - after every successful connection the writer replays the spool, in
//     order, before any queued packet; while it replays, a queue filling up
//     is moved into the spool behind what is there, so order is kept and
//     nothing overflows.
//
// A record is acknowledged (and never replayed again) once its write to the
// socket returned. HEP has no acknowledgement: bytes written into a socket
// that the collector never reads (it crashes with them in its receive
// buffer, or the connection dies silently) are still lost. A crash of this
// process between a write and its Ack replays that record once more. A full
// spool refuses the packets, which are then counted as dropped (and the spool
// logs it). The caller owns the spool: it opens it before NewClient and
// closes it after Client.Close.

// spoolRecordBytes bounds the packets gathered into one spool record.
const spoolRecordBytes = 1 << 20

// spooler is the Client's spool state; used only by the writer goroutine
// (the counters are read by Stats).
type spooler struct {
	sp                *spool.Spool
	rec               []byte
	spooled, replayed atomic.Uint64
}

// spoolOn reports whether this client spools.
func (c *Client) spoolOn() bool { return c.spool.sp != nil }

// spoolQueued moves pending (if any) and what is queued into the spool as
// one record; first, if not nil, is a packet just taken from the queue and
// goes after pending. Packets the spool refuses are counted as dropped.
func (c *Client) spoolQueued(pending **[]byte, first *[]byte) {
	s := &c.spool
	s.rec = append(s.rec[:0], 0, 0, 0, 0) // packet count, then the packets
	n := 0
	add := func(b *[]byte) {
		s.rec = append(s.rec, *b...)
		putBuf(b)
		n++
	}
	if *pending != nil {
		add(*pending)
		*pending = nil
	}
	if first != nil {
		add(first)
	}
	for len(s.rec) < spoolRecordBytes {
		select {
		case b := <-c.queue:
			add(b)
			continue
		default:
		}
		break
	}
	if n == 0 {
		return
	}
	binary.LittleEndian.PutUint32(s.rec, uint32(n))
	if err := s.sp.Append(s.rec); err != nil {
		c.dropped.Add(uint64(n))
		if !errors.Is(err, spool.ErrFull) && !errors.Is(err, spool.ErrTooLarge) {
			c.errs.Add(1)
			c.rlog.Warn("spool_failed", "hep: spool append failed, packets dropped", errAttr(err), slog.Int("lost", n))
		}
		return
	}
	s.spooled.Add(uint64(n))
}

// spoolBatch puts a stream batch whose write failed (n packets) into the
// spool; false when the spool refused it (the caller counts the loss).
func (c *Client) spoolBatch(batch []byte, n uint64) bool {
	s := &c.spool
	s.rec = binary.LittleEndian.AppendUint32(s.rec[:0], uint32(n))
	s.rec = append(s.rec, batch...)
	if err := s.sp.Append(s.rec); err != nil {
		c.rlog.Warn("spool_batch_failed", "hep: spool append failed", errAttr(err))
		return false
	}
	s.spooled.Add(n)
	return true
}

// waitBackoff waits out a reconnect backoff; with a spool, packets queued in
// the meantime (and pending) go to the spool. It returns false when the
// context ended.
func (c *Client) waitBackoff(t *time.Timer, pending **[]byte) bool {
	var queue chan *[]byte // nil without a spool: never ready
	if c.spoolOn() {
		queue = c.queue
		if *pending != nil || len(c.queue) > 0 {
			c.spoolQueued(pending, nil)
		}
	}
	for {
		select {
		case <-c.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
			return true
		case b := <-queue:
			c.spoolQueued(pending, b)
		}
	}
}

// replay writes the spool's records to conn, oldest first, acknowledging
// each after its write returned. An error means the connection is unusable
// (the record stays in the spool); errReplayStopped means the context ended.
func (c *Client) replay(conn net.Conn, dead *atomic.Bool) error {
	s := &c.spool
	var none *[]byte
	for {
		if c.ctx.Err() != nil {
			return errReplayStopped
		}
		if len(c.queue) >= cap(c.queue)/2 {
			// Behind what the spool holds, so the order is kept.
			c.spoolQueued(&none, nil)
		}
		rec, ok, err := s.sp.Peek()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if len(rec) < 4 {
			// Not written by spoolQueued/spoolBatch: skip it.
			if err := s.sp.Ack(); err != nil {
				return err
			}
			continue
		}
		if dead != nil && dead.Load() {
			return errors.New("collector closed the connection")
		}
		if err := c.write(conn, rec[4:]); err != nil {
			return err
		}
		n := uint64(binary.LittleEndian.Uint32(rec))
		if err := s.sp.Ack(); err != nil {
			// Written but not acknowledged: a later replay sends it again.
			return err
		}
		s.replayed.Add(n)
		c.sent.Add(n)
	}
}

var errReplayStopped = errors.New("hep: replay stopped")

// spoolAtExit moves what is still pending and queued into the spool when the
// writer stops; false without a spool.
func (c *Client) spoolAtExit(pending **[]byte) bool {
	if !c.spoolOn() {
		return false
	}
	for *pending != nil || len(c.queue) > 0 {
		c.spoolQueued(pending, nil)
	}
	return true
}
