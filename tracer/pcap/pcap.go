// Package pcap writes traced MSRP connections and frames as rotating pcap files
// of synthetic Ethernet/IP/TCP packets that Wireshark dissects as MSRP over TCP.
package pcap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/google/gopacket/pcapgo"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultPrefix        = "msrpscope"
	DefaultMaxFileBytes  = 64 << 20
	DefaultMaxFileAge    = time.Hour
	DefaultMaxTotalBytes = 1 << 30
	DefaultSnapLen       = 262144
	DefaultSegmentSize   = 1460
	DefaultMaxFlows      = 100_000
	DefaultRetryMin      = time.Second
	DefaultRetryMax      = 30 * time.Second

	// MaxSegmentSize is the largest TCP payload per packet: with a 40-byte
	// IPv6 header and a 20-byte TCP header every IP packet stays within
	// 65535 bytes.
	MaxSegmentSize = 65535 - 40 - 20

	fileHeaderLen   = 24 // pcap global header
	recordHeaderLen = 16 // pcap per-packet header
	tcpWindow       = 65535
	ipTTL           = 64
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("pcap: writer closed")

// ErrBackoff is returned, without touching the disk, for a record refused
// while the Writer waits to retry after a failed create or write
// (Config.RetryMin, RetryMax). The record is counted in Stats.RecordsLost.
var ErrBackoff = errors.New("pcap: waiting to retry after a failed write")

// Config configures a Writer. Zero fields take the defaults above.
type Config struct {
	// Dir is the folder for the files; it is created if missing.
	Dir string
	// Prefix is the file name prefix (default "msrpscope"). Files are named
	// <Prefix>-<UTC yyyymmddThhmmssZ>-<seq>.pcap, seq being 6+ digits.
	Prefix string
	// MaxFileBytes: a file is rotated before a record (all the packets
	// of a Data, ConnOpen or ConnClose) would make it larger (default 64
	// MiB). A record larger than this starts a file and is split across
	// files where it fills one (if its rest is lost, the finished files
	// keep its first part).
	MaxFileBytes int64
	// MaxFileAge: a file is rotated, at the next write, once it is this old
	// by the time of the record written (by Now for a record of the zero
	// time) (default 1h; 0 = default, < 0 = never).
	MaxFileAge time.Duration
	// MaxTotalBytes bounds the total size of this prefix's files in Dir
	// (default 1 GiB; must be at least MaxFileBytes). At Open and at every
	// rotation the oldest of them are deleted until the finished files plus
	// one full current file (MaxFileBytes) fit. Files not matching the
	// prefix pattern are never touched.
	MaxTotalBytes int64
	// SnapLen is recorded in the file header; longer packets are truncated
	// in the capture (default 262144, so in practice never).
	SnapLen uint32
	// SegmentSize is the TCP payload size per packet, like an MSS (default
	// 1460, at most MaxSegmentSize). Data splits payloads into segments of
	// this size.
	SegmentSize int
	// MaxFlows caps the number of tracked TCP connections (default 100000).
	// Beyond it the least recently used connection's state is dropped; its
	// next packet gets fresh implicit sequence numbers, which Wireshark shows
	// as a new (or broken) stream.
	MaxFlows int
	// RetryMin and RetryMax bound the wait after a failed create or write
	// (a full disk, an unwritable folder): records are refused with
	// ErrBackoff, touching nothing, for RetryMin, then the next record
	// tries again; each further failure doubles the wait up to RetryMax
	// (defaults 1s and 30s). A successful write ends the waiting.
	RetryMin, RetryMax time.Duration
	// Now is the clock for file names, file age and retries (default
	// time.Now). Packet timestamps come from the t passed to each call instead.
	Now func() time.Time
}

// Stats are the Writer's counters since Open. Bytes, Packets and Records
// count what reached a file (was written to it, not only buffered).
type Stats struct {
	Files        int64  // files created (less those removed because nothing could be written to them)
	Bytes        int64  // bytes written to files, headers included
	Packets      int64  // packets written to files
	Records      int64  // calls (ConnOpen, ConnClose, Data) whose packets all reached a file
	Buffered     int64  // calls whose packets wait in the buffer for the next write to the file (Flush)
	RecordsLost  int64  // calls whose packets did not: refused (ErrBackoff, bad addresses) or lost in a failed write
	Rotations    int64  // rotations to a new file (size or age)
	FilesDeleted int64  // our old files deleted to honour MaxTotalBytes
	Errors       int64  // errors (write, create, delete, bad addresses)
	Flows        int    // connections currently tracked
	FlowsEvicted int64  // connections dropped because of MaxFlows
	CurrentFile  string // path of the file being written, "" if none
	LastError    string // text of the most recent error
	Failing      bool   // the last create or write failed and none succeeded since (Check failing counts too)
}

