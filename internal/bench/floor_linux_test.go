package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// pattern is n deterministic bytes for a seed.
func pattern(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// loopsDrained waits up to 5 s for the loops to hold no descriptor and
// returns how many they still hold.
func loopsDrained(f *Forwarder) int {
	deadline := time.Now().Add(5 * time.Second)
	for loopConns(f) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling, not ordering
	}
	return loopConns(f)
}

// loopConns is how many descriptors the forwarder's loops hold.
func loopConns(f *Forwarder) int {
	n := 0
	for _, l := range f.loops {
		l.mu.Lock()
		n += len(l.conns)
		l.mu.Unlock()
	}
	return n
}

// Many pairs at once through the epoll loops, random sizes both ways,
// random first-line payloads, one side of some pairs stalling until its
// own writes are done, ends passed on by CloseWrite in random order:
// every byte arrives in order, every pair is dropped by the loop once both
// ended, and nothing is left open after Serve.
func TestForwarderEpollStress(t *testing.T) {
	noFDLeak(t) // checked after the backends' cleanups
	f, stop := startForwardLoops(t, FloorEpoll, 2)
	const pairs = 60
	rng := rand.New(rand.NewSource(1))
	var wg sync.WaitGroup
	errs := make(chan string, 4*pairs)
	for i := range pairs {
		to, accepted := backend(t)
		sizeAB, sizeBA := rng.Intn(2<<20), rng.Intn(2<<20)
		if i%5 == 0 {
			sizeAB = 0
		}
		first := rng.Intn(70 << 10)
		stall := rng.Intn(3) // 0 none, 1 A's reader, 2 B's reader
		seed := int64(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The bytes first: a client that dials and then takes its time
			// (making 4 MB under -race on a loaded machine) is closed by
			// the forwarder's 5 s limit for the first line.
			ab, ba := pattern(seed, sizeAB), pattern(seed+1000, sizeBA)
			a, err := net.Dial("tcp", f.Addr())
			if err != nil {
				errs <- err.Error()
				return
			}
			defer a.Close()
			first = min(first, len(ab))
			if _, err := a.Write(append([]byte(to+"\n"), ab[:first]...)); err != nil {
				errs <- err.Error()
				return
			}
			var b net.Conn
			select {
			case b = <-accepted:
			case <-time.After(20 * time.Second):
				errs <- fmt.Sprintf("pair %d: no B within 20 s (first %d)", seed, first)
				return
			}
			if b == nil {
				errs <- "no B"
				return
			}
			side := func(name string, c net.Conn, out, in []byte, stalls bool) {
				wrote := make(chan struct{})
				var inner sync.WaitGroup
				inner.Add(2)
				go func() {
					defer inner.Done()
					defer close(wrote)
					r := rand.New(rand.NewSource(seed + int64(len(name))))
					_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
					for len(out) > 0 {
						n := min(len(out), 1+r.Intn(100<<10))
						if _, err := c.Write(out[:n]); err != nil {
							errs <- name + " write: " + err.Error()
							return
						}
						out = out[n:]
					}
					c.(*net.TCPConn).CloseWrite()
				}()
				go func() {
					defer inner.Done()
					if stalls {
						<-wrote
					}
					_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
					got, err := io.ReadAll(c)
					if err != nil || !bytes.Equal(got, in) {
						errs <- fmt.Sprintf("pair %d %s read %d of %d bytes (equal prefix %v), %v; stall %d first %d\n%s", seed, name, len(got), len(in), bytes.HasPrefix(in, got), err, stall, first, dumpLoops(f))
						return
					}
				}()
				inner.Wait()
			}
			var sw sync.WaitGroup
			sw.Add(2)
			go func() { defer sw.Done(); side("A", a, ab[first:], ba, stall == 1) }()
			go func() { defer sw.Done(); side("BB", b, ba, ab, stall == 2) }()
			sw.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Every pair ended both ways: the loops drop them all.
	if n := loopsDrained(f); n > 0 {
		t.Errorf("%d descriptors still held by the loops after every pair ended both ways", n)
	}
	t.Logf("loops dropped every pair; %v", time.Now())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func dumpLoops(f *Forwarder) string {
	var s string
	for i, l := range f.loops {
		l.mu.Lock()
		for fd, c := range l.conns {
			s += fmt.Sprintf("loop %d fd %d peer %d pending %d eof %v shut %v events %#x want %#x\n", i, fd, c.peer.fd, len(c.pending), c.eof, c.shut, c.events, c.want())
		}
		l.mu.Unlock()
	}
	return s
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %d bytes, %v; want EOF", len(got), err)
	}
}

// Pairs torn down by their ends in every order — an abrupt close with
// bytes unread (a reset), a linger-0 close, a half-close then a close —
// while bytes are in flight both ways: the loops drop every pair.
func TestForwarderEpollResetsDropAll(t *testing.T) {
	noFDLeak(t) // checked after the backends' cleanups
	f, stop := startForwardLoops(t, FloorEpoll, 1)
	var wg sync.WaitGroup
	for i := range 48 {
		a, b := dialPair(t, f.Addr(), "hello")
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w sync.WaitGroup
			for _, c := range []*net.TCPConn{a, b} {
				w.Add(1)
				go func() {
					defer w.Done()
					_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
					_, _ = c.Write(make([]byte, (i%4)<<20))
				}()
			}
			w.Wait()
			first, second := a, b
			if i%2 == 1 {
				first, second = b, a
			}
			switch i / 2 % 6 {
			case 0:
				first.Close()
				second.Close()
			case 1:
				first.SetLinger(0)
				first.Close()
				second.Close()
			case 2:
				first.CloseWrite()
				second.CloseWrite()
				first.Close()
				second.Close()
			case 3:
				first.CloseWrite()
				first.Close()
				second.SetLinger(0)
				second.Close()
			case 4:
				first.CloseWrite()
				second.CloseRead()
				second.Close()
				first.Close()
			case 5:
				second.SetLinger(0)
				second.CloseWrite()
				second.Close()
				first.Close()
			}
		}()
	}
	wg.Wait()
	if n := loopsDrained(f); n > 0 {
		t.Errorf("%d descriptors still held by the loop after both ends of every pair closed\n%s", n, dumpLoops(f))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Stopping while connections arrive, send their lines and get added to
// loops: Serve returns and leaves no descriptor open.
func TestForwarderStopDuringConnects(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var held []net.Conn
			var hmu sync.Mutex
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					hmu.Lock()
					held = append(held, c)
					hmu.Unlock()
				}
			}()
			before := openFDs(t)
			for round := range 5 {
				f, err := ListenForward("127.0.0.1:0", mode, 2)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				served := make(chan error, 1)
				go func() { served <- f.Serve(ctx) }()
				var wg sync.WaitGroup
				var conns []net.Conn
				var cmu sync.Mutex
				for i := range 40 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := net.Dial("tcp", f.Addr())
						if err != nil {
							return
						}
						cmu.Lock()
						conns = append(conns, c)
						cmu.Unlock()
						_, _ = c.Write([]byte(ln.Addr().String() + "\nabc"))
					}()
					if i == 10+round*5 {
						cancel()
					}
				}
				wg.Wait()
				cancel()
				select {
				case err := <-served:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Serve did not return")
				}
				for _, c := range conns {
					c.Close()
				}
			}
			hmu.Lock()
			for _, c := range held {
				c.Close()
			}
			hmu.Unlock()
			if after := openFDs(t); after > before {
				t.Fatalf("open descriptors %d before, %d after", before, after)
			}
			ln.Close()
		})
	}
}

