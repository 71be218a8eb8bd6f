// Package pcapsink is the tracer's "pcap" sink kind: rotating pcap files
// (tracer/pcap) written from a bounded queue, never on the relay's path.
package pcapsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/pcap"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// Kind is the sink kind; register it with sink.Register("pcap", pcapsink.Kind{}).
type Kind struct{}

// Config is a pcap sink's own configuration block (besides type and queue).
// Zero fields take tracer/pcap's defaults.
type Config struct {
	Dir           string        `yaml:"dir" json:"dir"`                         // default "." (the working directory)
	Prefix        string        `yaml:"prefix" json:"prefix"`                   // file name prefix, default "msrpscope"
	MaxFileBytes  int64         `yaml:"max_file_bytes" json:"max_file_bytes"`   // rotate above this
	MaxFileAge    time.Duration `yaml:"max_file_age" json:"max_file_age"`       // rotate after this
	MaxTotalBytes int64         `yaml:"max_total_bytes" json:"max_total_bytes"` // delete the oldest files above this
	FrameLimit    int           `yaml:"frame_limit" json:"frame_limit"`         // bytes of a frame kept; 0: what the relay captured
}

// Decode implements sink.Factory.
func (Kind) Decode(decode func(v any) error) (any, error) {
	var c Config
	if err := decode(&c); err != nil {
		return nil, err
	}
	if c.MaxFileBytes < 0 || c.MaxTotalBytes < 0 {
		return nil, errors.New("pcap max_file_bytes and max_total_bytes must not be negative")
	}
	if c.MaxFileBytes > 0 && c.MaxTotalBytes > 0 && c.MaxTotalBytes < c.MaxFileBytes {
		return nil, fmt.Errorf("pcap max_total_bytes (%d) is below max_file_bytes (%d)", c.MaxTotalBytes, c.MaxFileBytes)
	}
	if c.FrameLimit < 0 {
		return nil, errors.New("pcap frame_limit must not be negative")
	}
	if c.Dir == "" {
		c.Dir = "."
	}
	return c, nil
}

// Open implements sink.Factory. It creates no file (the first record
// does), but checks that one can be created in the folder: when not (the
// folder cannot be created, is read-only, ...) the sink starts degraded, as
// every sink kind does for a destination it cannot reach (tracer/sink), and
// retries with the first records after a wait; only a bad configuration is
// an error.
func (Kind) Open(_ context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, fmt.Errorf("pcap sink %q: configuration of type %T", o.Name, cfg)
	}
	w, err := pcap.Open(pcap.Config{Dir: c.Dir, Prefix: c.Prefix, MaxFileBytes: c.MaxFileBytes,
		MaxFileAge: c.MaxFileAge, MaxTotalBytes: c.MaxTotalBytes})
	if err != nil {
		return nil, err
	}
	p := start(o, w, c.FrameLimit)
	if err := w.Check(); err != nil {
		p.log.Warn("pcap sink starts degraded: its folder is not writable; records are dropped until it is",
			slog.String("dir", c.Dir), slog.String("error", err.Error()))
	}
	return p, nil
}

// logEvery is the least time between two log lines about failed writes.
const logEvery = 10 * time.Second

// The queue lingers only under a load (QueueOptions.Adaptive: its last
// batch held two records or more). Under a light load it flushes as soon as it runs
// empty: what was written reaches the file at once, and Queued 0 means
// every record is in the file (or counted lost). Under a high load it
// flushes when its buffer is full (1 MiB, one system call) or once the
// queue has stayed empty for idleFlush, not at each short pause between
// batches (at 200,000 records/s: writes of some 20 KB every 200 µs, which
// cost the kernel about twice as much per byte). Under a
// high load the writer wakes once per linger for a batch instead of once
// per few records (a bench of 2 pairs × 64 SENDs in flight: about 4,000
// wake-ups instead of 24,000 for 1.2 million records). (A linger at every
// load kept records waiting under a steady light load, so that Queued was
// rarely 0.)

// linger is how long records may gather for the writer under a high load
// (the queue's last batch was large); under a light load it takes them at
// once.
const linger = 200 * time.Microsecond

