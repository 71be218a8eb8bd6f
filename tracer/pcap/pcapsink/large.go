package pcapsink

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// maxLargeBytes bounds the buffers of large records, queued or kept for
// reuse (docs/CONFIG.md, "type: pcap"): a record that does not fit is
// dropped and counted.
const maxLargeBytes = 32 << 20

// Large buffers come in size classes of eight steps per power of two (a
// buffer is at most 1/8 larger than its record: a 64 KiB chunk's frame of
// some 65.7 KB takes 72 KiB) from above slotBuf to largeMaxClass; a larger
// record gets a buffer of its own size, not kept after its write.
const (
	largeMinShift = 10 // classes start above 1 << largeMinShift (= slotBuf)
	largeMaxShift = 20 // and end at 1 << largeMaxShift (1 MiB)
	largeSteps    = 8
	largeClasses  = (largeMaxShift - largeMinShift) * largeSteps
)

// largeBufs hands out the buffers of records longer than a queue slot's
// own (slotBuf) from per-size-class free lists. The bytes of the buffers
// handed out and not yet given back (queued or being written) plus those
// kept on the free lists stay within limit: a record whose buffer would
// go beyond is refused (counted in dropped); a new buffer that does not fit
// beside the free ones first lets free buffers of other classes go. Under
// a steady load of large frames the queue so reuses the same buffers
// instead of allocating one per record, and a burst of large frames costs
// at most limit bytes, whatever the queue's length. Safe for concurrent
// use: get runs on producers' goroutines, put on the queue's.
type largeBufs struct {
	mu      sync.Mutex
	limit   int64
	inUse   int64 // bytes handed out, not yet given back
	free    int64 // bytes on the free lists
	lists   [largeClasses][][]byte
	dropped atomic.Uint64
}

// largeClass returns the index of the size class of n bytes (n > slotBuf)
// and its size; index -1 above the largest class (size n).
func largeClass(n int) (int, int) {
	o := bits.Len(uint(n-1)) - 1 // 1<<o < n <= 1<<(o+1)
	if o >= largeMaxShift {
		return -1, n
	}
	step := 1 << (o - 3)
	k := (n - 1<<o + step - 1) / step // 1..8
	return (o-largeMinShift)*largeSteps + k - 1, 1<<o + k*step
}

// get returns an empty buffer of at least n bytes (n > slotBuf), or false
// (counted in dropped) when it does not fit in the limit.
func (l *largeBufs) get(n int) ([]byte, bool) {
	c, size := largeClass(n)
	l.mu.Lock()
	if l.inUse+int64(size) > l.limit {
		l.mu.Unlock()
		l.dropped.Add(1)
		return nil, false
	}
	l.inUse += int64(size)
	if c >= 0 {
		if s := l.lists[c]; len(s) > 0 {
			b := s[len(s)-1]
			s[len(s)-1] = nil
			l.lists[c] = s[:len(s)-1]
			l.free -= int64(size)
			l.mu.Unlock()
			return b[:0], true
		}
	}
	for i := largeClasses - 1; i >= 0 && l.inUse+l.free > l.limit; i-- {
		for s := l.lists[i]; len(s) > 0 && l.inUse+l.free > l.limit; s = l.lists[i] {
			l.free -= int64(cap(s[len(s)-1]))
			s[len(s)-1] = nil
			l.lists[i] = s[:len(s)-1]
		}
	}
	l.mu.Unlock()
	return make([]byte, 0, size), true
}

// put gives back a buffer from get; one of a class is kept for reuse.
func (l *largeBufs) put(b []byte) {
	size := cap(b)
	c := -1
	if size <= 1<<largeMaxShift {
		var cs int
		if c, cs = largeClass(size); cs != size {
			c = -1 // not one of ours
		}
	}
	l.mu.Lock()
	l.inUse -= int64(size)
	if c >= 0 && l.inUse+l.free+int64(size) <= l.limit {
		l.lists[c] = append(l.lists[c], b[:0])
		l.free += int64(size)
	}
	l.mu.Unlock()
}

// usage returns the bytes handed out and those kept free.
func (l *largeBufs) usage() (inUse, free int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inUse, l.free
}

// frameBytes bounds what sink.AppendFrame appends for f with limit: the
// frame's captured bytes when it is kept whole, else the bytes kept plus
// the marker line and end-line.
func frameBytes(f *event.FrameInfo, limit int) int {
	n := len(f.Wire)
	if int64(n) > f.Size {
		n = int(f.Size)
	}
	if limit > 0 && n > limit {
		n = limit
	}
	if int64(n) == f.Size {
		return n
	}
	return n + sink.MaxFrameOverhead
}
