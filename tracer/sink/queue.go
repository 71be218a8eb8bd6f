package sink

import (
	"context"
	"sync"
	"sync/atomic"
)

// Queue is a bounded queue of records with its own goroutine, which hands
// each record, in order, to the handler given to NewQueue. Put never
// blocks: when the queue is full (or closed) the record is refused and
// counted as dropped. Close drains it.
type Queue[T any] struct {
	ch      chan T
	handle  func(T)
	idle    func()
	done    chan struct{}
	mu      sync.RWMutex // Put holds it shared, Close exclusively while it closes ch
	closed  bool
	abort   atomic.Bool // Close's context ended: discard the rest
	dropped atomic.Uint64
}

// NewQueue starts a queue of size records (DefaultQueueSize if size <= 0)
// and its goroutine. handle is called for each record on that goroutine;
// idle, if not nil, after a record when no other is waiting (a writer
// flushes there). The goroutine ends when Close is called.
func NewQueue[T any](size int, handle func(T), idle func()) *Queue[T] {
	if size <= 0 {
		size = DefaultQueueSize
	}
	q := &Queue[T]{ch: make(chan T, size), handle: handle, idle: idle, done: make(chan struct{})}
	go q.run()
	return q
}

// Put queues v and reports whether it was taken. A record not taken (queue
// full, or closed) is counted in Dropped and stays the caller's, e.g. to
// return it to a pool.
func (q *Queue[T]) Put(v T) bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if !q.closed {
		select {
		case q.ch <- v:
			return true
		default:
		}
	}
	q.dropped.Add(1)
	return false
}

// Len is the number of records waiting.
func (q *Queue[T]) Len() int { return len(q.ch) }

// Dropped is the number of records refused by Put or discarded by Close.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

func (q *Queue[T]) run() {
	defer close(q.done)
	for v := range q.ch {
		if q.abort.Load() {
			q.dropped.Add(1)
			continue
		}
		q.handle(v)
		if q.idle != nil && len(q.ch) == 0 {
			q.idle()
		}
	}
}

// Close refuses new records and waits until the goroutine has handled every
// queued one. If ctx ends first, the records not yet handled are discarded
// (counted in Dropped), Close returns ctx's error without waiting for the
// handler call in progress, and the goroutine ends after it. Close is
// idempotent; a later call waits again.
func (q *Queue[T]) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.abort.Store(true)
		return ctx.Err()
	}
}
