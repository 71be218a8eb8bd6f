package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
)

func floorModes() []string {
	if runtime.GOOS == "linux" {
		return []string{FloorGoroutine, FloorEpoll}
	}
	return []string{FloorGoroutine}
}

// startForward runs a forwarder in mode (two loops in epoll mode) until
// the test ends; stop cancels it and returns Serve's result.
func startForward(t *testing.T, mode string) (addr string, stop func() error) {
	f, stop := startForwardLoops(t, mode, 2)
	return f.Addr(), stop
}

// startForwardLoops is startForward with loops event loops.
func startForwardLoops(t *testing.T, mode string, loops int) (f *Forwarder, stop func() error) {
	t.Helper()
	f, err := ListenForward("127.0.0.1:0", mode, loops)
	if err != nil {
		t.Fatal(err)
	}
	tl := &testLog{t: t}
	testLogs.Store(f, tl)
	t.Cleanup(func() { testLogs.Delete(f) })
	f.Log = ratelog.New(slog.New(slog.NewTextHandler(tl, nil)), ratelog.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(10 * time.Second):
				serr = errors.New("Serve did not return within 10 s of the cancel")
			}
			f.Log.Flush()
			tl.close()
		})
		return serr
	}
	t.Cleanup(func() { _ = stop() })
	return f, stop
}

// testLog writes the forwarder's log lines to the test's log until close,
// and keeps them.
type testLog struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
	lines  []string
}

// testLogs is each running test forwarder's log.
var testLogs sync.Map // *Forwarder → *testLog

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := string(bytes.TrimSuffix(p, []byte("\n")))
	l.lines = append(l.lines, line)
	if !l.closed {
		l.t.Logf("forwarder: %s", line)
	}
	return len(p), nil
}

// logged is f's log so far.
func logged(f *Forwarder) string {
	v, _ := testLogs.Load(f)
	l := v.(*testLog)
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// dialPair connects A through the forwarder to a fresh backend B, first
// (which may be empty) written with the first line, and checks that B
// got it.
func dialPair(t *testing.T, fwd, first string) (a, b *net.TCPConn) {
	t.Helper()
	to, accepted := backend(t)
	c, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(to + "\n" + first)); err != nil {
		t.Fatal(err)
	}
	bc := <-accepted
	if bc == nil {
		t.Fatal("the forwarder did not connect")
	}
	if got := readN(t, bc, len(first)); string(got) != first {
		t.Fatalf("B got %q, want %q", got, first)
	}
	return c.(*net.TCPConn), bc.(*net.TCPConn)
}

// noFDLeak fails the test when, at its end (after the cleanups registered
// later), the process has more open descriptors than now.
func noFDLeak(t *testing.T) {
	t.Helper()
	// The runtime's netpoller opens descriptors of its own (epoll, an
	// eventfd) on a process's first network use: a test run alone would
	// count them as leaked.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	before := openFDs(t)
	t.Cleanup(func() {
		if after := openFDs(t); after > before {
			t.Errorf("open descriptors %d before, %d after", before, after)
		}
	})
}

// backend accepts one connection on loopback and hands it over.
func backend(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		ch <- c
	}()
	return ln.Addr().String(), ch
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// The forwarder dials the address of the first line, carries the bytes
// that came with the line and everything after both ways (a 3 MB burst
// too, more than the sockets' buffers), and passes an end on.
func TestForwarderCarriesBothWays(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, _ := startForward(t, mode)
			// The line and the first bytes in one write.
			a, b := dialPair(t, fwd, "MSRP a SEND\r\n")
			if _, err := b.Write([]byte("MSRP a 200 OK\r\n")); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, a, 15); string(got) != "MSRP a 200 OK\r\n" {
				t.Fatalf("A got %q", got)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
			go func() { _, _ = a.Write(big) }()
			if got := readN(t, b, len(big)); !bytes.Equal(got, big) {
				t.Fatal("the 3 MB burst came out different")
			}
			a.Close()
			_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after A closed, B read %d, %v; want EOF", n, err)
			}
		})
	}
}

// A first line that names no loopback address, is too long or never
// ends gets the connection closed, with nothing dialled.
func TestForwarderRefusesBadFirstLine(t *testing.T) {
	for _, mode := range floorModes() {
		for _, line := range []string{
			"192.0.2.1:2855\n",
			"example.com:2855\n",
			"127.0.0.1\n",
			strings.Repeat("1", floorLineMax+1) + "\n",
		} {
			t.Run(mode+"/"+line[:min(len(line), 16)], func(t *testing.T) {
				f, _ := startForwardLoops(t, mode, 2)
				a, err := net.Dial("tcp", f.Addr())
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				if _, err := a.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := a.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
					t.Fatalf("read %d, %v; want the connection closed", n, err)
				}
				// Said before the close: an operator sees why.
				if l := logged(f); !strings.Contains(l, "no valid first line") || !strings.Contains(l, "remote="+a.LocalAddr().String()) {
					t.Fatalf("log %q: want the refusal with the client's address", l)
				}
			})
		}
	}
}

