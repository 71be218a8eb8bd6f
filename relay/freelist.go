package relay

import "sync"

// freeList keeps recycled objects of one kind for the forwarding path, up
// to max of them. Unlike a sync.Pool it is not emptied by a garbage
// collection and has no per-P private slot another P cannot take from, so
// under CPU contention a relayed frame still finds a recycled object
// instead of allocating (TestRelaySENDAllocs under load). What it keeps is
// bounded by max; beyond it recycled objects are left to the collector.
type freeList[T any] struct {
	mu  sync.Mutex
	xs  []*T
	max int
	new func() *T
}

func (l *freeList[T]) get() *T {
	l.mu.Lock()
	if n := len(l.xs); n > 0 {
		x := l.xs[n-1]
		l.xs[n-1] = nil
		l.xs = l.xs[:n-1]
		l.mu.Unlock()
		return x
	}
	l.mu.Unlock()
	return l.new()
}

func (l *freeList[T]) put(x *T) {
	l.mu.Lock()
	if len(l.xs) < l.max {
		if l.xs == nil {
			l.xs = make([]*T, 0, l.max) // once: put never allocates again
		}
		l.xs = append(l.xs, x)
	}
	l.mu.Unlock()
}
