package spool

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures a durable Append (write + fsync) of one record.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{256, 64 << 10} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			s := mustOpen(b, Config{Dir: b.TempDir(), MaxBytes: 1 << 40, SegmentBytes: 64 << 20})
			defer s.Close()
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Append(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPeekAck measures Peek + durable Ack (ack file replaced: write,
// fsync, rename, fsync dir) of one record.
func BenchmarkPeekAck(b *testing.B) {
	for _, size := range []int{256, 64 << 10} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			s := mustOpen(b, Config{Dir: b.TempDir(), MaxBytes: 1 << 40, SegmentBytes: 64 << 20})
			defer s.Close()
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				if err := s.Append(p); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, ok, err := s.Peek(); !ok || err != nil {
					b.Fatal(ok, err)
				}
				if err := s.Ack(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
