// Package spool is a bounded, durable, ordered on-disk queue of opaque records:
// what a sink keeps while its destination is unreachable, replayed in order on recovery.
//
// # Durability
//
// Append returns nil only after the record is written and fsynced (and, for a
// new segment file, the directory fsynced too): from then on it survives a
// process crash and, as far as the file system honours fsync, a power loss.
// Ack persists the consumer's position durably (one of the ack file's two
// slots overwritten and fdatasynced, see format.go) before it returns: a
// record whose Ack returned nil is never replayed again, not even after a
// restart. Append may run concurrently with Peek and Ack (a writer goroutine
// appending while a replay goroutine drains); Peek and Ack are meant for one
// consumer.
//
// # At-least-once
//
// Delivery from the spool is at-least-once: a consumer that sends the record
// Peek returned and then crashes before Ack returns gets the same record again
// after a restart. A consumer that can recognise a record it already
// delivered (the ClickHouse sink checks a batch id) turns this into exactly
// once; HEP cannot (HEP has no acknowledgement and no id), so a HEP collector
// may see such a packet twice.
//
// # Full
//
// MaxBytes bounds the segment files on disk, records and framing included,
// acknowledged records of a segment not yet deleted included (a segment file
// is deleted once all its records are acknowledged). An Append that would
// exceed it is refused with ErrFull, counted (Stats.Full) and logged
// (rate-limited); the spool keeps what it holds, so it is the newest records
// that are dropped, by the caller.
//
// # Corruption
//
// Every record carries CRC-32C checksums of its header and its payload. Open
// scans every segment: a record whose checksum does not match is skipped,
// counted (Stats.Corrupt, one per damaged region, which may span several
// records when a length was damaged) and logged, and the records after it
// are still delivered; a torn tail (a record cut short by a crash while it was being
// appended, so its Append never returned nil) is counted the same way and
// truncated away. A file named like a segment that is unreadable or not a
// segment is counted (Stats.CorruptFiles), logged and renamed aside with the
// suffix ".corrupt" (kept for inspection, outside the bound; its records are
// lost), except a file shorter than the segment header holding a prefix of
// it: a crash while the segment was created, before any record; it is
// removed. Other unknown files are logged and left alone. An unreadable ack
// file is counted the same way and every record is replayed (at-least-once). A record found corrupt later, when Peek
// reads it, is skipped and counted as well. No corruption makes Open or Peek
// fail or panic; Peek returns only I/O errors.
//
// # Files
//
// Dir holds segment files named by a 20-digit sequence number plus ".seg"
// (see format.go for the layout), the ack file "ack" and "lock", locked
// (flock) while a Spool has the directory open: a second Open of the same
// directory fails. Files are created 0600, Dir 0700. After Open, appends
// always go to a new segment.
package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Spool.
type Config struct {
	// Dir is the spool directory, created (0700) if missing. Only one Spool
	// may use a directory at a time.
	Dir string
	// MaxBytes bounds the bytes of the segment files (records + framing);
	// an Append beyond it returns ErrFull. 0 means DefaultMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size of a segment file before the next one is
	// started; 0 means DefaultSegmentBytes; at most MaxBytes. A record
	// larger than it gets a segment of its own. Open reads one whole
	// segment into memory at a time.
	SegmentBytes int64
	// Logger receives corruption and full reports (rate-limited); nil discards.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultSegmentBytes = 8 << 20
)

var (
	// ErrFull is returned by Append when the record would take the spool
	// beyond MaxBytes.
	ErrFull = errors.New("spool: full")
	// ErrTooLarge is returned by Append for a record that can never fit
	// (its framed size exceeds MaxBytes, or it exceeds MaxRecord).
	ErrTooLarge = errors.New("spool: record too large")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrNoPeek is returned by Ack without a preceding successful Peek.
	ErrNoPeek = errors.New("spool: Ack without Peek")
)

// Stats are the spool's counters; Appended, Acked, Full and Corrupt count
// since Open.
type Stats struct {
	Records      int   // records waiting (not yet acknowledged)
	Bytes        int64 // bytes of the segment files on disk
	Appended     int64 // records appended
	Acked        int64 // records acknowledged
	Full         int64 // Appends refused (ErrFull, ErrTooLarge)
	Corrupt      int64 // corrupt records or regions skipped, torn tails included
	CorruptFiles int64 // segment files that could not be read at all
}

// segment is one segment file.
type segment struct {
	seq  uint64
	path string
	f    *os.File // opened lazily for reading; the writer's handle when active
	size int64    // bytes on disk (committed: only fsynced records count)
	offs []int64  // start offsets of the records not yet acknowledged or skipped ...
	head int      // ... from offs[head] on
}

