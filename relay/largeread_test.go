package relay

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// TestReadSideResize relays frames of large and small bodies, written
// back to back so that a frame boundary falls inside what one read got:
// the read side grows after a large body and shrinks after a small one,
// each time with the next frames already buffered (resizeReadSide moves
// them over). Every body must arrive whole and in order; the bodies hold
// decoys of their end-line and random bytes (RFC 4975 §7.1).
func TestReadSideResize(t *testing.T) {
	var grew, shrank atomic.Int32
	testHookResize = func(large bool) {
		if large {
			grew.Add(1)
		} else {
			shrank.Add(1)
		}
	}
	t.Cleanup(func() { testHookResize = nil })
	p := newBenchPair(t, false, nil)
	// p.send is a template: its To-Path and From-Path lines are reused.
	head := p.send[:bytes.Index(p.send, []byte("Message-ID"))]
	head = head[bytes.Index(head, []byte("\r\n"))+2:]
	rng := rand.New(rand.NewPCG(7, 8))
	frame := func(i, size int) (tid string, body, wire []byte) {
		tid = fmt.Sprintf("rs%06d", i)
		body = make([]byte, size)
		for j := range body {
			body[j] = byte(rng.IntN(256))
		}
		for _, d := range []string{"\r\n-------" + tid, "\r\n-------" + tid + "x\r\n", "\r\n-------"} {
			if len(body) > 2*len(d) {
				copy(body[rng.IntN(len(body)-len(d)):], d)
			}
		}
		wire = append([]byte("MSRP "+tid+" SEND\r\n"), head...)
		wire = append(wire, fmt.Sprintf("Message-ID: m%d\r\nByte-Range: 1-%d/%d\r\nContent-Type: application/octet-stream\r\n\r\n", i, size, size)...)
		wire = append(wire, body...)
		wire = append(wire, "\r\n-------"+tid+"$\r\n"...)
		return tid, body, wire
	}
	// A's 200s are read and dropped.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.Discard, p.a)
	}()
	rounds := [][]int{
		{100 << 10, 100, 300 << 10, 50, 70 << 10, 64<<10 + 1, 10, 5, 200 << 10, 1},
		{300, 200}, // the shrink: the second is buffered when the first is done
		{40 << 10, 100 << 10, 30, 256 << 10, 256<<10 + 7, 3, 2, 1},
	}
	n := 0
	for _, sizes := range rounds {
		var all []byte
		var want [][]byte
		for _, size := range sizes {
			_, body, wire := frame(n, size)
			n++
			all = append(all, wire...)
			want = append(want, body)
		}
		errc := make(chan error, 1)
		go func() { _, err := p.a.Write(all); errc <- err }()
		var resp []byte
		for i, w := range want {
			f, err := p.br.ReadFrame()
			if err != nil || string(f.Method) != "SEND" {
				t.Fatalf("frame %d: %v", i, err)
			}
			var got bytes.Buffer
			if _, err := f.Body().WriteTo(&got); err != nil || f.Flag() != msrp.FlagEnd {
				t.Fatalf("frame %d body: %v flag %q", i, err, f.Flag())
			}
			if !bytes.Equal(got.Bytes(), w) {
				t.Fatalf("frame %d of %d bytes: got %d bytes, differ", i, len(w), got.Len())
			}
			to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
			resp = fmt.Appendf(resp, "MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.Write(resp); err != nil {
			t.Fatal(err)
		}
	}
	if grew.Load() == 0 || shrank.Load() == 0 {
		t.Fatalf("read side grew %d times, shrank %d: the test did not move buffered bytes both ways", grew.Load(), shrank.Load())
	}
	// A large body (the read side grows after it), then one that breaks
	// off: the sender closes mid-body. The receiver gets the first whole
	// and the second ended with '#' (RFC 4975 §7.1), as much as arrived.
	_, body, wire := frame(n, 200<<10)
	_, _, cut := frame(n+1, 300<<10)
	cut = cut[:len(cut)-100<<10]
	go func() {
		_, _ = p.a.Write(append(wire, cut...))
		_ = p.a.Close()
	}()
	f, err := p.br.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := f.Body().WriteTo(&got); err != nil || f.Flag() != msrp.FlagEnd || !bytes.Equal(got.Bytes(), body) {
		t.Fatalf("whole frame before the cut: %v flag %q, %d bytes", err, f.Flag(), got.Len())
	}
	if f, err = p.br.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if _, err := f.Body().WriteTo(&got); err != nil || f.Flag() != msrp.FlagAbort {
		t.Fatalf("frame cut off by the sender's close: %v flag %q", err, f.Flag())
	}
	if sent := cut[bytes.Index(cut, []byte("\r\n\r\n"))+4:]; !bytes.Equal(got.Bytes(), sent) {
		t.Fatalf("cut frame: %d body bytes relayed, %d sent", got.Len(), len(sent))
	}
	wg.Wait()
}
