package hep

import (
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The UDP client's queue. A packet is encoded straight into the batch being
// filled (packets back to back in one buffer, under a short lock), not into
// a buffer of its own handed to the writer through a channel: a channel
// costs a lock and often a wake-up per packet, and a per-packet buffer
// written on one core and read by the writer on the other costs cache
// misses twice per packet (the encoder's first stores, the writer's copy).
//
// A batch is sent when it is full (udpBatch packets or udpBatchBytes),
// by whoever filled it when the socket is free (one sendmmsg of GSO runs,
// from bytes still in that core's cache), or else by the writer goroutine;
// and by the writer once its first packet has waited Linger. Sending is a
// non-blocking UDP send: the kernel drops rather than waits, so a producer
// that sends never waits on the collector.

// udpBatchBytes ends a batch once its packets reach this many bytes (a
// large frame's packet may take it beyond).
const udpBatchBytes = 64 << 10

// pktBatch is packets encoded back to back: packet i is buf[ends[i-1]:ends[i]].
type pktBatch struct {
	buf  []byte
	ends []int
	gen  uint64    // which batch this is, for the writer's linger
	pkts [][]byte  // the packets, while sending
	ptrs []*[]byte // pointers to pkts, what writeUDP takes
}

func (b *pktBatch) len() int { return len(b.ends) }

// udpShards is the number of batches that may be filled at once. A
// producer takes the first shard whose lock is free, starting from the
// one the last producer that met a busy lock moved to: under no
// contention every packet goes to one batch (full batches, in order);
// under contention producers fill other batches instead of parking on a
// lock, which a relay goroutine would do holding its read and write
// buffers (with 2,000 pairs traced to HEP the relay's RSS was 520 MB,
// 138 MB untraced). Packets of one connection may so leave in two
// batches out of order, as UDP may deliver them anyway.
const udpShards = 8

// udpShard is one batch being filled.
type udpShard struct {
	mu     sync.Mutex
	cur    *pktBatch // being filled; nil: none
	closed bool
	added  atomic.Int64 // packets added to this shard's batches (udpQueue.queued): on the line of mu, which the adder holds
	_      [32]byte     // a cache line of its own: producers on other cores lock the other shards
}

// udpQueue is a UDP client's queue and socket.
type udpQueue struct {
	shards []udpShard
	wait   bool          // tests: lock waits for the first shard (the queue before shards)
	start  atomic.Uint32 // the shard producers try first
	gen    atomic.Uint64 // batches started

	freeMu sync.Mutex
	free   []*pktBatch // batches to reuse

	full chan *pktBatch // full batches for the writer
	kick chan struct{}  // capacity 1: a batch got its first packet
	// The packets in cur, in full and being sent are the shards' added
	// minus recycled (queued): a shared counter written per packet was a
	// line every producing core wrote.
	recycled atomic.Int64
	// dispatching counts producers between taking a full batch out of cur
	// (under mu, before closed was set) and the end of udpDispatch: udpExit
	// waits for them before its last drain, so that a batch filled while
	// Close runs is sent on the still-open socket, not dropped.
	dispatching atomic.Int32

	send sync.Mutex // held while writing to conn; guards conn and ub
	conn net.Conn   // the writer's socket; nil before the dial and after the close
	ub   udpBatcher

	afterFill    func() // tests: called by the producer that filled a batch, before dispatching it
	testHookWait func() // tests: called by a producer that found every shard held, before it waits
}

// newUDPQueue returns a queue that holds about queueSize packets, plus up
// to udpBatch per shard being filled.
func newUDPQueue(queueSize, shards int) *udpQueue {
	n := max(1, queueSize/udpBatch)
	return &udpQueue{full: make(chan *pktBatch, n), kick: make(chan struct{}, 1), shards: make([]udpShard, max(1, shards))}
}

// lock locks a shard and returns it, and whether it had to wait: the first
// one free from q.start. A waiter parks, and once a lock has waiters (in
// starvation mode, a waiter that waited 1 ms) it is handed from holder to
// waiter, each parked until it runs, so that every later producer finds it
// held and parks too: a convoy of relay goroutines parked with their read
// and write buffers. So it takes a free shard without waiting (TryLock).
// Shards are all held at once only when their holders were preempted (a
// CPU-bound process): it yields once and tries them again, then waits for
// one (counted in Busy) rather than drop a packet the queue has room for.
func (q *udpQueue) lock() (s *udpShard, waited bool) {
	if q.wait {
		s := &q.shards[0]
		s.mu.Lock()
		return s, false
	}
	n := uint32(len(q.shards))
	first := q.start.Load() % n
	for sweep := 0; ; sweep++ {
		for i := range n {
			k := (first + i) % n
			if s := &q.shards[k]; s.mu.TryLock() {
				if i > 0 {
					q.start.Store(k) // a contended shard: move the others along too
				}
				return s, false
			}
		}
		if sweep == 1 {
			if q.testHookWait != nil {
				q.testHookWait()
			}
			s := &q.shards[first]
			s.mu.Lock()
			return s, true
		}
		runtime.Gosched()
	}
}

// queued returns the number of packets in batches being filled, full and
// being sent.
func (q *udpQueue) queued() int64 {
	n := -q.recycled.Load() // before the shards: never below the true count
	for i := range q.shards {
		n += q.shards[i].added.Load()
	}
	return max(n, 0)
}

// newBatch returns an empty batch with the next generation: a free one,
// or a new one when there is none or the free list's lock is held (a
// producer never waits for it).
func (q *udpQueue) newBatch() *pktBatch {
	var b *pktBatch
	if q.freeMu.TryLock() {
		if n := len(q.free); n > 0 {
			b = q.free[n-1]
			q.free = q.free[:n-1]
		}
		q.freeMu.Unlock()
	}
	if b == nil {
		b = &pktBatch{buf: make([]byte, 0, 16<<10), ends: make([]int, 0, udpBatch)}
	}
	b.gen = q.gen.Add(1)
	return b
}

// add encodes one packet with enc into the current batch and sends the
// batch when it is full. It returns false (the packet counted as dropped)
// when the client is closed or enc fails.
func (c *Client) udpAdd(enc func(dst []byte) ([]byte, error)) bool {
	q := c.uq
	s, waited := q.lock()
	if waited {
		c.busy.Add(1)
	}
	if s.closed {
		s.mu.Unlock()
		c.dropped.Add(1)
		return false
	}
	b := s.cur
	if b == nil {
		b = q.newBatch()
		s.cur = b
	}
	start := len(b.buf)
	out, err := c.udpEncode(s, b, enc)
	if err != nil {
		b.buf = b.buf[:start]
		s.mu.Unlock()
		c.dropped.Add(1)
		c.rlog.Debug("not_encoded", "hep: packet not encoded", errAttr(err))
		return false
	}
	b.buf = out
	b.ends = append(b.ends, len(out))
	s.added.Add(1)
	first := b.len() == 1
	var done *pktBatch
	if b.len() >= udpBatch || len(b.buf) >= udpBatchBytes {
		done, s.cur = b, nil
		q.dispatching.Add(1)
	}
	s.mu.Unlock()
	if done != nil {
		c.udpDispatchFilled(done)
	} else if first {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// udpEncode runs enc on b's buffer for udpAdd, which holds s.mu. A panic
// in enc (the relay recovers it, closes one connection and serves on:
// relay.recoverConn) releases s.mu, the packet counted as dropped: the
// batch is left as it was (b.buf is set only after enc returns), and no
// later send waits forever for the lock.
func (c *Client) udpEncode(s *udpShard, b *pktBatch, enc func(dst []byte) ([]byte, error)) (out []byte, err error) {
	returned := false
	defer func() {
		if !returned {
			s.mu.Unlock()
			c.dropped.Add(1)
		}
	}()
	out, err = enc(b.buf)
	returned = true
	return out, err
}

// udpDispatchFilled dispatches the batch udpAdd filled and counted in
// q.dispatching.
func (c *Client) udpDispatchFilled(b *pktBatch) {
	defer c.uq.dispatching.Add(-1) // even if a send panics: udpExit waits for it
	if c.uq.afterFill != nil {
		c.uq.afterFill()
	}
	c.udpDispatch(b)
}

// udpDispatch sends a full batch: here when the socket is free, else by the
// writer; a batch the writer has no room for is dropped. It never waits
// (udpExit waits for it).
func (c *Client) udpDispatch(b *pktBatch) {
	q := c.uq
	if msgDontWait != 0 && q.send.TryLock() {
		if q.conn != nil {
			// Never waits for the socket: a datagram the kernel has no buffer for is
			// dropped (and counted), as a full queue would drop it.
			q.ub.flags = msgDontWait
			c.udpSend(b)
			q.ub.flags = 0
			q.send.Unlock()
			return
		}
		q.send.Unlock()
	}
	select {
	case q.full <- b:
	default:
		c.udpDrop(b)
	}
}

// udpSend writes b to q.conn (q.send held) and recycles it.
func (c *Client) udpSend(b *pktBatch) {
	q := c.uq
	n := b.len()
	b.pkts, b.ptrs = b.pkts[:0], b.ptrs[:0]
	start := 0
	for _, end := range b.ends {
		b.pkts = append(b.pkts, b.buf[start:end:end])
		start = end
	}
	for i := range b.pkts {
		b.ptrs = append(b.ptrs, &b.pkts[i])
	}
	sent, err := c.writeUDP(q.conn, &q.ub, b.ptrs)
	c.sent.Add(uint64(sent))
	if err != nil {
		// Typically ECONNREFUSED caused by an ICMP error for an earlier datagram; the
		// socket stays usable.
		c.errs.Add(1)
		c.dropped.Add(uint64(n - sent))
		c.rlog.Debug("udp_write_failed", "hep: udp write failed", errAttr(err))
	}
	c.udpRecycle(b)
}

// udpDrop counts b's packets as dropped and recycles it.
func (c *Client) udpDrop(b *pktBatch) {
	c.dropped.Add(uint64(b.len()))
	c.udpRecycle(b)
}

func (c *Client) udpRecycle(b *pktBatch) {
	q := c.uq
	q.recycled.Add(int64(b.len()))
	clear(b.pkts)
	b.pkts, b.ptrs = b.pkts[:0], b.ptrs[:0]
	b.buf, b.ends = b.buf[:0], b.ends[:0]
	if cap(b.buf) > 4*udpBatchBytes {
		return // grown by a rare large packet: let it go
	}
	if !q.freeMu.TryLock() {
		return // a producer may be here: it does not wait; the batch is let go
	}
	if len(q.free) < cap(q.full)+len(q.shards)+1 {
		q.free = append(q.free, b)
	}
	q.freeMu.Unlock()
}

// runUDP is the writer goroutine of a UDP client.
func (c *Client) runUDP() {
	defer close(c.done)
	defer c.rlog.Flush()
	q := c.uq
	defer c.udpExit()
	linger := c.cfg.Linger
	if linger == 0 {
		linger = DefaultLinger
	}
	backoff := c.cfg.BackoffMin
	for {
		conn, _, err := c.dial()
		if err == nil {
			c.rlog.Info("connected", "hep: collector connected", slog.String("local", conn.LocalAddr().String()))
			q.send.Lock()
			q.conn = conn
			q.send.Unlock()
			break
		}
		if c.ctx.Err() != nil {
			return
		}
		c.errs.Add(1)
		wait := jitter(backoff)
		c.rlog.Warn("connect_failed", "hep: collector connect failed", errAttr(err), slog.Duration("retry_in", wait))
		var none *[]byte
		if !c.backoffWait(&backoff, wait, &none) {
			return
		}
	}
	var timer *time.Timer
	for {
		select {
		case <-c.ctx.Done():
			return
		case b := <-q.full:
			q.send.Lock()
			c.udpSend(b)
			q.send.Unlock()
		case <-q.kick:
			if !c.udpLinger(linger, &timer) {
				return
			}
		}
	}
}

// udpLinger lets the batches being filled gather packets until the first
// packet of each has waited linger (one more wait at most for a batch
// started during the first), then sends those not sent full meanwhile. It
// returns false when the client is stopping.
func (c *Client) udpLinger(linger time.Duration, timer **time.Timer) bool {
	q := c.uq
	gen := q.newestGen()
	for gen != 0 {
		if linger > 0 {
			if *timer == nil {
				*timer = time.NewTimer(linger)
			} else {
				(*timer).Reset(linger)
			}
		wait:
			for {
				select {
				case <-c.ctx.Done():
					(*timer).Stop()
					return false
				case b := <-q.full:
					q.send.Lock()
					c.udpSend(b)
					q.send.Unlock()
				case <-(*timer).C:
					break wait
				}
			}
		}
		// Send the batches begun before the wait; a newer one gets a whole linger.
		newer := uint64(0)
		for i := range q.shards {
			s := &q.shards[i]
			s.mu.Lock()
			var send *pktBatch
			if b := s.cur; b != nil && b.len() > 0 {
				if b.gen <= gen || linger <= 0 {
					send, s.cur = b, nil
				} else {
					newer = max(newer, b.gen)
				}
			}
			s.mu.Unlock()
			if send != nil {
				q.send.Lock()
				c.udpSend(send)
				q.send.Unlock()
			}
		}
		gen = newer
	}
	return true
}

// newestGen is the generation of the newest batch holding packets, 0 when
// none does.
func (q *udpQueue) newestGen() uint64 {
	gen := uint64(0)
	for i := range q.shards {
		s := &q.shards[i]
		s.mu.Lock()
		if b := s.cur; b != nil && b.len() > 0 {
			gen = max(gen, b.gen)
		}
		s.mu.Unlock()
	}
	return gen
}

// udpExit sends what is queued when the writer stops (each write is a
// non-blocking UDP send) and closes the socket. Producers that took a full
// batch before the queue was closed finish dispatching first (they never
// wait: a non-blocking send or hand-off): one may send it itself, on the
// socket still open, or leave it in full for the drain below.
func (c *Client) udpExit() {
	q := c.uq
	c.closed.Store(true)
	var left []*pktBatch
	for i := range q.shards {
		s := &q.shards[i]
		s.mu.Lock()
		s.closed = true
		if s.cur != nil {
			left = append(left, s.cur)
			s.cur = nil
		}
		s.mu.Unlock()
	}
	for q.dispatching.Load() > 0 { // no producer adds to it once closed is set
		runtime.Gosched()
	}
	q.send.Lock()
	defer q.send.Unlock()
	sendOrDrop := func(b *pktBatch) {
		if q.conn != nil {
			c.udpSend(b)
		} else {
			c.udpDrop(b)
		}
	}
	for _, b := range left {
		sendOrDrop(b)
	}
	for {
		select {
		case b := <-q.full:
			sendOrDrop(b)
			continue
		default:
		}
		break
	}
	if q.conn != nil {
		q.conn.Close()
		q.conn = nil
	}
}
