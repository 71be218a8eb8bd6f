package load

import (
	"math"
	"math/bits"
	"time"
)

// Latency is a distribution summary in nanoseconds (JSON: integer ns).
type Latency struct {
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func (h *histogram) latency() Latency {
	return Latency{P50: h.quantile(0.50), P90: h.quantile(0.90), P99: h.quantile(0.99), Max: h.max}
}

// histogram is a log-linear latency histogram: 16 sub-buckets per power of
// two (about 6% resolution), fixed size whatever the sample count.
type histogram struct {
	counts [64 * 16]int64
	n      int64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 16 {
		return int(v)
	}
	e := bits.Len64(v) - 5 // keep the top 5 bits: 1xxxx
	return (e+1)*16 + int(v>>uint(e)&15)
}

func bucketValue(b int) time.Duration {
	if b < 16 {
		return time.Duration(b)
	}
	e := b/16 - 1
	return time.Duration((uint64(16+b%16) << uint(e)) + (1<<uint(e))/2)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(b), h.max)
		}
	}
	return h.max
}