// Writer writes synthetic TCP streams to rotating pcap files. It is safe for
// concurrent use; all calls serialize on one mutex.
//
// Each packet is timestamped with the t given to the call (the zero time
// means Config.Now()). Sequence numbers live in the Writer, not the file, so
// streams continue across rotations. Memory is bounded: a connection's state
// (about 200 bytes with its map entry) is dropped at ConnClose and at most Config.MaxFlows
// connections are tracked, the least recently used being evicted.
//
// Output is buffered: call Flush to make written packets visible to readers
// of the current file; rotation and Close flush, and so does a record that
// finds the buffer full. The first file is created by the first packet, not
// by Open. Files are created mode 0600 (they hold whatever the frames
// carried: credentials, message bodies).
//
// Disk faults: a failed write cuts the file back to its last whole write,
// so it stays a valid capture (a file left with nothing is removed), counts
// the buffered records as lost, and the Writer refuses records (ErrBackoff)
// until Config.RetryMin, doubling to RetryMax, has passed; then it writes to
// the same file again, or creates the next one. A full disk or an unwritable
// folder so costs one attempt per wait, never a file per record.
type Writer struct {
	mu     sync.Mutex
	cfg    Config
	closed bool

	// current file
	f        *os.File
	pw       *pcapgo.Writer // writes into buf
	buf      appendBuf      // packets not yet written to f
	path     string
	rotateAt int64 // the file's creation (by cfg.Now) + MaxFileAge in Unix nanoseconds; 0: no age limit
	size     int64 // bytes of the file, buffered ones included
	durable  int64 // bytes of the file written to it
	reserved int64 // bytes of the file's blocks preallocated from its start (preallocStep)
	// noPrealloc: the file system cannot preallocate; not tried again.
	noPrealloc bool
	packets    int64 // packets of the file, buffered ones included
	rotateDue  bool  // age reached: rotate before the next packet
	seq        uint64
	prepared   bool // Dir listed once: seq continues after our files there

	// buffered, not yet written
	pendPackets, pendRecords int64
	// The records not yet wholly written (buffered, or the one being
	// written): where the first of them began in the current file and the
	// file's packets before it (cut.set: any). A failed write cuts the file
	// back to there (writeFailed), so a record that an earlier write began
	// (one longer than the buffer, or one a full buffer split) does not
	// stay half in the file. rec: the record being written (open: from
	// startRecord to its last packet) and where it began in this file (at
	// -1: no packet of it here yet). cut uses set, rec open.
	cut, rec struct {
		set, open   bool
		at, packets int64
	}

	// after a failure
	backoff time.Duration // the current wait; 0 after a successful write
	retryAt time.Time     // records are refused until then; zero: not waiting
	failing bool

	flows flowTable
	isn   uint64 // counter mixed into initial sequence numbers

	ipID uint16 // the last IPv4 packet's id

	stats Stats
}

// Open applies defaults to cfg and checks it. It does no I/O and fails only
// for a bad Config: the folder is prepared (created if missing, our oldest
// files there deleted beyond MaxTotalBytes) and the first file created when
// the first packet comes, or by Check.
func Open(cfg Config) (*Writer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	w := &Writer{cfg: cfg}
	w.flows.init(cfg.MaxFlows)
	w.pw = pcapgo.NewWriterNanos(&w.buf)
	return w, nil
}

