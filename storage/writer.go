package storage

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/spool"
)

// Config configures a Writer. Zero values take the defaults named.
type Config struct {
	Addr     []string // host:port of the native protocol (9000); several: tried in turn
	Database string   // "msrpscope"
	Username string   // "default"
	Password string
	TLS      *tls.Config // nil: plain TCP

	BatchRows  int           // rows per batch, 50,000 (fewer, larger inserts: 18.16 stores 3x more rows/s than with 10,000)
	BatchAge   time.Duration // a batch is sealed at this age at the latest, 1 s
	BufferRows int           // rows waiting for the writer's goroutine, 2 x BatchRows; beyond: dropped and counted

	// SpoolDir is the directory of the on-disk spool sealed batches wait in
	// until ClickHouse has them (survives restarts). Empty: a queue in
	// memory, lost with the process. Spool, when set, is used instead.
	SpoolDir      string
	SpoolMaxBytes int64 // 1 GiB; beyond: new batches are dropped and counted
	Spool         Queue

	Cluster       string // cluster name: ON CLUSTER DDL, *_local tables + Distributed; "" = one server
	Replicated    bool   // with Cluster: Replicated*MergeTree local tables
	RetentionDays int    // 0 = keep forever
	BodyBytes     int    // bytes of a frame body stored, 1024; < 0: none
	Node          string // this relay's name, stored in every row

	DialTimeout   time.Duration // 5 s
	InsertTimeout time.Duration // one insert or check, 30 s
	Logger        *slog.Logger  // nil: discard
}