// A first line naming the forwarder itself (a connection that would
// chain through it once per line it sends) is refused too.
func TestForwarderRefusesItself(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, _ := startForward(t, mode)
			a, err := net.Dial("tcp", fwd)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if _, err := a.Write([]byte(fwd + "\n" + fwd + "\n")); err != nil {
				t.Fatal(err)
			}
			_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := a.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
				t.Fatalf("read %d, %v; want the connection closed", n, err)
			}
		})
	}
}

// readDest refuses the forwarder's own address in any spelling.
func TestReadDestRefusesSelf(t *testing.T) {
	self := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2900}
	for line, ok := range map[string]bool{
		"127.0.0.1:2900\n":          false,
		"[::ffff:127.0.0.1]:2900\n": false,
		"127.0.0.1:2901\n":          true,
		"127.0.0.2:2900\r\n":        true,
		"[::1]:2900\n":              true,
	} {
		_, err := readDest(bufio.NewReader(strings.NewReader(line)), self)
		if (err == nil) != ok {
			t.Errorf("%q: %v, want ok %v", line, err, ok)
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// Only a loopback listen address is taken, and only known modes.
func TestForwarderListenChecks(t *testing.T) {
	for _, c := range []struct{ addr, mode string }{
		{"0.0.0.0:0", FloorGoroutine},
		{"[::]:0", FloorGoroutine},
		{"127.0.0.1:0", "threads"},
	} {
		if f, err := ListenForward(c.addr, c.mode, 1); err == nil {
			f.ln.Close()
			t.Fatalf("ListenForward(%q, %q) accepted", c.addr, c.mode)
		}
	}
}

// Serve returns when its context ends, with connections open in the
// middle of a transfer and one that has not sent its line, and closes
// them all.
func TestForwarderStopsWithOpenConnections(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, stop := startForward(t, mode)
			a, b := dialPair(t, fwd, "x")
			silent, err := net.Dial("tcp", fwd)
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			for name, c := range map[string]net.Conn{"A": a, "B": b, "silent": silent} {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
					t.Fatalf("%s after the stop: read %d, %v; want closed", name, n, err)
				}
			}
		})
	}
}

// stallThrough: B accepts and never reads; A writes through the forwarder
// until every buffer on the way is full.
func stallThrough(t *testing.T, fwd string) (a net.Conn) {
	t.Helper()
	a, _ = dialPair(t, fwd, "")
	// Write until a write stays blocked for half a second: B's receive
	// buffer, the forwarder's and A's send buffer are full, and the
	// forwarder holds bytes for B it cannot write.
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for {
		_ = a.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := a.Write(chunk); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			t.Fatalf("writing until the forwarder stalls: %v", err)
		}
	}
	_ = a.SetWriteDeadline(time.Time{})
	return a
}

// Serve must return when its context ends even when a B has stopped
// reading (the forwarder is in the middle of writing to it).
func TestForwarderStopsWithStalledPeer(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, stop := startForward(t, mode)
			stallThrough(t, fwd)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// One B that stops reading must not freeze the forwarder's other
// connections (the bench starts the epoll floor with one loop).
func TestForwarderStalledPeerHoldsNoOther(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			f, _ := startForwardLoops(t, mode, 1)
			stallThrough(t, f.Addr())
			a2, b2 := dialPair(t, f.Addr(), "")
			if _, err := a2.Write([]byte("MSRP a SEND\r\n")); err != nil {
				t.Fatal(err)
			}
			_ = b2.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 13)
			if _, err := io.ReadFull(b2, got); err != nil {
				t.Fatalf("a second, healthy connection: B read %q, %v; want its 13 bytes within 5 s", got, err)
			}
		})
	}
}

// A half-close is passed on in both modes: A writes a request and shuts
// its sending side, B reads to the end and answers; A must get the answer
// (the goroutine mode passes it, as the commit says: "ends passed on").
func TestForwarderHalfClose(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, _ := startForward(t, mode)
			a, b := dialPair(t, fwd, "request") // B read the request
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
			if rest, err := io.ReadAll(b); err != nil || len(rest) != 0 {
				t.Fatalf("B read %q more, %v; want the end after the request", rest, err)
			}
			_, werr := b.Write([]byte("response"))
			b.Close()
			_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := io.ReadAll(a)
			if string(resp) != "response" {
				t.Fatalf("after A's half-close: B's write %v, A read %q, %v; want %q", werr, resp, err, "response")
			}
		})
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}

// A ListenForward that fails (the port is taken) must not leave the
// epoll loops' descriptors open: they are closed only by run(), which
// never starts.
func TestListenForwardFailureLeaksNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("epoll")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before := openFDs(t)
	for range 5 {
		if f, err := ListenForward(busy.Addr().String(), FloorEpoll, 4); err == nil {
			f.ln.Close()
			t.Fatal("listened on a taken port")
		}
	}
	if after := openFDs(t); after > before {
		t.Fatalf("open descriptors %d before, %d after 5 failed ListenForward(epoll, 4 loops): %d leaked", before, after, after-before)
	}
}
