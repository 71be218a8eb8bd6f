package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// Review of the write path for large bodies (issue 16): a destination
// that stalls (the relay's memory and spill stay bounded: TCP
// back-pressure on the source), a body cut off in the middle of a piece
// (the frame is ended with '#', RFC 4975 §7.1), and tracing (every byte
// counted and captured as written). The read deadlines in these tests
// only end a failing test.

// randBytes is n random bytes (a byte lost, doubled or moved shows).
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n:n]
}

// largeSEND is a SEND from client i to client j of b with body and
// transact-id tid (unique: a frame's end-line cannot be mistaken for
// another's).
func (b *batchRelay) largeSEND(i, j int, tid, mid string, body []byte) []byte {
	f := b.send(i, j, mid, body)
	old := f[5 : bytes.IndexByte(f[5:], ' ')+5]
	f = bytes.Replace(f, []byte("\r\n-------"+string(old)+"$"), []byte("\r\n-------"+tid+"$"), 1)
	return append([]byte("MSRP "+tid), f[5+len(old):]...)
}

// writeStuck reports whether a write into a peer's socket waits for
// room (goroutine state "IO wait": the socket is full) in a way that
// holds a read loop: the read loop's own blocking write
// (sockWriter.Write), or the read loop waiting for the writer
// goroutine's drain (awaitDrain) while that drain waits for room. With
// a peer that reads nothing and fixed socket buffers no room is ever
// made: the state is final, no time is involved. buf holds the dump.
func writeStuck(buf []byte) bool {
	dump := string(buf[:runtime.Stack(buf, true)])
	var awaiting, draining bool
	for _, g := range strings.Split(dump, "\n\n") {
		ioWait := strings.Contains(g, "[IO wait")
		switch {
		case ioWait && strings.Contains(g, "(*sockWriter).Write("):
			return true
		case ioWait && (strings.Contains(g, "(*conn).drain(") || strings.Contains(g, "(*sockWriter).writeSpill(")):
			draining = true
		case strings.Contains(g, "(*sockWriter).awaitDrain("):
			awaiting = true
		}
	}
	return awaiting && draining
}

// A destination that stops reading while frames are forwarded to it:
// frames below the write buffer's size (each one flushed between
// frames: the spill, bounded by spillMax) or large ones (bodies written
// blocking as they are read). The forwarding read loop ends up waiting
// (TCP back-pressure on the source), the relay holds neither the
// message nor more than spillMax (plus a buffer) in its spill, and once
// the peer reads it gets every frame whole and in order.
func TestLargeStalledDestinationBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int // frames, 16 MB or more in all
		size func(k int) int
	}{
		{"below the write buffer", 1000, func(int) int { return 16 << 10 }},
		{"large", 80, func(int) int { return 256 << 10 }},
		{"mixed", 300, func(k int) int {
			if k%5 == 4 {
				return 256<<10 + k
			}
			return 1000 + k*50
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { stalledDestination(t, tc.n, tc.size) })
	}
}