func (c *Config) defaults() {
	if c.Database == "" {
		c.Database = "msrpscope"
	}
	if c.Username == "" {
		c.Username = "default"
	}
	if c.BatchRows <= 0 {
		c.BatchRows = 50000
	}
	if c.BatchAge <= 0 {
		c.BatchAge = time.Second
	}
	if c.BufferRows <= 0 {
		c.BufferRows = 2 * c.BatchRows
	}
	if c.SpoolMaxBytes <= 0 {
		c.SpoolMaxBytes = 1 << 30
	}
	if c.BodyBytes == 0 {
		c.BodyBytes = 1024
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.InsertTimeout <= 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the writer's counters since NewWriter.
type Stats struct {
	Added          uint64 // rows accepted by Add
	DroppedBuffer  uint64 // rows dropped by Add: the in-memory buffer was full
	DroppedClosed  uint64 // rows dropped by Add after Close
	DroppedQueue   uint64 // rows dropped at sealing: the spool (or memory queue) refused the batch
	DroppedOnClose uint64 // rows of the memory queue left unsent when Close's context ended
	Batches        uint64 // batches queued
	RowsQueued     uint64 // rows in the batches queued
	BatchesStored  uint64 // batches fully in ClickHouse
	RowsStored     uint64 // rows inserted by this writer
	RowsFound      uint64 // rows a batch-id check found already stored (not inserted again)
	PartialFound   uint64 // batch parts found partly stored: logged, not inserted again
	Corrupt        uint64 // queued records that did not decode: skipped
	Failures       uint64 // failed connects, inserts and checks (each retried)
	Queued         int    // batches waiting in the queue
	Connected      bool
	ServerVersion  string
}

// Writer stores events in ClickHouse. Add never blocks; a goroutine seals
// batches by rows and age into the queue (the spool), another inserts them
// in order, retrying with backoff and jitter, and checks a batch whose
// outcome is unknown by its batch id before inserting it again.
type Writer struct {
	cfg   Config
	log   *slog.Logger
	in    chan string
	queue Queue

	closed    atomic.Bool
	stop      chan struct{} // closed by Close: the collector seals what it has and returns
	kick      chan struct{} // cap 1: a batch was queued
	draining  chan struct{} // closed by Close after the collector returned: the sender returns once the queue is empty
	cancel    context.CancelFunc
	ctx       context.Context
	collected chan struct{}
	sent      chan struct{}
	closeOnce sync.Once

	batchBase uint64
	seq       uint64 // collector-owned
	inherited int    // batches in the queue at start

	added, dropBuffer, dropClosed, dropQueue, dropOnClose atomic.Uint64
	batches, rowsQueued, stored, rowsStored, rowsFound    atomic.Uint64
	partial                                               atomic.Uint64
	corrupt, failures                                     atomic.Uint64
	connected                                             atomic.Bool
	version                                               atomic.Value // string

	dropLog rateLimit

	// sender-owned
	conn     driver.Conn
	schema   Schema
	fcols    frameCols
	ecols    eventCols
	lastKeep time.Time
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// NewWriter starts a writer. It does not wait for ClickHouse: connecting
// (and creating the schema) happens on the writer's goroutine, again after
// every lost connection, so a relay starts while ClickHouse is down. ctx
// gives values only: the writer runs until Close.
func NewWriter(ctx context.Context, cfg Config) (*Writer, error) {
	cfg.defaults()
	if len(cfg.Addr) == 0 {
		return nil, errors.New("storage: no ClickHouse address")
	}
	if cfg.Replicated && cfg.Cluster == "" {
		return nil, errors.New("storage: replicated needs a cluster name")
	}
	q := cfg.Spool
	if q == nil {
		if cfg.SpoolDir != "" {
			var err error
			if q, err = openSpool(cfg); err != nil {
				return nil, err
			}
		} else {
			q = newMemQueue(cfg.SpoolMaxBytes)
		}
	}
	var seed [8]byte
	_, _ = crand.Read(seed[:])
	w := &Writer{
		cfg: cfg, log: cfg.Logger, queue: q,
		in:        make(chan string, cfg.BufferRows),
		stop:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		draining:  make(chan struct{}),
		collected: make(chan struct{}),
		sent:      make(chan struct{}),
		batchBase: binary.LittleEndian.Uint64(seed[:]),
	}
	w.version.Store("")
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	w.inherited = q.Len()
	go w.collect()
	go w.send()
	return w, nil
}

// openSpool opens the durable spool in cfg.SpoolDir.
func openSpool(cfg Config) (Queue, error) {
	sp, err := spool.Open(spool.Config{Dir: cfg.SpoolDir, MaxBytes: cfg.SpoolMaxBytes, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("storage: spool: %w", err)
	}
	return sp, nil
}

// Add queues the row of one event. It never blocks: when the buffer is full
// the row is dropped and counted. It copies what it keeps (one allocation).
// Rows added after Close are dropped and counted (the caller stops adding
// before Close; an Add racing Close may be lost uncounted).
func (w *Writer) Add(e *event.Event) {
	if w.closed.Load() {
		w.dropClosed.Add(1)
		return
	}
	bp := scratchPool.Get().(*[]byte)
	buf := (*bp)[:0]
	switch {
	case IsFrame(e):
		buf = append(buf, kindFrame)
		buf = appendFrame(buf, e, w.cfg.BodyBytes)
	case e.Kind == event.FrameIn || e.Kind == event.FrameOut:
		scratchPool.Put(bp)
		return // a frame event without its frame: nothing to store
	default:
		buf = append(buf, kindEvent)
		buf = appendEvent(buf, e)
	}
	row := string(buf)
	*bp = buf
	scratchPool.Put(bp)
	select {
	case w.in <- row:
		w.added.Add(1)
	default:
		n := w.dropBuffer.Add(1)
		if ok, sup := w.dropLog.allow(); ok {
			w.log.Warn("storage: buffer full, rows dropped", "dropped_total", n, "suppressed_logs", sup)
		}
	}
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	v, _ := w.version.Load().(string)
	return Stats{
		Added: w.added.Load(), DroppedBuffer: w.dropBuffer.Load(), DroppedClosed: w.dropClosed.Load(),
		DroppedQueue: w.dropQueue.Load(), DroppedOnClose: w.dropOnClose.Load(),
		Batches: w.batches.Load(), RowsQueued: w.rowsQueued.Load(), BatchesStored: w.stored.Load(), RowsStored: w.rowsStored.Load(),
		RowsFound: w.rowsFound.Load(), PartialFound: w.partial.Load(), Corrupt: w.corrupt.Load(),
		Failures: w.failures.Load(), Queued: w.queue.Len(), Connected: w.connected.Load(), ServerVersion: v,
	}
}

// Close stops accepting rows, seals what is buffered into the queue and
// keeps inserting until the queue is empty or ctx ends; what is left stays
// in the spool for the next start (a memory queue's rest is lost and
// counted). It returns ctx's error when it ended first.
func (w *Writer) Close(ctx context.Context) error {
	var err error
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		close(w.stop)
		<-w.collected
		close(w.draining)
		select {
		case <-w.sent:
		case <-ctx.Done():
			err = ctx.Err()
			w.cancel()
			<-w.sent
		}
		w.cancel()
		if _, ok := w.queue.(*memQueue); ok {
			for {
				rec, ok, _ := w.queue.Peek()
				if !ok {
					break
				}
				if b, derr := decodeBatch(string(rec)); derr == nil {
					w.dropOnClose.Add(uint64(b.nFrames + b.nEvents))
				}
				_ = w.queue.Ack()
			}
			if n := w.dropOnClose.Load(); n > 0 {
				w.log.Error("storage: closed with rows not stored (no spool_dir)", "rows", n)
			}
		}
		if cerr := w.queue.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("storage: close spool: %w", cerr)
		}
	})
	return err
}

func (w *Writer) notify() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// collect owns the batch being gathered: it seals it at BatchRows rows or
// BatchAge age into the queue.
func (w *Writer) collect() {
	defer close(w.collected)
	var b batchBuilder
	var rec []byte
	age := time.NewTimer(time.Hour)
	age.Stop()
	seal := func() {
		if b.rows() == 0 {
			return
		}
		id := w.batchBase + w.seq
		w.seq++
		n := b.rows()
		rec = b.seal(rec[:0], id, w.cfg.Node)
		if err := w.queue.Append(rec); err != nil {
			total := w.dropQueue.Add(uint64(n))
			if ok, sup := w.dropLog.allow(); ok {
				w.log.Error("storage: batch dropped: queue refused it", "rows", n, "dropped_total", total,
					"err", err, "suppressed_logs", sup)
			}
			return
		}
		w.rowsQueued.Add(uint64(n))
		w.batches.Add(1)
		w.notify()
	}
	for {
		select {
		case r := <-w.in:
			b.add(r)
			if b.rows() == 1 {
				age.Reset(w.cfg.BatchAge)
			}
			if b.rows() >= w.cfg.BatchRows {
				age.Stop()
				seal()
			}
		case <-age.C:
			seal()
		case <-w.stop:
			for {
				select {
				case r := <-w.in:
					b.add(r)
					if b.rows() >= w.cfg.BatchRows {
						seal()
					}
					continue
				default:
				}
				break
			}
			seal()
			return
		}
	}
}

// head is the sender's knowledge of the oldest queued batch.
type head struct {
	set                    bool
	id                     uint64
	unknown                bool // it may be (partly) stored already: check before inserting
	framesDone, eventsDone bool
}

// send inserts queued batches in order.
func (w *Writer) send() {
	defer close(w.sent)
	defer w.disconnect()
	var h head
	// The batches queued before this start may have been stored already by
	// a process that stopped before acknowledging them (only the oldest,
	// with an intact spool; all are checked, which costs a count each).
	inherited := w.inherited
	attempt := 0
	for {
		if w.ctx.Err() != nil {
			return
		}
		rec, ok, err := w.queue.Peek()
		if err != nil {
			w.failures.Add(1)
			w.log.Error("storage: read queue", "err", err)
			if !w.wait(&attempt) {
				return
			}
			continue
		}
		if !ok {
			select {
			case <-w.kick:
			case <-w.draining:
				if w.queue.Len() == 0 {
					return
				}
			case <-w.ctx.Done():
				return
			}
			continue
		}
		b, err := decodeBatch(string(rec))
		if err != nil {
			w.corrupt.Add(1)
			w.log.Error("storage: queued batch skipped: undecodable", "err", err)
			if err := w.queue.Ack(); err != nil {
				w.failures.Add(1)
				w.log.Error("storage: ack", "err", err)
				if !w.wait(&attempt) {
					return
				}
			}
			continue
		}
		if !h.set || h.id != b.id {
			// A new head: inherited ones are counted once each, however
			// often they are retried.
			h = head{set: true, id: b.id, unknown: inherited > 0}
			inherited = max(inherited-1, 0)
		}
		if err := w.deliver(b, &h); err != nil {
			h.unknown = true
			w.failures.Add(1)
			w.log.Warn("storage: insert failed, retrying", "batch_id", b.id, "attempt", attempt+1, "err", err)
			w.disconnect()
			if !w.wait(&attempt) {
				return
			}
			continue
		}
		if err := w.queue.Ack(); err != nil {
			// Stored but still queued: only the Ack is retried (both
			// parts are marked done), never the insert.
			w.failures.Add(1)
			w.log.Error("storage: ack of a stored batch", "batch_id", b.id, "err", err)
			if !w.wait(&attempt) {
				return
			}
			continue
		}
		attempt = 0
		w.stored.Add(1)
		h = head{}
	}
}

// wait sleeps the backoff of the next attempt: 100 ms doubling up to 10 s,
// with full jitter over its upper half. False: stop now.
func (w *Writer) wait(attempt *int) bool {
	d := 100 * time.Millisecond << min(*attempt, 7)
	d = min(d, 10*time.Second)
	d = d/2 + rand.N(d/2+1)
	*attempt++
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *Writer) disconnect() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
	w.connected.Store(false)
}