// Check prepares the folder as the first file would and checks that a file
// can be created there, with a probe file it removes at once (so it also
// sees a read-only or immutable folder). A failure counts as a failed
// create: Stats.Failing, LastError, and the wait before the next attempt.
func (w *Writer) Check() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	err := w.prepare()
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(w.cfg.Dir, "."+w.cfg.Prefix+"-probe-*"); err == nil {
			f.Close()
			err = os.Remove(f.Name())
		}
		if err != nil {
			err = fmt.Errorf("pcap: folder %s not writable: %w", w.cfg.Dir, err)
		}
	}
	if err != nil {
		w.wait()
		return w.fail(err)
	}
	return nil
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("pcap: Config.Dir is empty")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = DefaultMaxFileBytes
	}
	if c.MaxFileAge == 0 {
		c.MaxFileAge = DefaultMaxFileAge
	}
	if c.MaxTotalBytes <= 0 {
		c.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if c.MaxTotalBytes < c.MaxFileBytes {
		return fmt.Errorf("pcap: MaxTotalBytes %d is below MaxFileBytes %d", c.MaxTotalBytes, c.MaxFileBytes)
	}
	if c.SnapLen == 0 {
		c.SnapLen = DefaultSnapLen
	}
	if c.SegmentSize <= 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.SegmentSize > MaxSegmentSize {
		return fmt.Errorf("pcap: SegmentSize %d exceeds %d", c.SegmentSize, MaxSegmentSize)
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(c.RetryMin, DefaultRetryMax)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// ConnOpen records the opening of a TCP connection from client to server as
// SYN, SYN-ACK and ACK, starting fresh sequence numbers for both directions
// (replacing any state the connection had).
func (w *Writer) ConnOpen(t time.Time, client, server netip.AddrPort) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.record(w.connOpen(t, client, server))
}

func (w *Writer) connOpen(t time.Time, client, server netip.AddrPort) error {
	if err := w.begin(t); err != nil {
		return err
	}
	ep, err := w.normalize(client, server)
	if err != nil {
		return w.fail(fmt.Errorf("pcap: conn open: %w", err))
	}
	c, fwd, existed := w.flows.lookup(ep, w.newISN)
	if existed {
		// Reopened without a close: start over with new sequence numbers.
		c.seq = [2]uint32{w.newISN(), w.newISN()}
	}
	cs, ss := dirIndex(fwd), dirIndex(!fwd)
	// The SYN consumes one sequence number in each direction.
	synC, synS := c.seq[cs], c.seq[ss]
	c.seq[cs]++
	c.seq[ss]++
	w.startRecord(0, 3)
	err = w.packet(t, ep, false, synC, 0, synFlag, nil)
	if err == nil {
		err = w.packet(t, ep, true, synS, c.seq[cs], synFlag|ackFlag, nil)
	}
	if err == nil {
		err = w.packet(t, ep, false, c.seq[cs], c.seq[ss], ackFlag, nil)
	}
	w.rec.open = false
	return err
}

// ConnClose records the closing of the connection as FIN-ACK from the client,
// FIN-ACK from the server and the client's final ACK, then forgets it. A
// connection never seen gets implicit sequence numbers first.
func (w *Writer) ConnClose(t time.Time, client, server netip.AddrPort) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.record(w.connClose(t, client, server))
}

func (w *Writer) connClose(t time.Time, client, server netip.AddrPort) error {
	if err := w.begin(t); err != nil {
		return err
	}
	ep, err := w.normalize(client, server)
	if err != nil {
		return w.fail(fmt.Errorf("pcap: conn close: %w", err))
	}
	c, fwd, _ := w.flows.lookup(ep, w.newISN)
	cs, ss := dirIndex(fwd), dirIndex(!fwd)
	finC, finS := c.seq[cs], c.seq[ss]
	w.flows.remove(c)
	w.startRecord(0, 3)
	err = w.packet(t, ep, false, finC, finS, finFlag|ackFlag, nil)
	if err == nil {
		err = w.packet(t, ep, true, finS, finC+1, finFlag|ackFlag, nil)
	}
	if err == nil {
		err = w.packet(t, ep, false, finC+1, finS+1, ackFlag, nil)
	}
	w.rec.open = false
	return err
}

// Data records payload sent from src to dst as PSH-ACK segments of at most
// Config.SegmentSize bytes, continuing the flow's sequence numbers and
// acknowledging everything the other direction sent. An unknown connection
// gets implicit state (no handshake is written). Empty payloads write nothing.
func (w *Writer) Data(t time.Time, src, dst netip.AddrPort, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.record(w.data(t, src, dst, payload))
}

// startRecord begins a record (a Data, ConnOpen or ConnClose) of npkts
// packets carrying payload bytes: one that would not fit whole in the
// current file starts the next one (its length at most this, with IPv6
// headers), so that none is split across two files but one longer than a
// file; and a failed write cuts the file back to the record's start (rec,
// cut). The caller sets rec.open false when its last packet is buffered
// or failed.
func (w *Writer) startRecord(payload, npkts int) {
	if w.packets > 0 && w.size+int64(payload+npkts*(recordHeaderLen+ethLen+ip6Len+tcpLen)) > w.cfg.MaxFileBytes {
		w.rotateDue = true
	}
	w.rec.open, w.rec.at = true, -1 // at: set by its first packet (packet)
}

