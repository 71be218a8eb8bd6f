package metrics

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The latency histograms are recorded with atomic adds on the hot path and
// turned into OTel data points only at collection (histProducer, a
// metric.Producer of the Prometheus and OTLP readers): an SDK histogram's
// Record costs a few hundred nanoseconds (attribute resolution, a map
// lookup, a lock), twice per relayed SEND. The exported series are those
// the SDK would export: cumulative, explicit buckets, sum, min and max, a
// series only once it has a sample.

// maxBounds bounds the explicit bucket boundaries of a histogram.
const maxBounds = 15

// histSeries is one series (one attribute set) of a histogram.
type histSeries struct {
	attrs   attribute.Set
	bounds  []float64 // seconds, ascending
	boundNS [maxBounds]int64
	nb      int
	// counts[i]: samples ≤ bounds[i] and > bounds[i-1]; counts[nb]: above.
	counts   [maxBounds + 1]atomic.Uint64
	sumNS    atomic.Int64
	min, max atomic.Int64 // nanoseconds; valid when a count is not zero
	_        [64]byte     // the next series' counters on their own line
}

func newHistSeries(attrs attribute.Set, bounds []float64) *histSeries {
	if len(bounds) > maxBounds {
		panic("metrics: too many histogram bounds")
	}
	s := &histSeries{attrs: attrs, bounds: bounds, nb: len(bounds)}
	for i, b := range bounds {
		s.boundNS[i] = int64(math.Round(b * 1e9))
	}
	s.min.Store(math.MaxInt64)
	s.max.Store(math.MinInt64)
	return s
}

// record adds a sample of d (a negative one counts as 0, as seconds did).
func (s *histSeries) record(d time.Duration) {
	ns := max(int64(d), 0)
	i := 0
	for i < s.nb && ns > s.boundNS[i] {
		i++
	}
	s.counts[i].Add(1)
	s.sumNS.Add(ns)
	for {
		m := s.min.Load()
		if ns >= m || s.min.CompareAndSwap(m, ns) {
			break
		}
	}
	for {
		m := s.max.Load()
		if ns <= m || s.max.CompareAndSwap(m, ns) {
			break
		}
	}
}

// dataPoint returns the series as a cumulative data point, false while it
// has no sample. Counters read one after another while samples come: the
// count is the buckets' sum, the sum and extrema may be a sample apart.
func (s *histSeries) dataPoint(start, now time.Time) (metricdata.HistogramDataPoint[float64], bool) {
	counts := make([]uint64, s.nb+1)
	var n uint64
	for i := range counts {
		counts[i] = s.counts[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	dp := metricdata.HistogramDataPoint[float64]{
		Attributes:   s.attrs,
		StartTime:    start,
		Time:         now,
		Count:        n,
		Bounds:       s.bounds,
		BucketCounts: counts,
		Sum:          float64(s.sumNS.Load()) / 1e9,
	}
	if lo, hi := s.min.Load(), s.max.Load(); lo <= hi {
		dp.Min = metricdata.NewExtrema(float64(lo) / 1e9)
		dp.Max = metricdata.NewExtrema(float64(hi) / 1e9)
	}
	return dp, true
}

// histogram is one named histogram and its series.
type histogram struct {
	name, unit, desc string
	series           []*histSeries
}

// histProducer produces the histograms at collection. Its histograms are
// set before the readers first collect (newObserver), never after.
type histProducer struct {
	scope instrumentation.Scope
	start time.Time
	hists atomic.Pointer[[]*histogram]
}

func newHistProducer(scope string) *histProducer {
	return &histProducer{scope: instrumentation.Scope{Name: scope}, start: time.Now()}
}

func (p *histProducer) set(hs []*histogram) { p.hists.Store(&hs) }

// Produce implements metric.Producer.
func (p *histProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	hs := p.hists.Load()
	if hs == nil {
		return nil, nil
	}
	now := time.Now()
	var ms []metricdata.Metrics
	for _, h := range *hs {
		var dps []metricdata.HistogramDataPoint[float64]
		for _, s := range h.series {
			if dp, ok := s.dataPoint(p.start, now); ok {
				dps = append(dps, dp)
			}
		}
		if len(dps) == 0 {
			continue
		}
		ms = append(ms, metricdata.Metrics{
			Name:        h.name,
			Description: h.desc,
			Unit:        h.unit,
			Data:        metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: dps},
		})
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{Scope: p.scope, Metrics: ms}}, nil
}
