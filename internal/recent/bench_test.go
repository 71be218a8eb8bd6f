package recent

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// BenchmarkPutRelay: a relayed SEND's four frames (SEND in and out, 200 in
// and out) of 4 pairs, into a ring of the default size, per frame; cpu-ns/op
// is the process's CPU time (a shared machine's wall time says little).
// BenchmarkPutRelaySmall: the same into a ring of 500 frames, which stays
// in the cache: the difference is what writing cold memory costs.
func BenchmarkPutRelay(b *testing.B) {
	r := NewRing("r", Config{Frames: benchFrames})
	var evs []*event.Event
	for p := range 4 {
		sa, sb := fmt.Sprintf("sessA%020d", p), fmt.Sprintf("sessB%020d", p)
		send := "MSRP a786hjs2 SEND\r\nTo-Path: msrp://127.0.0.1:2855/" + sa + ";tcp msrp://127.0.0.1:2855/" + sb + ";tcp msrp://127.0.0.1:40000/c;tcp\r\nFrom-Path: msrp://127.0.0.1:40001/c;tcp\r\nMessage-ID: 87652491\r\nByte-Range: 1-100/100\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("x", 100) + "\r\n-------a786hjs2$\r\n"
		ok := "MSRP a786hjs2 200 OK\r\nTo-Path: msrp://127.0.0.1:2855/" + sa + ";tcp msrp://127.0.0.1:40001/c;tcp\r\nFrom-Path: msrp://127.0.0.1:40000/c;tcp\r\n-------a786hjs2$\r\n"
		evs = append(evs, frame(4*p, sa, sb, event.DirIn, "SEND", 0, send), frame(4*p+1, sa, sb, event.DirOut, "SEND", 0, send),
			frame(4*p+2, sa, sb, event.DirIn, "", 200, ok), frame(4*p+3, sa, sb, event.DirOut, "", 200, ok))
	}
	benchPut(b, r, evs)
}

// benchPut puts evs into r in turn, one a benchmark op, and reports the
// process's CPU time per op (cpu-ns/op).
func benchPut(b *testing.B, r *Ring, evs []*event.Event) {
	b.ReportAllocs()
	i := 0
	c0 := cpuNow()
	for b.Loop() {
		r.Put(evs[i%len(evs)])
		i++
	}
	b.ReportMetric(float64(cpuNow()-c0)/float64(b.N), "cpu-ns/op")
}

func cpuNow() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

var benchFrames = DefaultFrames

func BenchmarkPutRelaySmall(b *testing.B) {
	benchFrames = 500
	defer func() { benchFrames = DefaultFrames }()
	BenchmarkPutRelay(b)
}

// benchPairs is BenchmarkPutRelayManyPairs' pair count.
var benchPairs = 2000

// BenchmarkPutRelayManyPairs: the same four frames per SEND from 2,000
// pairs in turn, into a ring of the default size: a session's entries in
// a shard come and go as its frames enter and leave the ring.
func BenchmarkPutRelayManyPairs(b *testing.B) {
	r := NewRing("r", Config{Frames: DefaultFrames})
	var evs []*event.Event
	for p := range benchPairs {
		sa, sb := fmt.Sprintf("sessA%020d", p), fmt.Sprintf("sessB%020d", p)
		evs = append(evs, frame(4*p, sa, sb, event.DirIn, "SEND", 0, "MSRP a SEND\r\n"), frame(4*p+1, sa, sb, event.DirOut, "SEND", 0, "MSRP a SEND\r\n"),
			frame(4*p+2, sa, sb, event.DirIn, "", 200, "MSRP a 200 OK\r\n"), frame(4*p+3, sa, sb, event.DirOut, "", 200, "MSRP a 200 OK\r\n"))
	}
	benchPut(b, r, evs)
}

// BenchmarkPutRelayManyPairs8000: 8,000 pairs: no session's frames are
// in the ring when its next ones come.
func BenchmarkPutRelayManyPairs8000(b *testing.B) {
	benchPairs = 8000
	defer func() { benchPairs = 2000 }()
	BenchmarkPutRelayManyPairs(b)
}