// Spool is a durable on-disk queue. Its methods are safe for concurrent use;
// Peek and Ack are meant for one consumer at a time (they serialise).
type Spool struct {
	cfg Config
	log *slog.Logger

	wmu  sync.Mutex // serialises Append (file writes, rotation)
	wbuf []byte

	rmu    sync.Mutex // serialises Peek and Ack
	rbuf   []byte
	peeked bool
	peekAt ackPos // position after the peeked record
	ackF   *os.File
	ackGen uint64 // generation of the newest slot
	abuf   [ackSize]byte

	mu      sync.Mutex // guards the fields below; held only briefly, never over fsync
	segs    []*segment
	active  *segment // the segment Append writes to; nil: the next Append starts one
	nextSeq uint64
	records int
	bytes   int64
	stats   Stats
	closed  bool
	lock    *os.File // holds the directory lock

	fullLog, corruptLog limiter
}

// Open opens (creating if needed) the spool in cfg.Dir and recovers the
// records not yet acknowledged, in order.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: Dir is required")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	cfg.SegmentBytes = min(cfg.SegmentBytes, cfg.MaxBytes)
	s := &Spool{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("spool", cfg.Dir)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Spool) recover() error {
	gen, ack := s.readAck()
	if err := s.initAck(gen, ack); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var seqs []uint64
	maxSeq := ack.seq
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "ack", name == "lock":
		case name == "ack.tmp":
			os.Remove(filepath.Join(s.cfg.Dir, name))
		case strings.HasSuffix(name, ".seg.corrupt"):
			// Moved aside by an earlier Open: its number is not reused.
			if seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg.corrupt"), 10, 64); err == nil {
				maxSeq = max(maxSeq, seq)
			}
		case strings.HasSuffix(name, ".seg"):
			seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
			if err != nil || len(name) != 24 {
				s.log.Warn("spool: unknown file ignored", "file", name)
				continue
			}
			seqs = append(seqs, seq)
			maxSeq = max(maxSeq, seq)
		default:
			s.log.Warn("spool: unknown file ignored", "file", name)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		path := s.segPath(seq)
		if seq < ack.seq {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("spool: cannot remove acknowledged segment", "file", path, "err", err)
			}
			continue
		}
		data, err := os.ReadFile(path)
		if err == nil && len(data) < len(segMagic) && string(data) == segMagic[:len(data)] {
			// A crash while newSegment created it: no Append wrote to it.
			if err := os.Remove(path); err != nil {
				s.log.Warn("spool: cannot remove segment cut short at its creation", "file", path, "err", err)
			} else {
				s.log.Info("spool: removed segment cut short at its creation", "file", path, "bytes", len(data))
			}
			continue
		}
		var r scanResult
		if err == nil {
			r, err = scanSegment(data)
		}
		if err != nil {
			s.stats.CorruptFiles++
			aside := path + ".corrupt"
			if rerr := os.Rename(path, aside); rerr != nil {
				aside = ""
			}
			s.log.Error("spool: unreadable segment skipped", "file", path, "moved_to", aside, "err", err)
			continue
		}
		size := int64(len(data))
		if r.corrupt > 0 {
			s.stats.Corrupt += int64(r.corrupt)
			s.log.Error("spool: corrupt records skipped", "file", path, "regions", r.corrupt, "torn_tail", r.torn)
		}
		if r.torn && r.validEnd < size {
			if err := truncateSync(path, r.validEnd); err != nil {
				s.log.Warn("spool: cannot truncate torn tail", "file", path, "err", err)
			} else {
				size = r.validEnd
			}
		}
		offs := r.offs
		if seq == ack.seq {
			i, _ := slices.BinarySearch(offs, ack.off)
			offs = offs[i:]
		}
		if len(offs) == 0 {
			if err := os.Remove(path); err != nil {
				s.log.Warn("spool: cannot remove acknowledged segment", "file", path, "err", err)
			}
			continue
		}
		s.segs = append(s.segs, &segment{seq: seq, path: path, size: size, offs: slices.Clip(offs)})
		s.records += len(offs)
		s.bytes += size
	}
	s.nextSeq = maxSeq + 1
	return nil
}

func (s *Spool) readAck() (uint64, ackPos) {
	path := filepath.Join(s.cfg.Dir, "ack")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ackPos{}
	}
	if err == nil {
		gen, a, derr := decodeAck(b)
		if derr == nil {
			return gen, a
		}
		err = derr
	}
	// Without a readable position every record is replayed: at-least-once.
	s.stats.CorruptFiles++
	s.log.Error("spool: ack file unreadable, replaying every record", "file", path, "err", err)
	return 0, ackPos{}
}

