//go:build !race

package load

import (
	"io"
	"testing"
)

// A large chunk costs no allocation: rendered into A's gatherWriter (its
// start staged, its body pattern slices referenced) and written with one
// writev.
func TestRenderLargeChunkAlloc(t *testing.T) {
	ac, bc := loopback(t)
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, bc); close(done) }()
	opts, err := Options{RelayURI: "msrp://127.0.0.1:1;tcp", Size: 10 << 20, Chunk: 64 << 10}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{opts: opts, body: newBodyPattern(opts.frameBody())}
	p := &pair{r: r, a: &mconn{nc: ac, bw: newGatherWriter(ac, writeBufSize)}, head: []byte(" SEND\r\nTo-Path: x\r\nFrom-Path: y\r\nMessage-ID: m")}
	if !p.a.bw.vec {
		t.Fatal("no writev path on TCP")
	}
	m := &msgForAllocTest
	off := int64(0)
	allocs := testing.AllocsPerRun(200, func() {
		p.render(3, 7, m, off, 64<<10, false)
		off = (off + 64<<10 + 7) % (10<<20 - 64<<10)
		if err := p.a.bw.Flush(); err != nil {
			t.Fatal(err)
		}
	})
	_ = ac.Close()
	<-done
	if allocs != 0 {
		t.Fatalf("%v allocations per chunk, want 0", allocs)
	}
}

var msgForAllocTest = msgRec{seq: 12345, sched: 678}