func stalledDestination(t *testing.T, n int, size func(k int) int) {
	b := newBatchRelay(t, 2, func(c *Config) {
		c.Limits.SendTimeout, c.Limits.IdleTimeout = 5*time.Minute, 5*time.Minute
	})
	c := b.connOf(1)
	// Fixed socket buffers (no autotuning that makes room later): once a
	// write to B finds no room, none comes until B reads.
	_ = c.nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
	_ = b.ncs[1].(*net.TCPConn).SetReadBuffer(64 << 10)
	rng := rand.New(rand.NewPCG(5, uint64(n)))
	var bodies, frames [][]byte
	total := 0
	for k := range n {
		bodies = append(bodies, randBytes(rng, size(k)))
		frames = append(frames, b.largeSEND(0, 1, fmt.Sprintf("big%05d", k), fmt.Sprintf("m%d", k), bodies[k]))
		total += len(bodies[k])
	}
	go func() { _, _ = io.Copy(io.Discard, b.ncs[0]) }() // nothing is expected; never let A's socket fill
	maxSpill := 0
	sampleSpill := func() {
		if c.wmu.TryLock() {
			maxSpill = max(maxSpill, len(c.cw.spill))
			c.wmu.Unlock()
		}
	}
	dump := make([]byte, 1<<20)
	runtime.GC()
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)
	// A sends one frame at a time, the next once the relay has forwarded
	// it (a small one is flushed between frames: the spill while B's
	// socket is full), until the relay stops taking them.
	// giveUp only ends a test that would hang (writeStuck no longer
	// recognises the relay's waiting write): it decides nothing.
	giveUp := time.Now().Add(2 * time.Minute)
	k := 0
	stuck := false
	for ; k < len(frames) && !stuck; k++ {
		if _, err := b.ncs[0].Write(frames[k]); err != nil {
			t.Fatal(err)
		}
		for i := 0; b.r.Stats().Forwarded <= int64(k); i++ {
			if i%64 == 63 {
				if writeStuck(dump) {
					stuck = true
					break
				}
				if time.Now().After(giveUp) {
					t.Fatalf("frame %d not forwarded, and no write to B waits for room: %s", k, dump[:runtime.Stack(dump, true)])
				}
			}
			runtime.Gosched()
		}
		sampleSpill()
	}
	if !stuck {
		t.Fatalf("all %d frames (%d MB) forwarded to a peer that reads nothing: the relay holds them", len(frames), total>>20)
	}
	runtime.GC()
	runtime.ReadMemStats(&during)
	if grew := int64(during.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Errorf("the relay holds %d MB more while its destination stalls (%d frames forwarded): it buffered the message", grew>>20, k)
	}
	// The rest, while B reads: every frame, whole, in order.
	errc := make(chan error, 1)
	go func() {
		var err error
		for _, f := range frames[k:] {
			if _, err = b.ncs[0].Write(f); err != nil {
				break
			}
		}
		errc <- err
	}()
	_ = b.ncs[1].SetReadDeadline(time.Now().Add(2 * time.Minute))
	rd := msrp.NewReader(bufio.NewReaderSize(b.ncs[1], 256<<10), msrp.Limits{})
	var got bytes.Buffer
	for k := range frames {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", k, err)
		}
		got.Reset()
		if _, err := f.Body().WriteTo(&got); err != nil || f.Flag() != msrp.FlagEnd {
			t.Fatalf("frame %d: %v, flag %q", k, err, f.Flag())
		}
		if mid := string(f.Get(msrp.HdrMessageID)); mid != fmt.Sprintf("m%d", k) || !bytes.Equal(got.Bytes(), bodies[k]) {
			t.Fatalf("frame %d: Message-ID %s, %d body bytes, want m%d and %d intact", k, mid, got.Len(), k, len(bodies[k]))
		}
		sampleSpill()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A flush between frames spills up to spillMax; the writer goroutine
	// takes a buffer left behind into the spill as well (conn.drain).
	if maxSpill > spillMax+connBufSize {
		t.Fatalf("%d bytes spilled, more than spillMax %d and a buffer", maxSpill, spillMax)
	}
	t.Logf("A had sent %d of %d frames when the relay stopped taking them; spill at most %d bytes", k, len(frames), maxSpill)
}

// A body cut off in the middle of a piece (the source closes): what
// arrived of it is relayed, once, and the frame is ended with '#' (RFC
// 4975 §7.1); the whole frame before it arrives whole.
func TestLargeBodyCutMidPiece(t *testing.T) {
	p := newBenchPair(t, false, nil)
	rng := rand.New(rand.NewPCG(9, 10))
	frame := func(tid string, body []byte) []byte {
		return []byte("MSRP " + tid + " SEND\r\nTo-Path: " + p.toPath + "\r\nFrom-Path: " + p.fromP +
			"\r\nMessage-ID: " + tid + "\r\nByte-Range: 1-" + fmt.Sprint(len(body)) + "/" + fmt.Sprint(len(body)) +
			"\r\nContent-Type: application/octet-stream\r\n\r\n" + string(body) + "\r\n-------" + tid + "$\r\n")
	}
	whole, cutBody := randBytes(rng, 300<<10), randBytes(rng, 500<<10)
	w1 := frame("cut00001", whole)
	w2 := frame("cut00002", cutBody)
	head := bytes.Index(w2, []byte("\r\n\r\n")) + 4
	sent := 200<<10 + 123 // mid-piece: not at a read or chunk boundary
	go func() {
		_, _ = p.a.Write(append(w1, w2[:head+sent]...))
		_ = p.a.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, p.a)
	}()
	_ = p.b.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got bytes.Buffer
	for i, want := range []struct {
		body []byte
		flag byte
	}{{whole, msrp.FlagEnd}, {cutBody[:sent], msrp.FlagAbort}} {
		f, err := p.br.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		got.Reset()
		if _, err := f.Body().WriteTo(&got); err != nil || f.Flag() != want.flag {
			t.Fatalf("frame %d: %v, flag %q, want %q", i, err, f.Flag(), want.flag)
		}
		if !bytes.Equal(got.Bytes(), want.body) {
			t.Fatalf("frame %d: %d body bytes relayed, %d sent, equal %v", i, got.Len(), len(want.body), bytes.Equal(got.Bytes(), want.body[:min(got.Len(), len(want.body))]))
		}
	}
}