// initAck rewrites the ack file with a in both slots (atomically: a
// temporary file, fsync, rename, fsync of the directory) and opens it for
// Ack's in-place updates.
func (s *Spool) initAck(gen uint64, a ackPos) error {
	path := filepath.Join(s.cfg.Dir, "ack")
	tmp := path + ".tmp"
	b := make([]byte, ackFile)
	encodeAck(b[ackSlot(gen+1):], gen+1, a)
	encodeAck(b[ackSlot(gen+2):], gen+2, a)
	err := os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(s.cfg.Dir)
	}
	if err == nil {
		s.ackF, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return fmt.Errorf("spool: ack file: %w", err)
	}
	s.ackGen = gen + 2
	return nil
}

func (s *Spool) segPath(seq uint64) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%020d.seg", seq))
}

// Append stores a copy of rec durably: when it returns nil the record is
// written and fsynced. It returns ErrFull when the spool holds MaxBytes.
func (s *Spool) Append(rec []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	frame := int64(recHdrSize + len(rec))

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	a := s.active
	rotate := a == nil || (a.size+frame > s.cfg.SegmentBytes && a.size > int64(len(segMagic)))
	need := frame
	if rotate {
		need += int64(len(segMagic))
		// Seal the active segment; if all its records are acknowledged it
		// is deleted now, freeing its bytes (a drained spool accepts again).
		s.active = nil
		s.headLocked()
	}
	var refuse error
	switch {
	case len(rec) > MaxRecord || frame+int64(len(segMagic)) > s.cfg.MaxBytes:
		refuse = ErrTooLarge
	case s.bytes+need > s.cfg.MaxBytes:
		refuse = ErrFull
	}
	if refuse != nil {
		s.stats.Full++
		full, held := s.stats.Full, s.bytes
		s.mu.Unlock()
		if ok, suppressed := s.fullLog.allow(); ok {
			s.log.Warn("spool: record dropped", "err", refuse, "bytes", len(rec), "held_bytes", held,
				"max_bytes", s.cfg.MaxBytes, "dropped_total", full, "suppressed_logs", suppressed)
		}
		return refuse
	}
	s.mu.Unlock()

	if rotate {
		var err error
		if a, err = s.newSegment(); err != nil {
			return err
		}
	}
	buf := slices.Grow(s.wbuf[:0], int(frame))[:frame]
	putHeader(buf[:recHdrSize], rec)
	copy(buf[recHdrSize:], rec)
	s.wbuf = buf
	off := a.size // only this goroutine (holding wmu) changes a.size
	_, err := a.f.WriteAt(buf, off)
	if err == nil {
		err = a.f.Sync()
	}
	if err != nil {
		// What reached the file is unknown (and after a failed fsync the page
		// cache is not to be trusted): leave the segment, the next Append
		// starts a new one; a reopen's scan skips any partial record.
		s.mu.Lock()
		if fi, serr := a.f.Stat(); serr == nil && fi.Size() > a.size {
			s.bytes += fi.Size() - a.size
			a.size = fi.Size()
		}
		if s.active == a {
			s.active = nil
		}
		s.mu.Unlock()
		return fmt.Errorf("spool: append to %s: %w", a.path, err)
	}
	s.mu.Lock()
	a.offs = append(a.offs, off)
	a.size += frame
	s.bytes += frame
	s.records++
	s.stats.Appended++
	s.mu.Unlock()
	return nil
}

// newSegment creates the next segment file durably and makes it the active one.
func (s *Spool) newSegment() (*segment, error) {
	s.mu.Lock()
	seq := s.nextSeq
	s.nextSeq++
	s.mu.Unlock()
	path := s.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: new segment: %w", err)
	}
	if _, err = f.Write([]byte(segMagic)); err == nil {
		if err = f.Sync(); err == nil {
			err = syncDir(s.cfg.Dir)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("spool: new segment %s: %w", path, err)
	}
	seg := &segment{seq: seq, path: path, f: f, size: int64(len(segMagic))}
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.active = seg
	s.bytes += seg.size
	s.mu.Unlock()
	return seg, nil
}

