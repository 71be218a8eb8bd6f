package hep

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
	"github.com/msrpscope/msrpscope/tracer/spool"
)

// InsecureWarning begins the warnings about a TLS collector that is not verified
// (ClientConfig.TLSConfig.InsecureSkipVerify).
const InsecureWarning = "hep: insecure_skip_verify is on"

// Transport is how a Client reaches its collector.
type Transport string

// Transports. HEP over TCP and TLS is a plain concatenation of packets (the total length frames them).
const (
	UDP Transport = "udp"
	TCP Transport = "tcp"
	TLS Transport = "tls"
)

// Client defaults.
const (
	DefaultQueueSize    = 4096
	DefaultDialTimeout  = 5 * time.Second
	DefaultWriteTimeout = 2 * time.Second
	DefaultBackoffMin   = 100 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultStableAfter  = 5 * time.Second
	DefaultLinger       = 500 * time.Microsecond
	// batchBytes bounds what the writer coalesces into one stream write.
	batchBytes = 64 * 1024
)

// ClientConfig configures one collector destination.
type ClientConfig struct {
	// Name identifies the destination in logs and stats; default "<transport>:<addr>".
	Name      string
	Transport Transport
	// Addr is host:port of the collector.
	Addr string
	// TLSConfig is used for TLS; nil means a default config with ServerName taken from Addr.
	TLSConfig *tls.Config
	// QueueSize is the number of packets that may wait for the writer; when it is full Send drops.
	QueueSize int
	// Profile is applied by SendEvent and SendFrame; its MaxPacketSize also bounds Send.
	Profile Profile
	// DialTimeout bounds a connection attempt (including the TLS handshake); WriteTimeout bounds
	// each write, so a collector that stops reading cannot wedge the writer.
	DialTimeout, WriteTimeout time.Duration
	// Linger is how long the writer waits for more packets after the first before it sends them
	// in one batch (one sendmmsg on UDP, one write on TCP/TLS): 0 means DefaultLinger, negative
	// means no wait.
	Linger time.Duration
	// BackoffMin and BackoffMax bound the exponential reconnect backoff (with jitter).
	BackoffMin, BackoffMax time.Duration
	// StableAfter is how long a stream connection must stay up before its loss starts the
	// backoff over (0 means DefaultStableAfter). A shorter-lived connection (a collector that
	// accepts and then resets) is followed by the next, longer backoff wait, so the client
	// does not reconnect in a tight loop.
	StableAfter time.Duration
	// NoGSO turns off UDP segmentation offload (see gso.go), which the UDP writer otherwise uses
	// where the kernel offers it: batches of similar-sized packets then leave with one trip
	// through the kernel, padded to one size with a padding chunk that receivers skip.
	NoGSO bool
	// Logger receives connection state changes; nil means slog.Default().
	Logger *slog.Logger
	// Spool, for TCP and TLS, keeps on disk what cannot be sent while the collector is down and
	// replays it in order on reconnection (see spool.go); nil: such packets are dropped. The
	// caller opens it and closes it after Close.
	Spool *spool.Spool

	// Tests only: the clock that times connections (nil: time.Now) and a hook called with
	// the backoff step before each reconnect wait.
	now         func() time.Time
	backoffHook func(step time.Duration)
	// Tests only: the UDP batches filled at once (0: udpShards), and
	// whether producers wait for a batch's lock (the queue before shards).
	shards  int
	udpWait bool
}

// Stats are a Client's counters (monotonic, except Queued).
type Stats struct {
	// Sent counts packets written to the collector's socket: UDP datagrams handed to the
	// kernel, stream bytes the kernel accepted. HEP has no acknowledgement, so it is not
	// delivery: packets written just before a collector resets, or to one that never reads
	// (until WriteTimeout), count as Sent yet were never read.
	Sent       uint64
	Dropped    uint64 // packets that will never be written: queue full, too large, lost in a failed write, closed
	Errors     uint64 // failed dials and writes
	Reconnects uint64 // successful connections after the first one
	Segmented  uint64 // packets of Sent that left in GSO runs (UDP segmentation offload)
	Busy       uint64 // packets whose sender found every UDP batch locked (holders preempted) and waited for one (udpqueue.go)
	Spooled    uint64 // packets put into the spool (ClientConfig.Spool)
	Replayed   uint64 // packets of Sent that came from the spool
	Queued     int    // packets waiting now
}