// connect opens a connection, detects the server version and runs the
// migrations (a server that came back empty gets its schema again).
func (w *Writer) connect() error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         w.cfg.Addr,
		Auth:         clickhouse.Auth{Database: "default", Username: w.cfg.Username, Password: w.cfg.Password},
		TLS:          w.cfg.TLS,
		DialTimeout:  w.cfg.DialTimeout,
		ReadTimeout:  w.cfg.InsertTimeout,
		MaxOpenConns: 2,
		MaxIdleConns: 2,
	})
	if err != nil {
		return fmt.Errorf("storage: open: %w", err)
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.InsertTimeout)
	defer cancel()
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		_ = conn.Close()
		return fmt.Errorf("storage: connect %v: %w", w.cfg.Addr, err)
	}
	s := Schema{Database: w.cfg.Database, Cluster: w.cfg.Cluster, Flavor: FlavorOf(version),
		Topology: Single, RetentionDays: w.cfg.RetentionDays}
	if w.cfg.Cluster != "" {
		s.Topology = Cluster
		if w.cfg.Replicated {
			s.Topology = Replicated
		}
	}
	applied, err := Migrate(ctx, conn, s)
	if err != nil {
		_ = conn.Close()
		return err
	}
	if len(applied) > 0 {
		w.log.Info("storage: schema migrated", "server", version, "flavor", s.Flavor.String(),
			"topology", s.Topology.String(), "applied", applied)
	}
	w.conn, w.schema = conn, s
	w.version.Store(version)
	w.connected.Store(true)
	w.housekeep(true)
	return nil
}