// Tracing sees a large forwarded frame as it went out: its size counts
// every byte B got, and its capture is the frame's first bytes, as many
// as configured (DefaultTraceCaptureBytes).
func TestLargeTraced(t *testing.T) {
	type seen struct {
		tid  string
		size int64
		wire []byte
	}
	var mu sync.Mutex
	var out []seen
	p := newBenchPair(t, true, func(_ *Relay, e *event.Event) {
		if e.Kind == event.FrameOut && string(e.Frame.Method) == "SEND" {
			mu.Lock()
			out = append(out, seen{string(e.Frame.TransactID), e.Frame.Size, bytes.Clone(e.Frame.Wire)})
			mu.Unlock()
		}
	})
	rng := rand.New(rand.NewPCG(11, 12))
	sizes := []int{100 << 10, 300<<10 + 5, 70 << 10, 10}
	var all []byte
	for i, n := range sizes {
		tid := fmt.Sprintf("trc%05d", i)
		body := randBytes(rng, n)
		all = append(all, []byte("MSRP "+tid+" SEND\r\nTo-Path: "+p.toPath+"\r\nFrom-Path: "+p.fromP+
			"\r\nMessage-ID: "+tid+"\r\nByte-Range: 1-"+fmt.Sprint(n)+"/"+fmt.Sprint(n)+
			"\r\nFailure-Report: no\r\nContent-Type: application/octet-stream\r\n\r\n"+string(body)+"\r\n-------"+tid+"$\r\n")...)
	}
	go func() { _, _ = p.a.Write(all) }()
	_ = p.b.SetReadDeadline(time.Now().Add(30 * time.Second))
	raw := bufio.NewReaderSize(p.b, 64<<10)
	var wires [][]byte // the frames as B got them
	for range sizes {
		// The relay's transact-id is its own: read the start line, then
		// up to its end-line.
		start, err := raw.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		tid := bytes.Fields(start)[1]
		frame := append([]byte(nil), start...)
		end := []byte("\r\n-------" + string(tid) + "$\r\n")
		for !bytes.HasSuffix(frame, end) {
			b, err := raw.ReadByte()
			if err != nil {
				t.Fatal(err)
			}
			frame = append(frame, b)
		}
		wires = append(wires, frame)
	}
	// The frame-out event follows the frame's last byte: wait for the
	// Observer without sleeping.
	for {
		mu.Lock()
		n := len(out)
		mu.Unlock()
		if n >= len(sizes) {
			break
		}
		runtime.Gosched()
	}
	mu.Lock()
	defer mu.Unlock()
	for i, w := range wires {
		s := out[i]
		if !bytes.HasPrefix(w, []byte("MSRP "+s.tid+" ")) {
			t.Fatalf("frame %d: event for %s, B got %q", i, s.tid, w[:min(len(w), 30)])
		}
		if s.size != int64(len(w)) {
			t.Errorf("frame %d: traced size %d, B got %d bytes", i, s.size, len(w))
		}
		if want := w[:min(len(w), DefaultTraceCaptureBytes)]; !bytes.Equal(s.wire, want) {
			t.Errorf("frame %d: traced capture of %d bytes is not the frame's first %d bytes", i, len(s.wire), len(want))
		}
	}
}
