package sink

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Queue is a bounded queue of records with its own goroutine, which hands
// each record, in order, to the handler given to NewQueue. Put never
// blocks: when the queue is full (or closed) the record is refused and
// counted as dropped. Close drains it.
//
// Records are taken in batches: the goroutine swaps the records waiting for
// an empty slice under a mutex and handles them without it, so that under
// load one wake-up and one lock hand-off serve many records (a channel
// costs both per record). The two slices' elements are reused: PutFunc
// fills a slot in place, keeping the buffers an earlier record left in it.
type Queue[T any] struct {
	handle    func(*T)
	idle      func()
	idleDelay time.Duration
	linger    time.Duration
	adaptive  bool // linger only after a batch of at least busyAt records
	wakeAt    int  // records waiting that end a linger early
	done      chan struct{}
	wake      chan struct{} // capacity 1: the goroutine sleeps on it

	// The producers' side, under mu. The goroutine's fields below are on
	// other cache lines: it writes pending for every record it handles and
	// reads abort, and a line written by both sides moved between cores
	// every record (relay CPU per SEND 0.98 of that, 2 pairs x 64; most of
	// PutFunc's own time is still the stores of fill into lines the
	// goroutine's core read last).
	mu        sync.Mutex
	fill      []T // records waiting; capacity size
	size      int
	sleeping  bool // the goroutine waits on wake for the first record
	lingering bool // the goroutine lets records gather: wake it at wakeAt
	closed    bool
	dropped   atomic.Uint64
	_         [64]byte

	spare   []T          // the goroutine's: the other slice, empty
	last    int          // the goroutine's: records in the last batch
	timer   *time.Timer  // the goroutine's: Linger and IdleDelay
	pending atomic.Int64 // records taken by the goroutine, not yet handled
	abort   atomic.Bool  // Close's context ended: discard the rest
	_       [64]byte
}

// QueueOptions tune a Queue's goroutine.
type QueueOptions struct {
	// Idle, if not nil, is called on the goroutine when no record is
	// waiting after some were handled (a writer flushes there): at once
	// when IdleDelay is 0, else once the queue has stayed empty for
	// IdleDelay (under steady load a writer then flushes when its buffer
	// is full, not after every burst).
	Idle      func()
	IdleDelay time.Duration
	// Linger is how long records may wait for more before the goroutine
	// takes them (0: at once): one wake-up per Linger under load instead of
	// one per record or two. Producers wake it early once a batch is large
	// (a quarter of the queue, at most 256).
	Linger time.Duration
	// Adaptive, with Linger, lingers only while records come faster than
	// the goroutine takes them one by one: after a batch of two or more
	// (busyAt; it was a sixteenth of the early-wake size, 16 records for a
	// queue of 1024 or more, and at a moderate load, a few records a
	// batch, the goroutine was woken for nearly every record: at 22,700
	// relayed SENDs/s, 91,000 records/s, relay CPU per SEND with the
	// embedded default 0.90 of that). Under a light load records are taken
	// at once, so that the queue runs empty (and Idle is called) as soon
	// as the producers pause. Adaptive also applies IdleDelay only after
	// such a large batch: under a light load Idle is called as soon as
	// the queue runs empty; under a high load, once it has stayed empty
	// for IdleDelay (a writer then flushes when its buffer is full, not
	// at each short pause between batches).
	Adaptive bool
}

// busyAt is the batch size after which an Adaptive queue lingers (see
// QueueOptions.Adaptive).
const busyAt = 2

// NewQueue starts a queue of size records (DefaultQueueSize if size <= 0)
// and its goroutine. handle is called for each record on that goroutine
// (the record is the queue's: handle keeps nothing of it after returning).
// The goroutine ends when Close is called.
func NewQueue[T any](size int, handle func(*T), o QueueOptions) *Queue[T] {
	if size <= 0 {
		size = DefaultQueueSize
	}
	q := &Queue[T]{handle: handle, idle: o.Idle, idleDelay: o.IdleDelay, linger: o.Linger, adaptive: o.Adaptive,
		done: make(chan struct{}), wake: make(chan struct{}, 1), size: size, wakeAt: max(1, min(size/4, 256))}
	go q.run()
	return q
}

// Put queues v and reports whether it was taken. A record not taken (queue
// full, or closed) is counted in Dropped and stays the caller's, e.g. to
// return it to a pool.
func (q *Queue[T]) Put(v T) bool {
	return q.PutFunc(func(p *T) { *p = v })
}