// Client sends HEP packets to one collector. Send and its variants never block: packets are copied
// into pooled buffers and queued for the Client's writer goroutine, or dropped and counted.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	rlog   *ratelog.Logger // lines the collector or the traffic can repeat: rate-limited per kind
	queue  chan *[]byte
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
	// enqueuing counts stream producers in enqueue, which the writer waits
	// for at exit before its last drain.
	enqueuing atomic.Int32

	sent, dropped, errs, reconnects, segmented atomic.Uint64
	busy                                       atomic.Uint64 // UDP: packets that found every batch locked and waited (udpqueue.go)
	spool                                      spooler
	uq                                         *udpQueue // UDP: the queue and socket (udpqueue.go); nil for streams
}

// freeBufs is the packet buffers not in use, shared by the stream (TCP,
// TLS) clients (UDP clients encode into their batches, udpqueue.go): a
// bounded free list rather than a sync.Pool, which every garbage collection
// empties, so that a relay tracing every frame would allocate a buffer per
// packet until it had refilled.
//
// It keeps at most as many buffers as the live clients' queues can hold
// (each stream client adds its QueueSize while it runs): a backlog
// that filled a queue once does not make every later one allocate.
var freeBufs struct {
	mu   sync.Mutex
	bufs []*[]byte
	max  int
}

const maxKeptBuf = 64 << 10 // a larger buffer is let go

// reserveBufs changes the free list's bound by n buffers.
func reserveBufs(n int) {
	freeBufs.mu.Lock()
	freeBufs.max += n
	if len(freeBufs.bufs) > freeBufs.max {
		clear(freeBufs.bufs[freeBufs.max:])
		freeBufs.bufs = freeBufs.bufs[:freeBufs.max]
	}
	freeBufs.mu.Unlock()
}

// getBuf and dropBuf run on producers (relay goroutines): they never wait
// for the free list's lock (a goroutine waiting there parks, with the relay
// connection's buffers): when it is held, getBuf allocates and dropBuf
// lets the buffer go. The writer gives buffers back with putBufs, which
// waits.
func getBuf() *[]byte {
	if freeBufs.mu.TryLock() {
		if n := len(freeBufs.bufs); n > 0 {
			b := freeBufs.bufs[n-1]
			freeBufs.bufs = freeBufs.bufs[:n-1]
			freeBufs.mu.Unlock()
			return b
		}
		freeBufs.mu.Unlock()
	}
	b := make([]byte, 0, 2048)
	return &b
}

func dropBuf(b *[]byte) {
	if cap(*b) > maxKeptBuf {
		return
	}
	*b = (*b)[:0]
	if !freeBufs.mu.TryLock() {
		return
	}
	if len(freeBufs.bufs) < freeBufs.max {
		freeBufs.bufs = append(freeBufs.bufs, b)
	}
	freeBufs.mu.Unlock()
}

// putBuf gives b back to the free list (the writer's side: it waits for
// the lock).
func putBuf(b *[]byte) { putBufs([]*[]byte{b}) }

// putBufs is putBuf for a batch, under one lock.
func putBufs(bs []*[]byte) {
	freeBufs.mu.Lock()
	for _, b := range bs {
		if cap(*b) <= maxKeptBuf && len(freeBufs.bufs) < freeBufs.max {
			*b = (*b)[:0]
			freeBufs.bufs = append(freeBufs.bufs, b)
		}
	}
	freeBufs.mu.Unlock()
}

