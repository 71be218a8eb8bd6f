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
	for _, size := range []int{100, 16 << 10} {
		b.Run(map[int]string{100: "100B", 16 << 10: "16KiB"}[size], func(b *testing.B) {
			opts, err := Options{RelayURI: "msrp://127.0.0.1:1;tcp", Size: size, Window: 64, Count: b.N}.withDefaults()
			if err != nil {
				b.Fatal(err)
			}
			r := &runner{opts: opts, changed: make(chan struct{}, 1)}
			r.body = newBodyPattern(opts.frameBody())
			r.bodyCRC = r.body.crc(int64(size))
			ac, bc := loopback(b)
			mc := func(c net.Conn, uri string) *mconn {
				br := bufio.NewReaderSize(c, readBufSize)
				return &mconn{br: br, rd: msrp.NewReader(br, msrp.Limits{}), bw: newGatherWriter(c, writeBufSize), uri: uri}
			}
			p := &pair{r: r, a: mc(ac, "msrp://127.0.0.1:2/a;tcp"), b: mc(bc, "msrp://127.0.0.1:3/b;tcp")}
			p.a.nc, p.b.nc = ac, bc
			p.head = []byte(" SEND\r\nTo-Path: msrp://127.0.0.1:3/b;tcp\r\nFrom-Path: " + p.a.uri + "\r\nMessage-ID: m")
			p.initWindow(opts.Window)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			r.start = time.Now()
			r.draining.Store(true) // B reports catching up
			wg.Add(3)
			go func() { defer wg.Done(); p.readB() }()
			go func() { defer wg.Done(); p.readA() }()
			go func() { defer wg.Done(); p.tick(stop) }()
			for !p.aIdle.Load() || p.delivrd.Load() < p.acked.Load() {
				<-r.changed
			}
			b.StopTimer()
			close(stop)
			p.closing.Store(true)
			_ = ac.Close()
			_ = bc.Close()
			wg.Wait()
			if p.acked.Load() != int64(b.N) || p.delivrd.Load() != int64(b.N) || len(p.errs)+len(p.bErrs) != 0 {
				b.Fatalf("acked %d delivered %d of %d, errors %v %v", p.acked.Load(), p.delivrd.Load(), b.N, p.errs, p.bErrs)
			}
		})
	}
}
