package storage

import (
	"errors"
	"sync"
)

// Queue is what the writer keeps sealed batches in until ClickHouse has
// them: the durable spool (tracer/spool) when a spool directory is set,
// else a bounded queue in memory. Append must copy rec and be safe to call
// concurrently with Peek and Ack; Peek returns the oldest record not yet
// acknowledged (the same one until Ack).
type Queue interface {
	Append(rec []byte) error
	Peek() (rec []byte, ok bool, err error)
	Ack() error
	Len() int
	Close() error
}

// errQueueFull is memQueue's refusal; the spool has its own (spool.ErrFull).
var errQueueFull = errors.New("storage: in-memory batch queue full")

// memQueue is a Queue in memory, bounded by bytes. What it holds is lost
// with the process: it is the queue of a writer without a spool directory.
type memQueue struct {
	mu    sync.Mutex
	recs  [][]byte
	bytes int64
	max   int64
}

func newMemQueue(maxBytes int64) *memQueue { return &memQueue{max: maxBytes} }

func (q *memQueue) Append(rec []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.bytes+int64(len(rec)) > q.max {
		return errQueueFull
	}
	q.recs = append(q.recs, append([]byte(nil), rec...))
	q.bytes += int64(len(rec))
	return nil
}

func (q *memQueue) Peek() ([]byte, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.recs) == 0 {
		return nil, false, nil
	}
	return q.recs[0], true, nil
}

func (q *memQueue) Ack() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.recs) == 0 {
		return errors.New("storage: Ack on an empty queue")
	}
	q.bytes -= int64(len(q.recs[0]))
	q.recs[0] = nil
	q.recs = q.recs[1:]
	return nil
}

func (q *memQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs)
}

func (q *memQueue) Close() error { return nil }