// NewClient validates cfg, fills in defaults and starts the writer goroutine, which connects in the
// background (NewClient never waits for the collector). The writer stops when ctx is done or Close
// is called.
func NewClient(ctx context.Context, cfg ClientConfig) (*Client, error) {
	switch cfg.Transport {
	case UDP, TCP, TLS:
	default:
		return nil, fmt.Errorf("hep: client %q: unknown transport %q (want udp, tcp or tls)", cfg.Name, cfg.Transport)
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("hep: client %q: address: %w", cfg.Name, err)
	}
	if cfg.Name == "" {
		cfg.Name = string(cfg.Transport) + ":" + cfg.Addr
	}
	if cfg.Transport == TLS {
		if cfg.TLSConfig == nil {
			cfg.TLSConfig = &tls.Config{}
		} else {
			cfg.TLSConfig = cfg.TLSConfig.Clone()
		}
		if cfg.TLSConfig.ServerName == "" {
			cfg.TLSConfig.ServerName = host
		}
	}
	if cfg.Spool != nil && cfg.Transport == UDP {
		return nil, fmt.Errorf("hep: client %q: a spool needs a stream transport (tcp or tls)", cfg.Name)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Transport == UDP && cfg.Profile.MaxPacketSize > MaxPacketSize {
		// The largest IPv4 UDP payload: a bigger packet could never be sent.
		cfg.Profile.MaxPacketSize = MaxPacketSize
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	c := &Client{
		cfg:   cfg,
		log:   cfg.Logger,
		queue: make(chan *[]byte, cfg.QueueSize),
		done:  make(chan struct{}),
	}
	c.spool.sp = cfg.Spool
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("hep_dest", cfg.Name, "transport", string(cfg.Transport), "addr", cfg.Addr)
	c.rlog = ratelog.New(c.log, ratelog.Config{})
	c.ctx, c.cancel = context.WithCancel(ctx)
	if cfg.Transport == UDP {
		c.uq = newUDPQueue(cfg.QueueSize, cmp.Or(cfg.shards, udpShards))
		c.uq.wait = cfg.udpWait
		go c.runUDP()
		return c, nil
	}
	reserveBufs(cfg.QueueSize)
	go c.run()
	return c, nil
}

// errAttr is the attribute of an error in log lines.
func errAttr(err error) slog.Attr { return slog.Any("err", err) }

// Name returns the destination name.
func (c *Client) Name() string { return c.cfg.Name }

// Stats returns the counters; safe for concurrent use.
func (c *Client) Stats() Stats {
	queued := len(c.queue)
	if c.uq != nil {
		queued = int(c.uq.queued())
	}
	return Stats{
		Sent:       c.sent.Load(),
		Dropped:    c.dropped.Load(),
		Errors:     c.errs.Load(),
		Reconnects: c.reconnects.Load(),
		Segmented:  c.segmented.Load(),
		Busy:       c.busy.Load(),
		Spooled:    c.spool.spooled.Load(),
		Replayed:   c.spool.replayed.Load(),
		Queued:     queued,
	}
}

// Send queues a copy of the encoded packet pkt. It never blocks; it returns false (and counts a drop)
// when the queue is full, the packet is larger than the profile's MaxPacketSize, or the client is closed.
func (c *Client) Send(pkt []byte) bool {
	if len(pkt) > c.cfg.Profile.maxPacket() || c.closed.Load() {
		c.dropped.Add(1)
		return false
	}
	if c.uq != nil {
		return c.udpAdd(func(dst []byte) ([]byte, error) { return append(dst, pkt...), nil })
	}
	b := getBuf()
	*b = append(*b, pkt...)
	return c.enqueue(b)
}

// SendEvent encodes ev with the client's Profile and queues it (see Send). An encoding error (empty
// correlation id, oversized event) counts as a drop.
func (c *Client) SendEvent(m Meta, ev Event) bool {
	if c.closed.Load() {
		c.dropped.Add(1)
		return false
	}
	if c.uq != nil {
		return c.udpAdd(func(dst []byte) ([]byte, error) { return c.cfg.Profile.AppendEventPacket(dst, m, ev) })
	}
	b := getBuf()
	var err error
	*b, err = c.cfg.Profile.AppendEventPacket(*b, m, ev)
	return c.enqueueEncoded(b, err)
}

// SendFrame encodes an MSRP frame with the client's Profile and queues it (see Send).
func (c *Client) SendFrame(m Meta, frame []byte) bool {
	if c.closed.Load() {
		c.dropped.Add(1)
		return false
	}
	if c.uq != nil {
		return c.udpAdd(func(dst []byte) ([]byte, error) { return c.cfg.Profile.AppendFramePacket(dst, m, frame) })
	}
	b := getBuf()
	var err error
	*b, err = c.cfg.Profile.AppendFramePacket(*b, m, frame)
	return c.enqueueEncoded(b, err)
}

// SendFrameFunc is SendFrame for a frame that appendFrame appends to dst,
// in at most room bytes (the payload the packet has room for): the frame is
// copied once, straight into the packet.
func (c *Client) SendFrameFunc(m Meta, appendFrame func(dst []byte, room int) []byte) bool {
	if c.closed.Load() {
		c.dropped.Add(1)
		return false
	}
	if c.uq != nil {
		return c.udpAdd(func(dst []byte) ([]byte, error) { return c.cfg.Profile.AppendFramePacketFunc(dst, m, appendFrame) })
	}
	b := getBuf()
	var err error
	*b, err = c.cfg.Profile.AppendFramePacketFunc(*b, m, appendFrame)
	return c.enqueueEncoded(b, err)
}

func (c *Client) enqueueEncoded(b *[]byte, err error) bool {
	if err != nil {
		dropBuf(b)
		c.dropped.Add(1)
		c.rlog.Debug("not_encoded", "hep: packet not encoded", errAttr(err))
		return false
	}
	return c.enqueue(b)
}

// enqueue hands b to the stream writer. A producer announces itself in
// c.enqueuing before it checks c.closed; the writer, at exit, sets closed
// and then waits for the producers announced (they never wait: the queue
// refuses when full) before its last drain. So a packet enqueue took is
// written (or counted if the write fails), and one it refused is counted:
// none is left behind in the queue.
func (c *Client) enqueue(b *[]byte) bool {
	c.enqueuing.Add(1)
	defer c.enqueuing.Add(-1)
	if c.closed.Load() {
		dropBuf(b)
		c.dropped.Add(1)
		return false
	}
	select {
	case c.queue <- b:
		return true
	default:
		dropBuf(b)
		c.dropped.Add(1)
		return false
	}
}

// Close stops the writer: packets still queued are written if the collector is connected and
// accepts them within WriteTimeout, the rest are counted as dropped. Later sends are dropped.
// Close waits for the writer to exit and is safe to call more than once.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.cancel()
	<-c.done
	return nil
}

// lingerUntil is the queued packets that make the stream writer write at
// once, without lingering.
const lingerUntil = 63

// run is the writer goroutine of a stream (TCP, TLS) client; runUDP is UDP's.
func (c *Client) run() {
	defer close(c.done)
	// After the last putBuf of the deferred calls below.
	defer reserveBufs(-c.cfg.QueueSize)
	defer c.rlog.Flush() // the counts of suppressed lines, before Close returns
	var (
		conn    net.Conn
		dead    *atomic.Bool // set by the connection's reader when the collector hangs up
		upSince time.Time    // when conn was established
		batch   = make([]byte, 0, batchBytes)
		taken   []*[]byte // the buffers of batch's packets
		backoff = c.cfg.BackoffMin
		first   = true
		pending *[]byte // taken from the queue, to be written after a reconnect
		linger  = c.cfg.Linger
		lingerT *time.Timer
	)
	if linger == 0 {
		linger = DefaultLinger
	}
	defer func() {
		c.closed.Store(true)
		for c.enqueuing.Load() > 0 { // producers that saw closed false (enqueue): a few instructions each
			runtime.Gosched()
		}
		if pending != nil && !c.spoolOn() {
			putBuf(pending)
			c.dropped.Add(1)
		}
		if conn != nil {
			c.flush(conn)
			conn.Close()
		}
		c.spoolAtExit(&pending)
		c.dropAll()
	}()
	for {
		if conn == nil {
			var err error
			conn, dead, err = c.dial()
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				c.errs.Add(1)
				wait := jitter(backoff)
				c.rlog.Warn("connect_failed", "hep: collector connect failed", errAttr(err), slog.Duration("retry_in", wait))
				if !c.backoffWait(&backoff, wait, &pending) {
					return
				}
				continue
			}
			// The backoff starts over only once the connection proved stable (connLost), not
			// here: a collector that accepts and resets would otherwise be redialled in a
			// tight loop (issue 15, defect 7).
			upSince = c.cfg.now()
			if !first {
				c.reconnects.Add(1)
			}
			first = false
			c.rlog.Info("connected", "hep: collector connected", slog.String("local", conn.LocalAddr().String()))
			if c.cfg.Transport == TLS && c.cfg.TLSConfig.InsecureSkipVerify {
				c.rlog.Warn("insecure_connected", InsecureWarning+": connected without verifying the collector's certificate")
			}
			if c.spoolOn() {
				if err := c.replay(conn, dead); err != nil {
					if errors.Is(err, errReplayStopped) {
						return
					}
					c.errs.Add(1)
					c.rlog.Warn("replay_failed", "hep: spool replay failed, reconnecting", errAttr(err))
					conn.Close()
					conn = nil
					if !c.connLost(&backoff, upSince, &pending) {
						return
					}
					continue
				}
			}
		}
		b := pending
		pending = nil
		if b == nil {
			select {
			case <-c.ctx.Done():
				return
			case b = <-c.queue:
			}
		}
		if dead != nil && dead.Load() {
			// The collector closed the stream (e.g. it restarted): reconnect, then write b.
			c.rlog.Warn("collector_closed", "hep: collector closed the connection, reconnecting")
			c.errs.Add(1)
			conn.Close()
			conn, pending = nil, b
			if !c.connLost(&backoff, upSince, &pending) {
				return
			}
			continue
		}
		// Under load, lingering a moment gathers a batch: one system call
		// (and one wake-up of this goroutine) for dozens of packets.
		if linger > 0 && len(c.queue) < lingerUntil {
			if lingerT == nil {
				lingerT = time.NewTimer(linger)
			} else {
				lingerT.Reset(linger)
			}
			select {
			case <-lingerT.C:
			case <-c.ctx.Done():
				lingerT.Stop()
			}
		}
		// Stream: coalesce what is queued into one write; the buffers go back
		// to the free list under one lock.
		batch = append(batch[:0], *b...)
		taken = append(taken[:0], b)
		n := uint64(1)
	fill:
		for len(batch) < batchBytes {
			select {
			case b = <-c.queue:
				batch = append(batch, *b...)
				taken = append(taken, b)
				n++
			default:
				break fill
			}
		}
		putBufs(taken)
		clear(taken)
		if err := c.write(conn, batch); err != nil {
			c.errs.Add(1)
			lost := n
			if c.spoolOn() && c.spoolBatch(batch, n) {
				lost = 0 // replayed after the reconnection
			}
			c.dropped.Add(lost)
			c.rlog.Warn("write_failed", "hep: collector write failed, reconnecting", errAttr(err), slog.Uint64("lost", lost))
			conn.Close()
			conn = nil
			if !c.connLost(&backoff, upSince, &pending) {
				return
			}
			continue
		}
		c.sent.Add(n)
	}
}

