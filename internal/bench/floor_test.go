package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func floorModes() []string {
	if runtime.GOOS == "linux" {
		return []string{FloorGoroutine, FloorEpoll}
	}
	return []string{FloorGoroutine}
}

// startForward runs a forwarder in mode until the test ends; stop cancels
// it and returns Serve's result.
func startForward(t *testing.T, mode string) (addr string, stop func() error) {
	t.Helper()
	f, err := ListenForward("127.0.0.1:0", mode, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Serve did not return within 10 s of the cancel")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return f.Addr(), stop
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
			to, accepted := backend(t)
			a, err := net.Dial("tcp", fwd)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// The line and the first bytes in one write.
			if _, err := a.Write([]byte(to + "\nMSRP a SEND\r\n")); err != nil {
				t.Fatal(err)
			}
			b := <-accepted
			if b == nil {
				t.Fatal("the forwarder did not connect")
			}
			if got := readN(t, b, 13); string(got) != "MSRP a SEND\r\n" {
				t.Fatalf("B got %q", got)
			}
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
				fwd, _ := startForward(t, mode)
				a, err := net.Dial("tcp", fwd)
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
			})
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
			to, accepted := backend(t)
			a, err := net.Dial("tcp", fwd)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if _, err := a.Write([]byte(to + "\nx")); err != nil {
				t.Fatal(err)
			}
			b := <-accepted
			readN(t, b, 1)
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