func (w *Writer) data(t time.Time, src, dst netip.AddrPort, payload []byte) error {
	if err := w.begin(t); err != nil {
		return err
	}
	ep, err := w.normalize(src, dst)
	if err != nil {
		return w.fail(fmt.Errorf("pcap: data: %w", err))
	}
	if len(payload) == 0 {
		return nil
	}
	c, fwd, _ := w.flows.lookup(ep, w.newISN)
	s, r := dirIndex(fwd), dirIndex(!fwd)
	nseg := 1
	if len(payload) > w.cfg.SegmentSize {
		nseg = (len(payload) + w.cfg.SegmentSize - 1) / w.cfg.SegmentSize
	}
	w.startRecord(len(payload), nseg)
	for len(payload) > 0 {
		n := min(len(payload), w.cfg.SegmentSize)
		seq := c.seq[s]
		c.seq[s] += uint32(n)
		if err := w.packet(t, ep, false, seq, c.seq[r], pshFlag|ackFlag, payload[:n]); err != nil {
			// The bytes not written still count, so the stream shows a
			// gap of their size, as a lossy capture would.
			c.seq[s] += uint32(len(payload) - n)
			w.rec.open = false
			return err
		}
		payload = payload[n:]
	}
	w.rec.open = false
	return nil
}

// Flush writes buffered packets to the current file.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.flush()
}

// Close flushes and closes the current file. Further calls return ErrClosed;
// a second Close returns nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.flows.init(0)
	return w.closeFile()
}

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Buffered = w.pendRecords
	s.Flows = w.flows.len()
	s.FlowsEvicted = w.flows.evicted
	s.CurrentFile = w.path
	s.Failing = w.failing
	return s
}

// record counts the outcome of one public call: its packets wait in the
// buffer, or it is lost. Called with w.mu held.
func (w *Writer) record(err error) error {
	switch {
	case err == nil:
		w.pendRecords++
	case !errors.Is(err, ErrClosed):
		w.stats.RecordsLost++
	}
	return err
}

// wait starts or lengthens the wait after a failed create or write.
func (w *Writer) wait() {
	w.failing = true
	if w.backoff == 0 {
		w.backoff = w.cfg.RetryMin
	} else {
		w.backoff = min(2*w.backoff, w.cfg.RetryMax)
	}
	w.retryAt = w.cfg.Now().Add(w.backoff)
}

// waiting reports whether records are refused now; once the wait is over
// the next record tries again.
func (w *Writer) waiting() bool {
	if w.retryAt.IsZero() {
		return false
	}
	if w.cfg.Now().Before(w.retryAt) {
		return true
	}
	w.retryAt = time.Time{}
	return false
}

// appendBuf is the Writer's buffer: pcapgo writes packets into it and
// flush writes it to the file in one call, so a failed write is known to
// the byte.
type appendBuf struct{ b []byte }

func (a *appendBuf) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// begin checks the writer is usable and marks an old file for rotation,
// its age taken at t, the record's time (Now for the zero time: the clock
// is read once per record at most, not per packet, and not at all when
// the relay stamped the record). Called with w.mu held at the start of
// each public call.
func (w *Writer) begin(t time.Time) error {
	if w.closed {
		return ErrClosed
	}
	if w.f != nil && w.rotateAt != 0 && w.packets > 0 {
		if t.IsZero() {
			t = w.cfg.Now()
		}
		// Wall clock nanoseconds, not t.Sub: cheaper, and a record's age
		// is by its stamp anyway.
		if t.UnixNano() >= w.rotateAt {
			w.rotateDue = true
		}
	}
	return nil
}

func (w *Writer) fail(err error) error {
	w.stats.Errors++
	w.stats.LastError = err.Error()
	return err
}

// newISN returns a pseudo-random, reproducible initial sequence number.
func (w *Writer) newISN() uint32 {
	w.isn++
	z := w.isn * 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return uint32(z ^ (z >> 31))
}

func dirIndex(fwd bool) int {
	if fwd {
		return 0
	}
	return 1
}