// connLost is called when an established stream connection ended, before the next dial. A
// connection that stayed up for StableAfter counts as accepted: the backoff starts over and the
// client redials at once. A shorter-lived one waits the current backoff step, which then grows,
// like a failed dial. It returns false when the client is stopping.
func (c *Client) connLost(backoff *time.Duration, upSince time.Time, pending **[]byte) bool {
	if c.cfg.now().Sub(upSince) >= c.cfg.StableAfter {
		*backoff = c.cfg.BackoffMin
		return true
	}
	return c.backoffWait(backoff, jitter(*backoff), pending)
}

// backoffWait waits wait (a jittered *backoff), spooling what is queued meanwhile, and doubles
// *backoff up to BackoffMax. It returns false when the client is stopping.
func (c *Client) backoffWait(backoff *time.Duration, wait time.Duration, pending **[]byte) bool {
	if c.cfg.backoffHook != nil {
		c.cfg.backoffHook(*backoff)
	}
	*backoff = min(2**backoff, c.cfg.BackoffMax)
	return c.waitBackoff(time.NewTimer(wait), pending)
}

// udpBatch bounds the datagrams sent with one system call (a burst a
// collector's socket buffer must absorb).
const udpBatch = 64

// udpBatcher sends several datagrams with one sendmmsg (x/net's
// PacketConn.WriteBatch; one datagram per call where the platform lacks it),
// as GSO runs where the kernel offers UDP_SEGMENT.
type udpBatcher struct {
	conn net.Conn
	wb   interface {
		WriteBatch([]ipv4.Message, int) (int, error)
	}
	msgs []ipv4.Message
	one  [udpBatch][]byte // each message's single buffer, reused

	flags  int  // sendmmsg's flags (msgDontWait: never wait for the socket)
	gso    bool // UDP_SEGMENT is usable on conn
	maxSeg int  // largest GSO segment: the profile's packet limit and the route's MTU
	plan   gsoPlanner
	lens   []int
	runBuf []byte // the runs' padded packets, back to back
	oob    []byte // the runs' control messages
}

