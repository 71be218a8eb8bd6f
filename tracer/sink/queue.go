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
	done      chan struct{}
	wake      chan struct{} // capacity 1: the goroutine sleeps on it

	mu       sync.Mutex
	fill     []T // records waiting; capacity size
	size     int
	sleeping bool // the goroutine waits on wake
	closed   bool

	spare   []T          // the goroutine's: the other slice, empty
	timer   *time.Timer  // the goroutine's: idleDelay
	pending atomic.Int64 // records taken by the goroutine, not yet handled
	waiting atomic.Int64 // len(fill), for Len without the lock
	abort   atomic.Bool  // Close's context ended: discard the rest
	dropped atomic.Uint64
}

// NewQueue starts a queue of size records (DefaultQueueSize if size <= 0)
// and its goroutine. handle is called for each record on that goroutine
// (the record is the queue's: handle keeps nothing of it after returning);
// idle, if not nil, when no record is waiting after some were handled (a
// writer flushes there): at once when idleDelay is 0, else once the queue
// has stayed empty for idleDelay (under steady load a writer then flushes
// when its buffer is full, not after every burst). The goroutine ends when
// Close is called.
func NewQueue[T any](size int, handle func(*T), idle func(), idleDelay time.Duration) *Queue[T] {
	if size <= 0 {
		size = DefaultQueueSize
	}
	q := &Queue[T]{handle: handle, idle: idle, idleDelay: idleDelay, done: make(chan struct{}),
		wake: make(chan struct{}, 1), size: size}
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
	q.waiting.Store(int64(n + 1))
	wake := q.sleeping
	q.sleeping = false
	q.mu.Unlock()
	if wake {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// Len is the number of records waiting.
func (q *Queue[T]) Len() int { return int(q.waiting.Load() + q.pending.Load()) }

// Dropped is the number of records refused by Put or discarded by Close.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

// take waits for records (or the close) and swaps them out. It returns nil
// when the queue is closed and empty. Before sleeping it calls idle when
// records were handled since the last call (idleDue), after idleDelay.
func (q *Queue[T]) take(idleDue *bool) []T {
	q.mu.Lock()
	for len(q.fill) == 0 && !q.closed {
		if *idleDue && q.idle != nil && q.idleDelay <= 0 {
			q.mu.Unlock()
			q.idle()
			*idleDue = false
			q.mu.Lock()
			continue
		}
		q.sleeping = true
		q.mu.Unlock()
		if *idleDue && q.idle != nil {
			if q.timer == nil {
				q.timer = time.NewTimer(q.idleDelay)
			} else {
				q.timer.Reset(q.idleDelay)
			}
			select {
			case <-q.wake:
				q.timer.Stop()
			case <-q.timer.C:
				*idleDue = false
				q.idle()
			}
		} else {
			<-q.wake
		}
		q.mu.Lock()
	}
	batch := q.fill
	if len(batch) == 0 { // closed and empty
		q.mu.Unlock()
		return nil
	}
	q.fill = q.spare[:0]
	q.waiting.Store(0)
	q.pending.Store(int64(len(batch)))
	q.mu.Unlock()
	return batch
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
		if batch == nil {
			if idleDue && q.idle != nil && !q.abort.Load() {
				q.idle()
			}
			return
		}
		for i := range batch {
			q.pending.Add(-1)
			if q.abort.Load() {
				q.dropped.Add(1)
				continue
			}
			q.handle(&batch[i])
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
	q.sleeping = false
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