// idleFlush is how long the queue stays empty after a large batch before
// the writer flushes.
const idleFlush = 2 * time.Millisecond

// pcapSink writes to rotating pcap files from its queue's goroutine. The
// Writer counts what reached a file (Sent) and what was lost (Dropped, with
// the queue's drops); after a failed write it refuses records for a while
// (pcap.ErrBackoff) instead of retrying each one.
type pcapSink struct {
	name  string
	limit int
	w     *pcap.Writer
	q     *sink.Queue[rec] // its slots keep their small buffers: Put allocates only while a slot is first used
	arena []byte           // what is left of the last slotArena allocation (newBuf)
	large largeBufs        // buffers of records longer than slotBuf, bounded
	log   *slog.Logger
	// Owned by the queue's goroutine: failed writes since the last log line.
	unlogged  int
	lastLog   time.Time
	logFailed bool // a failure was logged and no recovery since
	// beforeWrite, when set (by tests), runs on the queue's goroutine
	// before each record is written.
	beforeWrite func()
	now         func() time.Time // for the log's rate limit; tests set it

}

type rec struct {
	kind     event.Kind
	t        time.Time
	src, dst netip.AddrPort // frame: sender → receiver; connection: initiator → acceptor
	data     []byte         // the slot's own buffer (slotBuf bytes), for records that fit
	big      []byte         // else the record's buffer from largeBufs, given back once written
}

func start(o sink.Options, w *pcap.Writer, limit int) *pcapSink {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	size := o.QueueSize
	if size <= 0 {
		size = sink.DefaultQueueSize
	}
	p := &pcapSink{name: o.Name, limit: limit, w: w, log: log.With(slog.String("sink", o.Name)), now: time.Now}
	p.large.limit = maxLargeBytes
	p.q = sink.NewQueue(size, p.write, sink.QueueOptions{Idle: p.flush, IdleDelay: idleFlush, Linger: linger, Adaptive: true})
	return p
}

func (p *pcapSink) Put(e *event.Event) {
	switch e.Kind {
	case event.Accepted, event.Connected, event.Closed, event.FrameIn, event.FrameOut:
	default:
		return // pcap shows TCP streams: only their opening, data and closing
	}
	if e.Kind == event.Closed && !e.Conn.Local.IsValid() {
		return
	}
	if e.Frame != nil && frameBytes(e.Frame, p.limit) > slotBuf {
		p.putLarge(e)
		return
	}
	p.q.PutFunc(func(r *rec) { // under the queue's lock
		r.kind, r.t = e.Kind, e.Time
		r.src, r.dst = sink.Endpoints(e)
		if r.data == nil {
			r.data = p.newBuf()
		}
		r.data = r.data[:0]
		if e.Frame != nil {
			r.data = sink.AppendFrame(r.data, e.Frame, p.limit)
		}
	})
}

// putLarge queues a frame longer than a slot's buffer in a buffer of
// p.large, copied before the queue's lock is taken. A frame whose buffer
// does not fit in maxLargeBytes is dropped (counted by p.large).
func (p *pcapSink) putLarge(e *event.Event) {
	b, ok := p.large.get(frameBytes(e.Frame, p.limit))
	if !ok {
		return
	}
	b = sink.AppendFrame(b, e.Frame, p.limit)
	if !p.q.PutFunc(func(r *rec) {
		r.kind, r.t = e.Kind, e.Time
		r.src, r.dst = sink.Endpoints(e)
		r.big = b
	}) {
		p.large.put(b) // the queue is full or closed: counted there
	}
}

// Record buffers start as slotBuf bytes of an arena of slotArena, so that
// a queue's slots, filled for the first time, allocate once per
// slotArena/slotBuf records; a longer frame takes a buffer of largeBufs
// (large.go), whose classes start above slotBuf.
const (
	slotBuf   = 1 << largeMinShift
	slotArena = 64 << 10
)

// newBuf carves a record buffer from the arena; called under the queue's
// lock (PutFunc), which guards p.arena.
func (p *pcapSink) newBuf() []byte {
	if len(p.arena) < slotBuf {
		p.arena = make([]byte, slotArena)
	}
	b := p.arena[:0:slotBuf]
	p.arena = p.arena[slotBuf:]
	return b
}

