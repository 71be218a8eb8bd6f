// Package pcap writes traced MSRP connections and frames as rotating pcap files
// of synthetic Ethernet/IP/TCP packets that Wireshark dissects as MSRP over TCP.
package pcap

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
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

// Config configures a Writer. Zero fields take the defaults above.
type Config struct {
	// Dir is the folder for the files; it is created if missing.
	Dir string
	// Prefix is the file name prefix (default "msrpscope"). Files are named
	// <Prefix>-<UTC yyyymmddThhmmssZ>-<seq>.pcap, seq being 6+ digits.
	Prefix string
	// MaxFileBytes: a file is rotated before a packet would make it larger
	// (default 64 MiB). A single packet larger than this still gets written,
	// alone in its file.
	MaxFileBytes int64
	// MaxFileAge: a file is rotated, at the next write, once it is this old
	// by Now (default 1h; 0 = default, < 0 = never).
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
	// Now is the clock for file names and file age (default time.Now).
	// Packet timestamps come from the t passed to each call instead.
	Now func() time.Time
}

// Stats are the Writer's counters since Open.
type Stats struct {
	Files        int64  // files created
	Bytes        int64  // bytes written to files, headers included
	Packets      int64  // packets written
	Rotations    int64  // rotations to a new file (size, age or after an error)
	FilesDeleted int64  // our old files deleted to honour MaxTotalBytes
	Errors       int64  // errors (write, create, delete, bad addresses)
	Flows        int    // connections currently tracked
	FlowsEvicted int64  // connections dropped because of MaxFlows
	CurrentFile  string // path of the file being written, "" if none
	LastError    string // text of the most recent error
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
// of the current file; rotation and Close flush.
type Writer struct {
	mu     sync.Mutex
	cfg    Config
	closed bool

	// current file
	f         *os.File
	bw        *bufio.Writer
	pw        *pcapgo.Writer
	path      string
	created   time.Time // by cfg.Now
	size      int64
	packets   int64
	rotateDue bool // age reached or last write failed: rotate before the next packet
	seq       uint64

	flows flowTable
	isn   uint64 // counter mixed into initial sequence numbers

	// packet building, reused for every packet
	sbuf    gopacket.SerializeBuffer
	eth     layers.Ethernet
	ip4     layers.IPv4
	ip6     layers.IPv6
	tcp     layers.TCP
	payload gopacket.Payload
	stack4  []gopacket.SerializableLayer
	stack6  []gopacket.SerializableLayer
	srcIP   [16]byte
	dstIP   [16]byte
	srcMAC  [6]byte
	dstMAC  [6]byte
	ipID    uint16

	stats Stats
}

// Open applies defaults to cfg, creates cfg.Dir if needed, deletes our
// oldest files there beyond MaxTotalBytes and starts the first file.
func Open(cfg Config) (*Writer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pcap: create folder: %w", err)
	}
	w := &Writer{cfg: cfg, sbuf: gopacket.NewSerializeBufferExpectedSize(64, cfg.SegmentSize)}
	w.flows.init(cfg.MaxFlows)
	w.stack4 = []gopacket.SerializableLayer{&w.eth, &w.ip4, &w.tcp, &w.payload}
	w.stack6 = []gopacket.SerializableLayer{&w.eth, &w.ip6, &w.tcp, &w.payload}
	w.eth.SrcMAC = w.srcMAC[:]
	w.eth.DstMAC = w.dstMAC[:]
	w.ip4 = layers.IPv4{Version: 4, TTL: ipTTL, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment}
	w.ip6 = layers.IPv6{Version: 6, HopLimit: ipTTL, NextHeader: layers.IPProtocolTCP}

	files, err := w.ourFiles()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		w.seq = max(w.seq, f.seq)
	}
	w.enforceTotal(files)
	if err := w.openFile(); err != nil {
		return nil, err
	}
	return w, nil
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
	if err := w.begin(); err != nil {
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
	if err := w.packet(t, ep, false, synC, 0, synFlag, nil); err != nil {
		return err
	}
	if err := w.packet(t, ep, true, synS, c.seq[cs], synFlag|ackFlag, nil); err != nil {
		return err
	}
	return w.packet(t, ep, false, c.seq[cs], c.seq[ss], ackFlag, nil)
}

// ConnClose records the closing of the connection as FIN-ACK from the client,
// FIN-ACK from the server and the client's final ACK, then forgets it. A
// connection never seen gets implicit sequence numbers first.
func (w *Writer) ConnClose(t time.Time, client, server netip.AddrPort) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.begin(); err != nil {
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
	if err := w.packet(t, ep, false, finC, finS, finFlag|ackFlag, nil); err != nil {
		return err
	}
	if err := w.packet(t, ep, true, finS, finC+1, finFlag|ackFlag, nil); err != nil {
		return err
	}
	return w.packet(t, ep, false, finC+1, finS+1, ackFlag, nil)
}

// Data records payload sent from src to dst as PSH-ACK segments of at most
// Config.SegmentSize bytes, continuing the flow's sequence numbers and
// acknowledging everything the other direction sent. An unknown connection
// gets implicit state (no handshake is written). Empty payloads write nothing.
func (w *Writer) Data(t time.Time, src, dst netip.AddrPort, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.begin(); err != nil {
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
	for len(payload) > 0 {
		n := min(len(payload), w.cfg.SegmentSize)
		seq := c.seq[s]
		c.seq[s] += uint32(n)
		if err := w.packet(t, ep, false, seq, c.seq[r], pshFlag|ackFlag, payload[:n]); err != nil {
			// The bytes not written still count, so the stream shows a
			// gap of their size, as a lossy capture would.
			c.seq[s] += uint32(len(payload) - n)
			return err
		}
		payload = payload[n:]
	}
	return nil
}

// Flush writes buffered packets to the current file.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.f == nil {
		return nil
	}
	if err := w.bw.Flush(); err != nil {
		w.rotateDue = true
		return w.fail(fmt.Errorf("pcap: flush %s: %w", w.path, err))
	}
	return nil
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
	if err := w.closeFile(); err != nil {
		return w.fail(err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Flows = w.flows.len()
	s.FlowsEvicted = w.flows.evicted
	s.CurrentFile = w.path
	return s
}

// begin checks the writer is usable and marks an old file for rotation. Called with
// w.mu held at the start of each public call.
func (w *Writer) begin() error {
	if w.closed {
		return ErrClosed
	}
	if w.f != nil && w.cfg.MaxFileAge > 0 && w.packets > 0 && w.cfg.Now().Sub(w.created) >= w.cfg.MaxFileAge {
		w.rotateDue = true
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