// Peek returns the oldest record not yet acknowledged; ok is false when the
// spool is empty. rec is valid until the next Peek or Ack. Peeking again
// without Ack returns the same record. A record found corrupt is skipped
// (counted and logged).
func (s *Spool) Peek() (rec []byte, ok bool, err error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.peeked = false
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, ErrClosed
		}
		seg := s.headLocked()
		if seg == nil {
			s.mu.Unlock()
			return nil, false, nil
		}
		off := seg.offs[seg.head]
		if seg.f == nil {
			f, err := os.Open(seg.path)
			if err != nil {
				s.mu.Unlock()
				return nil, false, fmt.Errorf("spool: %w", err)
			}
			seg.f = f
		}
		f, limit := seg.f, seg.size
		s.mu.Unlock()

		rec, n, err := s.readRecord(f, off, limit)
		if err != nil {
			return nil, false, fmt.Errorf("spool: read %s at %d: %w", seg.path, off, err)
		}
		if rec == nil {
			s.mu.Lock()
			seg.head++
			s.records--
			s.stats.Corrupt++
			total := s.stats.Corrupt
			s.mu.Unlock()
			if ok, suppressed := s.corruptLog.allow(); ok {
				s.log.Error("spool: corrupt record skipped", "file", seg.path, "offset", off,
					"corrupt_total", total, "suppressed_logs", suppressed)
			}
			continue
		}
		s.peeked = true
		s.peekAt = ackPos{seq: seg.seq, off: off + recHdrSize + n}
		return rec, true, nil
	}
}

// headLocked drops exhausted segments other than the active one and returns
// the segment holding the oldest waiting record, or nil.
func (s *Spool) headLocked() *segment {
	for len(s.segs) > 0 {
		seg := s.segs[0]
		if seg.head < len(seg.offs) {
			return seg
		}
		if seg == s.active {
			return nil
		}
		// Every record acknowledged (or skipped): the ack file already
		// covers them, or a reopen finds them acknowledged or corrupt.
		if seg.f != nil {
			seg.f.Close()
		}
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot remove segment", "file", seg.path, "err", err)
		} else {
			s.bytes -= seg.size
		}
		s.segs[0] = nil
		s.segs = s.segs[1:]
	}
	return nil
}

// readRecord reads the record at off; rec is nil when it is corrupt.
func (s *Spool) readRecord(f *os.File, off, limit int64) (rec []byte, n int64, err error) {
	var h [recHdrSize]byte
	if off+recHdrSize > limit {
		return nil, 0, nil
	}
	if _, err := f.ReadAt(h[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	ln, pcrc, ok := parseHeader(h[:])
	if !ok || off+recHdrSize+int64(ln) > limit {
		return nil, 0, nil
	}
	buf := slices.Grow(s.rbuf[:0], int(ln))[:ln]
	s.rbuf = buf
	if _, err := f.ReadAt(buf, off+recHdrSize); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	if checksum(buf) != pcrc {
		return nil, 0, nil
	}
	return buf, int64(ln), nil
}

// Ack marks the record the last Peek returned as delivered, durably: once it
// returns nil no restart replays that record. Segments whose records are all
// acknowledged are deleted.
func (s *Spool) Ack() error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if !s.peeked {
		return ErrNoPeek
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := s.writeAck(s.peekAt); err != nil {
		return err
	}
	s.peeked = false
	s.mu.Lock()
	// Peek returned a record of the head segment and it is still there:
	// Append (rotating) drops only segments with no record waiting.
	seg := s.segs[0]
	seg.head++
	s.records--
	s.stats.Acked++
	s.headLocked()
	s.mu.Unlock()
	return nil
}

// ackSlot is the offset of the slot generation gen is written to: the slots
// alternate, so each write overwrites the older one.
func ackSlot(gen uint64) int64 { return int64(gen%2) * ackStride }

// writeAck overwrites the older slot with the next generation and syncs it.
func (s *Spool) writeAck(a ackPos) error {
	gen := s.ackGen + 1
	encodeAck(s.abuf[:], gen, a)
	_, err := s.ackF.WriteAt(s.abuf[:], ackSlot(gen))
	if err == nil {
		err = fdatasync(s.ackF)
	}
	if err != nil {
		// The slot may be torn; the other one keeps the previous position.
		return fmt.Errorf("spool: ack: %w", err)
	}
	s.ackGen = gen
	return nil
}

// Len returns the number of records waiting.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records
}

// Stats returns the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Records = s.records
	st.Bytes = s.bytes
	return st
}

// Close closes the files. Everything appended is already durable.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.closeFiles()
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		if seg.f != nil {
			errs = append(errs, seg.f.Close())
			seg.f = nil
		}
	}
	if s.ackF != nil {
		errs = append(errs, s.ackF.Close())
		s.ackF = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// limiter lets one log line through per interval and counts the others.
type limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const logInterval = 10 * time.Second

func (l *limiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < logInterval {
		l.suppressed++
		return false, 0
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return true, suppressed
}