// writeUDP sends bufs and returns how many were sent.
func (c *Client) writeUDP(conn net.Conn, ub *udpBatcher, bufs []*[]byte) (int, error) {
	if ub.conn != conn {
		ub.conn, ub.wb, ub.gso = conn, nil, false
		if pc, ok := conn.(net.PacketConn); ok {
			if ra, ok := conn.RemoteAddr().(*net.UDPAddr); ok && ra.IP.To4() == nil {
				ub.wb = ipv6.NewPacketConn(pc)
			} else {
				ub.wb = ipv4.NewPacketConn(pc)
			}
		}
		if uc, ok := conn.(*net.UDPConn); ok && ub.wb != nil && !c.cfg.NoGSO {
			var maxDatagram int
			ub.gso, maxDatagram = udpGSO(uc)
			ub.maxSeg = c.cfg.Profile.maxPacket()
			if maxDatagram > 0 {
				ub.maxSeg = min(ub.maxSeg, maxDatagram)
			}
		}
	}
	if err := conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return 0, err
	}
	if ub.wb == nil || len(bufs) == 1 && ub.flags == 0 {
		for i, b := range bufs {
			if _, err := conn.Write(*b); err != nil {
				return i, err
			}
		}
		return len(bufs), nil
	}
	if !ub.gso {
		return ub.writeBatch(bufs)
	}
	total := 0
	var firstErr error
	for attempt := 0; ; attempt++ {
		sent, segmented, next, gsoErr, err := ub.writeGSO(bufs)
		total += sent
		c.segmented.Add(uint64(segmented))
		firstErr = cmp.Or(firstErr, err)
		if gsoErr == nil {
			return total, firstErr
		}
		// The kernel refused to segment a run: the packets of that run and the ones after it
		// are still to send (a copy: the plan is made anew from them).
		var rest []*[]byte
		for _, r := range ub.plan.runs[next:] {
			for _, i := range ub.plan.order[r.start:r.end] {
				rest = append(rest, bufs[i])
			}
		}
		bufs = rest
		// EMSGSIZE/EINVAL: the route's MTU shrank under the connected socket. Plan smaller runs.
		if attempt == 0 && isMTUError(gsoErr) {
			if uc, ok := conn.(*net.UDPConn); ok {
				if _, maxDatagram := udpGSO(uc); maxDatagram > 0 && maxDatagram < ub.maxSeg {
					ub.maxSeg = maxDatagram
					c.log.Info("hep: route MTU shrank, smaller segmentation runs", "max_datagram", maxDatagram)
					continue
				}
			}
		}
		// Anything else (EIO: no checksum offload on the device): plain datagrams from now on.
		ub.gso = false
		c.log.Warn("hep: udp segmentation offload refused, sending datagrams one by one", "err", gsoErr)
		n, err := ub.writeBatch(bufs)
		return total + n, cmp.Or(firstErr, err)
	}
}