// PutFunc queues a record that fill writes in place, and reports whether
// it was taken; fill is called (under the queue's lock, so briefly) only
// when there is room. The slot fill gets holds what an earlier record left
// there (the zero value at first): fill reuses its buffers and must set
// every field it uses. A record not taken is counted in Dropped.
func (q *Queue[T]) PutFunc(fill func(*T)) bool {
	q.mu.Lock()
	if q.closed || len(q.fill) >= q.size {
		q.mu.Unlock()
		q.dropped.Add(1)
		return false
	}
	if q.fill == nil {
		q.fill = make([]T, 0, q.size)
	}
	n := len(q.fill)
	q.fill = q.fill[:n+1]
	fill(&q.fill[n])
	wake := q.sleeping || q.lingering && n+1 >= q.wakeAt
	if wake {
		q.sleeping, q.lingering = false, false
	}
	q.mu.Unlock()
	if wake {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// Len is the number of records waiting, the one being handled included.
// Read before a handler's counters, a Len of 0 means those counters (or
// Dropped) include every record put before.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	n := len(q.fill)
	q.mu.Unlock()
	return n + int(q.pending.Load())
}

// Dropped is the number of records refused by Put or discarded by Close.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

// take waits for records (or the close) and swaps them out. It returns nil
// when the queue is closed and empty. Records waiting, fewer than wakeAt,
// are left to gather for Linger (producers do not wake the goroutine for
// each). An empty queue sleeps until a record comes, and first calls idle
// when records were handled since the last call (idleDue), after
// IdleDelay.
func (q *Queue[T]) take(idleDue *bool) []T {
	lingered := false
	q.mu.Lock()
	for {
		n := len(q.fill)
		if n > 0 && (q.closed || lingered || !q.lingers() || n >= q.wakeAt) {
			break
		}
		if n == 0 && q.closed {
			q.mu.Unlock()
			return nil
		}
		if n == 0 && *idleDue && q.idle != nil && q.idleDelayNow() <= 0 {
			q.mu.Unlock()
			q.idle()
			*idleDue = false
			q.mu.Lock()
			continue
		}
		var d time.Duration // 0: until woken
		if n > 0 {
			d = q.linger
			q.lingering = true
		} else {
			q.sleeping = true
			if *idleDue && q.idle != nil {
				d = q.idleDelayNow()
			}
		}
		q.mu.Unlock()
		fired := q.wait(d)
		q.mu.Lock()
		q.sleeping, q.lingering = false, false
		if fired {
			if n > 0 {
				lingered = true
			} else {
				*idleDue = false
				q.mu.Unlock()
				q.idle()
				q.mu.Lock()
			}
		}
	}
	batch := q.fill
	q.fill = q.spare[:0]
	q.pending.Store(int64(len(batch)))
	q.mu.Unlock()
	return batch
}

// idleDelayNow is how long the queue must stay empty before Idle: IdleDelay,
// but when Adaptive only after a large batch (0 otherwise).
func (q *Queue[T]) idleDelayNow() time.Duration {
	if q.adaptive && q.last < busyAt {
		return 0
	}
	return q.idleDelay
}

// lingers reports whether records waiting are left to gather: Linger is
// set and, when Adaptive, the last batch was large.
func (q *Queue[T]) lingers() bool {
	return q.linger > 0 && (!q.adaptive || q.last >= busyAt)
}

// wait sleeps until woken or, when d > 0, until d has passed, and reports
// whether d passed. A wake-up may be stale (sent after an earlier wait
// ended): take re-checks.
func (q *Queue[T]) wait(d time.Duration) bool {
	if d <= 0 {
		<-q.wake
		return false
	}
	if q.timer == nil {
		q.timer = time.NewTimer(d)
	} else {
		q.timer.Reset(d)
	}
	select {
	case <-q.wake:
		q.timer.Stop()
		return false
	case <-q.timer.C:
		return true
	}
}

func (q *Queue[T]) run() {
	defer close(q.done)
	defer func() {
		if q.timer != nil {
			q.timer.Stop()
		}
	}()
	idleDue := false
	for {
		batch := q.take(&idleDue)
		q.last = len(batch)
		if batch == nil {
			if idleDue && q.idle != nil && !q.abort.Load() {
				q.idle()
			}
			return
		}
		for i := range batch {
			// A record leaves pending only once it is handled (or
			// counted dropped): a Len of 0 then means the handler's own
			// counters, read after it, account for every record taken.
			if q.abort.Load() {
				q.dropped.Add(1)
			} else {
				q.handle(&batch[i])
			}
			q.pending.Add(-1)
		}
		idleDue = true
		q.spare = batch[:0]
	}
}

// Close refuses new records and waits until the goroutine has handled every
// queued one. If ctx ends first, the records not yet handled are discarded
// (counted in Dropped), Close returns ctx's error without waiting for the
// handler call in progress, and the goroutine ends after it. Close is
// idempotent; a later call waits again.
func (q *Queue[T]) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	q.sleeping, q.lingering = false, false
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.abort.Store(true)
		return ctx.Err()
	}
}