// deliver stores both parts of a batch, each once.
func (w *Writer) deliver(b batch, h *head) error {
	if w.conn == nil {
		if err := w.connect(); err != nil {
			return err
		}
	}
	w.housekeep(false)
	if !h.framesDone {
		if err := w.deliverPart(b, h.unknown, TableFrames, b.nFrames, w.insertFrames); err != nil {
			return err
		}
		h.framesDone = true
	}
	if !h.eventsDone {
		if err := w.deliverPart(b, h.unknown, TableEvents, b.nEvents, w.insertEvents); err != nil {
			return err
		}
		h.eventsDone = true
	}
	return nil
}

func (w *Writer) deliverPart(b batch, unknown bool, table string, n int, insert func(context.Context, batch) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.InsertTimeout)
	defer cancel()
	// Every insert of a part has the same query id: an insert the server
	// goes on with after the client gave up (a timeout, a relay restart)
	// is found by it, and a second one is refused while it runs.
	qid := insertQueryID(b.id, table)
	if unknown {
		// Not while an earlier insert of it still runs: what it has stored
		// so far (the table's part before its views') would be counted as
		// the outcome, and the rollups repaired of rows its views are
		// about to write.
		switch running, err := w.insertRunning(ctx, qid); {
		case err != nil:
			return err
		case running:
			return fmt.Errorf("storage: batch %d: an earlier insert of it into %s still runs on the server: checked again after it", b.id, table)
		}
		found, err := w.countBatch(ctx, table, b)
		if err != nil {
			return err
		}
		switch {
		case found == uint64(n):
			w.log.Info("storage: batch already stored, not inserted again", "batch_id", b.id, "table", table, "rows", n)
		case found > 0:
			// A partly stored part (a batch spanning partitions, or shards,
			// cut by a failure): inserting it again would duplicate rows.
			w.log.Error("storage: batch found partly stored, not inserted again", "batch_id", b.id,
				"table", table, "rows", n, "found", found)
		}
		if found > 0 {
			// The insert that stored it may have been cut before its
			// rollups' views wrote (repair.go).
			if err := w.repairRollups(ctx, table, b); err != nil {
				return err
			}
			if found < uint64(n) {
				w.partial.Add(1)
			}
			w.rowsFound.Add(found)
			return nil
		}
	}
	if err := insert(w.insertContext(clickhouse.Context(ctx, clickhouse.WithQueryID(qid))), b); err != nil {
		return err
	}
	w.rowsStored.Add(uint64(n))
	return nil
}