// writeBatch sends bufs in order, one datagram each, and returns how many
// were sent. A datagram the kernel refuses is lost (the caller counts it as
// dropped) and the rest still go; the first error is returned.
func (ub *udpBatcher) writeBatch(bufs []*[]byte) (int, error) {
	sent, _, _, _, err := ub.send(bufs, ub.plan.single(len(bufs)))
	return sent, err
}

// writeGSO sends bufs as GSO runs (see send).
func (ub *udpBatcher) writeGSO(bufs []*[]byte) (sent, segmented, next int, gsoErr, err error) {
	ub.lens = ub.lens[:0]
	for _, b := range bufs {
		ub.lens = append(ub.lens, len(*b))
	}
	return ub.send(bufs, ub.plan.plan(ub.lens, ub.maxSeg))
}

// send sends the runs planned for bufs with one sendmmsg, a message per run.
// It returns the packets sent and how many of them in runs of two or more.
// A run the kernel refuses to segment stops it: gsoErr is that error and
// next the index of the run (in ub.plan.runs) from which nothing was sent.
// Any other error loses just the message it came with; the first is
// returned as err.
func (ub *udpBatcher) send(bufs []*[]byte, runs []gsoRun) (sent, segmented, next int, gsoErr, err error) {
	total := 0
	for _, r := range runs {
		total += r.seg * (r.end - r.start)
	}
	if cap(ub.runBuf) < total {
		ub.runBuf = make([]byte, 0, total)
	}
	if n := len(runs) * gsoControlLen; cap(ub.oob) < n {
		ub.oob = make([]byte, n)
	}
	buf := ub.runBuf[:0] // never grows past total: the slices below stay valid
	ub.msgs = ub.msgs[:0]
	for ri, r := range runs {
		if r.seg == 0 {
			ub.one[ri] = *bufs[ub.plan.order[r.start]]
			ub.msgs = append(ub.msgs, ipv4.Message{Buffers: ub.one[ri : ri+1]})
			continue
		}
		start := len(buf)
		for k := r.start; k < r.end-1; k++ {
			buf = appendPadded(buf, *bufs[ub.plan.order[k]], r.seg)
		}
		buf = append(buf, *bufs[ub.plan.order[r.end-1]]...) // the smallest, unpadded
		ub.one[ri] = buf[start:]
		oob := ub.oob[ri*gsoControlLen : (ri+1)*gsoControlLen]
		putGSOControl(oob, r.seg)
		ub.msgs = append(ub.msgs, ipv4.Message{Buffers: ub.one[ri : ri+1], OOB: oob})
	}
	defer clear(ub.one[:len(runs)]) // the buffers go back to the pool
	for next < len(ub.msgs) {
		n, werr := ub.wb.WriteBatch(ub.msgs[next:], ub.flags)
		n = max(n, 0) // x/net passes sendmmsg's -1 on
		for _, r := range runs[next : next+n] {
			sent += r.end - r.start
			if r.seg > 0 {
				segmented += r.end - r.start
			}
		}
		next += n
		if werr != nil {
			// sendmmsg reports an error only for its first message, runs[next].
			if runs[next].seg > 0 && isGSOError(werr) {
				return sent, segmented, next, werr, err
			}
			err = cmp.Or(err, werr)
			next++
			continue
		}
		if n == 0 {
			return sent, segmented, next, nil, cmp.Or(err, errors.New("hep: udp batch wrote nothing"))
		}
	}
	return sent, segmented, next, nil, err
}

