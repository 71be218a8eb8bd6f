package load

import (
	"bufio"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// BenchmarkEngineLoopback is the engine's own cost per SEND, with no relay:
// A's connection is B's on loopback, so each SEND is rendered and written
// by A, parsed, hash-checked and answered by B, and its 200 parsed by A.
// allocs/op is per SEND (both sides).
func BenchmarkEngineLoopback(b *testing.B) {
	for _, tc := range []struct {
		name        string
		size, chunk int
	}{{"100B", 100, 0}, {"16KiB", 16 << 10, 0}, {"1MiB-64KiB-chunks", 1 << 20, 64 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			ac, bc := loopback(b)
			frames := b.N
			if tc.chunk > 0 {
				frames = (b.N + 15) / 16 // 16 chunks a message: allocs/op per chunk
			}
			b.ReportAllocs()
			b.ResetTimer()
			p := runPair(b, ac, bc, Options{RelayURI: "msrp://127.0.0.1:1;tcp", Size: tc.size, Chunk: tc.chunk, Window: 64, Count: frames})
			b.StopTimer()
			if p.acked.Load() != int64(frames) || p.delivrd.Load() != int64(frames) || len(p.errs)+len(p.bErrs) != 0 {
				b.Fatalf("acked %d delivered %d of %d, errors %v %v", p.acked.Load(), p.delivrd.Load(), frames, p.errs, p.bErrs)
			}
		})
	}
}

// runPair runs the engine's pair on A's connection ac and B's bc (B's
// reads as Run sizes them) until A is idle and B caught up, then closes
// both and returns the pair.
func runPair(tb testing.TB, ac, bc net.Conn, o Options) *pair {
	tb.Helper()
	opts, err := o.withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	r := &runner{opts: opts, changed: make(chan struct{}, 1)}
	r.body = newBodyPattern(opts.frameBody())
	r.bodyCRC = r.body.crc(int64(opts.Size))
	mc := func(c net.Conn, uri string, rbuf int) *mconn {
		br := bufio.NewReaderSize(c, rbuf)
		return &mconn{nc: c, br: br, rd: msrp.NewReader(br, msrp.Limits{}), bw: newGatherWriter(c, writeBufSize), uri: uri}
	}
	p := &pair{r: r, a: mc(ac, "msrp://127.0.0.1:2/a;tcp", readBufSize), b: mc(bc, "msrp://127.0.0.1:3/b;tcp", opts.bReadSize())}
	p.head = []byte(" SEND\r\nTo-Path: msrp://127.0.0.1:3/b;tcp\r\nFrom-Path: " + p.a.uri + "\r\nMessage-ID: m")
	p.initWindow(opts.Window)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	r.start = time.Now()
	r.draining.Store(true) // B reports catching up
	wg.Add(3)
	go func() { defer wg.Done(); p.readB() }()
	go func() { defer wg.Done(); p.readA() }()
	go func() { defer wg.Done(); p.tick(stop) }()
	for !p.aIdle.Load() || p.delivrd.Load() < p.acked.Load() && !p.bDead.Load() {
		<-r.changed
	}
	close(stop)
	p.closing.Store(true)
	_ = ac.Close()
	_ = bc.Close()
	wg.Wait()
	return p
}