// "The pair is closed when both sides ended or either failed": A ends
// its sending side (B gets the end), then A's connection is reset. B, open
// and waiting for nothing, must see its connection closed: nothing can
// reach A any more.
func TestForwarderResetAfterEndClosesPair(t *testing.T) {
	for _, mode := range floorModes() {
		t.Run(mode, func(t *testing.T) {
			fwd, _ := startForward(t, mode)
			a, b := dialPair(t, fwd, "hello")
			a.CloseWrite()
			expectEOF(t, b) // the forwarder read A's end and passed it on
			a.SetLinger(0)
			a.Close() // RST to the forwarder's side of A
			_ = b.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := b.Write([]byte("reply"))
			t.Logf("B's write after A's reset: %d, %v", n, err)
			_, err = b.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("A was reset 3 s ago and B's write had nowhere to go, yet B's connection is still open (the forwarder holds the pair)")
			}
		})
	}
}

// B sends a reply larger than every buffer on the way to A (A not reading
// yet: the forwarder holds part of it pending for A), then B's connection
// is reset. A ends its sending side and reads: it must get every byte the
// forwarder took from B, or see the connection fail — never a shortened
// reply followed by a clean end.
func TestForwarderPeerResetIsNotACleanEnd(t *testing.T) {
	for _, mode := range floorModes() {
		for _, then := range []string{"A ends", "A writes"} {
			t.Run(mode+"/"+then, func(t *testing.T) {
				fwd, _ := startForward(t, mode)
				a, b := dialPair(t, fwd, "hello")
				sent := 0
				chunk := bytes.Repeat([]byte("r"), 64<<10)
				for {
					_ = b.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
					n, err := b.Write(chunk)
					sent += n
					if err != nil {
						break
					}
				}
				// What B's kernel still holds unsent never left B: count only
				// what B's socket handed over.
				rc, _ := b.SyscallConn()
				var unsent int
				_ = rc.Control(func(fd uintptr) {
					var v int32
					_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ /* SIOCOUTQ */, uintptr(unsafe.Pointer(&v)))
					if e == 0 {
						unsent = int(v)
					}
				})
				b.SetLinger(0)
				b.Close() // RST: the forwarder's side of B fails
				if then == "A ends" {
					a.CloseWrite()
				} else {
					_, _ = a.Write([]byte("more from A"))
				}
				_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(a)
				t.Logf("B wrote %d bytes, %d still unsent in B at the reset; A read %d, %v", sent, unsent, len(got), err)
				if err == nil && len(got) < sent-unsent {
					t.Fatalf("A got %d of the %d bytes that left B, then a clean end: %d bytes lost without a failure", len(got), sent-unsent, sent-unsent-len(got))
				}
			})
		}
	}
}