func (c *Client) write(conn net.Conn, b []byte) error {
	if err := conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return err
	}
	_, err := conn.Write(b)
	return err
}

// dial connects; for streams it also starts a reader that notices when the collector hangs up
// (a collector never sends anything, so any read result means the stream is over).
func (c *Client) dial() (net.Conn, *atomic.Bool, error) {
	d := &net.Dialer{Timeout: c.cfg.DialTimeout}
	var (
		conn net.Conn
		err  error
	)
	switch c.cfg.Transport {
	case UDP:
		conn, err = d.DialContext(c.ctx, "udp", c.cfg.Addr)
	case TCP:
		conn, err = d.DialContext(c.ctx, "tcp", c.cfg.Addr)
	case TLS:
		td := &tls.Dialer{NetDialer: d, Config: c.cfg.TLSConfig}
		conn, err = td.DialContext(c.ctx, "tcp", c.cfg.Addr)
	}
	if err != nil {
		return nil, nil, err
	}
	if c.cfg.Transport == UDP {
		return conn, nil, nil
	}
	dead := new(atomic.Bool)
	go func() {
		var buf [512]byte
		for {
			if _, err := conn.Read(buf[:]); err != nil {
				dead.Store(true)
				return
			}
		}
	}()
	return conn, dead, nil
}

// flush writes what is still queued at shutdown, each write bounded by WriteTimeout.
func (c *Client) flush(conn net.Conn) {
	for {
		var b *[]byte
		select {
		case b = <-c.queue:
		default:
			return
		}
		err := c.write(conn, *b)
		if err != nil {
			c.errs.Add(1)
			if !c.spoolOn() || !c.spoolBatch(*b, 1) {
				c.dropped.Add(1)
			}
			putBuf(b)
			return
		}
		putBuf(b)
		c.sent.Add(1)
	}
}

func (c *Client) dropAll() {
	for {
		select {
		case b := <-c.queue:
			putBuf(b)
			c.dropped.Add(1)
		default:
			return
		}
	}
}

// jitter returns a random duration in [d/2, d] ("equal jitter"), so that many relays do not
// reconnect to a restarted collector in lock-step.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(half+1)
}
