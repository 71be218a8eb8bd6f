package metrics

import (
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Explicit buckets hold samples in (previous bound, bound], as the SDK's.
func TestHistSeries(t *testing.T) {
	bounds := []float64{0.001, 0.01}
	for _, tc := range []struct {
		name     string
		samples  []time.Duration
		counts   []uint64
		sum      float64
		min, max float64
	}{
		{"on a bound", []time.Duration{time.Millisecond}, []uint64{1, 0, 0}, 0.001, 0.001, 0.001},
		{"just above", []time.Duration{time.Millisecond + 1}, []uint64{0, 1, 0}, 0.001000001, 0.001000001, 0.001000001},
		{"above the last", []time.Duration{time.Second, 5 * time.Millisecond}, []uint64{0, 1, 1}, 1.005, 0.005, 1},
		{"negative is zero", []time.Duration{-time.Second}, []uint64{1, 0, 0}, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHistSeries(*attribute.EmptySet(), bounds)
			if _, ok := s.dataPoint(time.Time{}, time.Time{}); ok {
				t.Fatal("a series without samples has a data point")
			}
			for _, d := range tc.samples {
				s.record(d)
			}
			dp, ok := s.dataPoint(time.Time{}, time.Time{})
			if !ok {
				t.Fatal("no data point")
			}
			if !slices.Equal(dp.BucketCounts, tc.counts) || dp.Count != uint64(len(tc.samples)) {
				t.Errorf("counts %v (count %d), want %v", dp.BucketCounts, dp.Count, tc.counts)
			}
			lo, _ := dp.Min.Value()
			hi, _ := dp.Max.Value()
			if d := dp.Sum - tc.sum; d > 1e-12 || d < -1e-12 || lo != tc.min || hi != tc.max {
				t.Errorf("sum %v min %v max %v, want %v %v %v", dp.Sum, lo, hi, tc.sum, tc.min, tc.max)
			}
		})
	}
}
