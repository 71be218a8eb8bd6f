package auth

import (
	"bytes"
	"container/heap"
	"fmt"
	"sync"
)

// tracker remembers, per nonce, the highest nonce-count accepted, in a
// table of at most max entries ordered by (issue time, key) (a min-heap).
// The key (issue time || random) breaks ties between nonces issued at the
// same clock reading.
//
// Invariant: every nonce that was ever accepted and is no longer in the
// table orders at or before floor. So a nonce that is not in the table is
// a first use only if it orders after floor; otherwise it is answered
// ErrStale.
type tracker struct {
	mu    sync.Mutex
	max   int
	m     map[nonceKey]*entry
	h     entryHeap
	floor *entry // the greatest entry ever evicted or expired; nil: none
}

type entry struct {
	key    nonceKey
	issued int64 // Unix ns
	nc     uint32
}

func newTracker(max int) *tracker {
	return &tracker{max: max, m: make(map[nonceKey]*entry)}
}

// use records nonce-count nc for the nonce key issued at issued (Unix ns),
// after dropping entries issued before expireBefore. It returns ErrStale
// or ErrReplay (wrapped) when the use must be refused.
func (t *tracker) use(key nonceKey, issued, expireBefore int64, nc uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.h) > 0 && t.h[0].issued < expireBefore {
		t.drop()
	}
	if e, ok := t.m[key]; ok {
		if nc <= e.nc {
			return fmt.Errorf("%w: nc %08x, highest accepted %08x", ErrReplay, nc, e.nc)
		}
		e.nc = nc
		return nil
	}
	e := &entry{key: key, issued: issued, nc: nc}
	if t.floor != nil && !t.floor.before(e) {
		return fmt.Errorf("%w: nonce no longer tracked (table of %d full)", ErrStale, t.max)
	}
	t.m[key] = e
	heap.Push(&t.h, e)
	for len(t.h) > t.max {
		// Possibly the entry just added, if it is the oldest: this use is
		// still a first use, and later ones are stale.
		t.drop()
	}
	return nil
}

// drop removes the oldest entry and raises floor to it.
func (t *tracker) drop() {
	e := heap.Pop(&t.h).(*entry)
	delete(t.m, e.key)
	if t.floor == nil || t.floor.before(e) {
		t.floor = e
	}
}

// before reports whether e orders before f: by issue time, then key.
func (e *entry) before(f *entry) bool {
	if e.issued != f.issued {
		return e.issued < f.issued
	}
	return bytes.Compare(e.key[:], f.key[:]) < 0
}

func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.h)
}

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].before(h[j]) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return e
}