func (p *pcapSink) write(r *rec) {
	if p.beforeWrite != nil {
		p.beforeWrite()
	}
	var err error
	switch r.kind {
	case event.Accepted, event.Connected:
		err = p.w.ConnOpen(r.t, r.src, r.dst)
	case event.Closed:
		err = p.w.ConnClose(r.t, r.src, r.dst)
	default:
		data := r.data
		if r.big != nil {
			data = r.big
		}
		err = p.w.Data(r.t, r.src, r.dst, data)
	}
	if r.big != nil {
		p.large.put(r.big)
		r.big = nil
	}
	if err != nil {
		p.failed(err)
	}
}

// flush makes what was written visible to readers of the file; the queue
// calls it when it runs empty.
func (p *pcapSink) flush() {
	if err := p.w.Flush(); err != nil {
		p.failed(err)
		return
	}
	if p.logFailed {
		if ws := p.w.Stats(); !ws.Failing {
			p.logFailed, p.unlogged = false, 0
			p.log.Info("pcap sink writing again", slog.String("file", ws.CurrentFile),
				slog.Int64("records_lost_total", ws.RecordsLost))
		}
	}
}

// failed logs a failed write at most once per logEvery, with the count of
// the failures since the last line. Records refused while the writer waits
// (pcap.ErrBackoff) are counted as dropped, not logged one by one.
func (p *pcapSink) failed(err error) {
	if errors.Is(err, pcap.ErrBackoff) {
		return
	}
	p.unlogged++
	now := p.now()
	if !p.lastLog.IsZero() && now.Sub(p.lastLog) < logEvery {
		return
	}
	ws := p.w.Stats()
	p.log.Warn("pcap write failed; records are dropped while retrying", slog.String("error", err.Error()),
		slog.Int("failures_since_last_log", p.unlogged), slog.Int64("records_lost_total", ws.RecordsLost))
	p.lastLog, p.unlogged, p.logFailed = now, 0, true
}

// Stats implements sink.Sink. Queued counts the records waiting in the
// queue and those written to the file's buffer but not yet to the file
// (flushed when the queue runs empty): Queued 0 means Sent and Dropped
// account for every record taken.
func (p *pcapSink) Stats() sink.Stats {
	// The queue first, the writer after: a record leaves the queue only
	// once the writer has counted it, so a queue read as empty cannot miss
	// a record the writer's older counters did not have yet (Queued 0
	// with Sent short: the CI failure of TestQueuedUntilFlushed).
	queued, qDropped := p.q.Len(), p.q.Dropped()
	ws := p.w.Stats()
	large := p.large.dropped.Load()
	st := sink.Stats{Name: p.name, Type: "pcap", Sent: uint64(ws.Records), Dropped: qDropped + large + uint64(ws.RecordsLost),
		Errors: uint64(ws.Errors), Queued: queued + int(ws.Buffered), State: sink.StateOK, LastError: ws.LastError,
		Counters: []sink.Counter{
			{Name: "bytes", Value: uint64(ws.Bytes)},
			{Name: "dropped_large", Value: large},
			{Name: "files", Value: uint64(ws.Files)},
			{Name: "files_deleted", Value: uint64(ws.FilesDeleted)},
			{Name: "flows", Value: uint64(ws.Flows)},
			{Name: "flows_evicted", Value: uint64(ws.FlowsEvicted)},
			{Name: "packets", Value: uint64(ws.Packets)},
			{Name: "rotations", Value: uint64(ws.Rotations)},
			{Name: "writer_errors", Value: uint64(ws.Errors)},
		}}
	if ws.Failing {
		st.State = sink.StateDegraded
	}
	return st
}

// Close writes out what is queued (within ctx), then closes the file.
func (p *pcapSink) Close(ctx context.Context) error {
	if err := p.q.Close(ctx); err != nil {
		return err // the queue's goroutine may still be writing: leave the file to it
	}
	return p.w.Close()
}