// insertContext is ctx for an insert: on a cluster, into the Distributed
// table's shards before it returns (a check or repair that follows sees it).
func (w *Writer) insertContext(ctx context.Context) context.Context {
	if w.schema.Topology == Single {
		return ctx
	}
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
}

// insertQueryID is the query id of every insert of batch id into table.
func insertQueryID(id uint64, table string) string {
	return "msrpscope-" + strconv.FormatUint(id, 10) + "-" + table
}

// insertRunning reports whether the query qid runs on the server connected
// to (an insert the server finishes after its client gave up).
func (w *Writer) insertRunning(ctx context.Context, qid string) (bool, error) {
	var n uint64
	if err := w.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE query_id = "+quoteString(qid)).Scan(&n); err != nil {
		return false, fmt.Errorf("storage: check insert %s: %w", qid, err)
	}
	return n > 0, nil
}

// countBatch counts a batch's rows in a table; the time range lets the
// server skip other partitions and granules.
func (w *Writer) countBatch(ctx context.Context, table string, b batch) (uint64, error) {
	q := fmt.Sprintf("SELECT count() FROM %s WHERE batch_id = %d AND ts >= toDateTime(%d) AND ts < toDateTime(%d)",
		w.schema.name(table), b.id, floorDiv(b.minTS, 1e6), floorDiv(b.maxTS, 1e6)+1)
	var n uint64
	if err := w.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("storage: check batch %d in %s: %w", b.id, table, err)
	}
	return n, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// housekeep drops partitions older than the retention on old servers
// (modern ones have TTL): at connect and then hourly.
func (w *Writer) housekeep(force bool) {
	if w.schema.Flavor != Old || w.cfg.RetentionDays <= 0 || w.conn == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(w.lastKeep) < time.Hour {
		return
	}
	w.lastKeep = now
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.InsertTimeout)
	defer cancel()
	if err := DropOldPartitions(ctx, w.conn, w.schema, now); err != nil {
		w.log.Warn("storage: retention", "err", err)
	}
}

// DropOldPartitions drops the day partitions (toYYYYMMDD) older than
// s.RetentionDays before now from every table, on every shard.
func DropOldPartitions(ctx context.Context, conn driver.Conn, s Schema, now time.Time) error {
	if s.RetentionDays <= 0 {
		return nil
	}
	cutoff := now.UTC().AddDate(0, 0, -s.RetentionDays).Format("20060102")
	for _, t := range s.RetentionTables() {
		rows, err := conn.Query(ctx, fmt.Sprintf(
			"SELECT DISTINCT partition FROM system.parts WHERE database = %s AND table = %s AND active AND partition < %s",
			quoteString(s.Database), quoteString(t), quoteString(cutoff)))
		if err != nil {
			return fmt.Errorf("storage: list partitions of %s: %w", t, err)
		}
		var parts []string
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return fmt.Errorf("storage: list partitions of %s: %w", t, err)
			}
			parts = append(parts, p)
		}
		rows.Close()
		for _, p := range parts {
			if len(p) != 8 || p[0] < '0' || p[0] > '9' {
				continue
			}
			q := fmt.Sprintf("ALTER TABLE %s%s DROP PARTITION %s", s.name(t), s.onCluster(), p)
			if err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("storage: drop partition %s of %s: %w", p, t, err)
			}
		}
	}
	return nil
}

// rateLimit allows one log line per 10 s and counts the suppressed ones.
type rateLimit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *rateLimit) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < 10*time.Second {
		l.suppressed++
		return false, 0
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
