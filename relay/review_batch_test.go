package relay

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Hostile review of write batching (issue 16): a frame forwarded while the
// source's next bytes were already buffered stays in the destination's
// buffer; whatever those next bytes turn out to be (the end of the
// stream, a reset, a frame the relay refuses or cannot parse, a limit),
// the buffered frame must still reach the destination, without the
// source sending anything more.
func TestReviewBurstEndingsFlush(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		// after: the bytes sent in the same write right after the frame.
		after func(b *batchRelay) []byte
		// then: what the source does next (nil: nothing, it stays open).
		then func(nc net.Conn)
	}{
		{name: "end of stream", after: func(*batchRelay) []byte { return nil },
			then: func(nc net.Conn) { _ = nc.(*net.TCPConn).CloseWrite() }},
		{name: "reset", after: func(*batchRelay) []byte { return []byte("MSRP ab") },
			then: func(nc net.Conn) { _ = nc.(*net.TCPConn).SetLinger(0); _ = nc.Close() }},
		{name: "partial next frame then end of stream", after: func(*batchRelay) []byte { return []byte("MSRP abcd SEND\r\nTo-Pa") },
			then: func(nc net.Conn) { _ = nc.(*net.TCPConn).CloseWrite() }},
		{name: "garbage that cannot be re-framed", after: func(*batchRelay) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{name: "malformed frame with a transact-id", after: func(*batchRelay) []byte {
			return []byte("MSRP bad1 SEND\r\nno colon here\r\n-------bad1$\r\n")
		}},
		{name: "header larger than max_header_bytes",
			mod: func(c *Config) { c.Limits.MaxHeaderBytes = 2048 },
			after: func(b *batchRelay) []byte {
				return []byte("MSRP big1 SEND\r\nTo-Path: " + strings.Repeat("x", 4096) + "\r\n-------big1$\r\n")
			}},
		{name: "request to an unknown session", after: func(b *batchRelay) []byte {
			s := string(b.send(0, 1, "mX", []byte("x")))
			return []byte(strings.Replace(s, b.sids[1], "nosuchsession", 1))
		}},
		{name: "response nobody waits for", after: func(b *batchRelay) []byte {
			return []byte("MSRP zz9 200 OK\r\nTo-Path: " + b.uriOf(b.ncs[0]) + "\r\nFrom-Path: msrp://127.0.0.1:1/x;tcp\r\n-------zz9$\r\n")
		}},
		{name: "frame looping back to the source", after: func(b *batchRelay) []byte {
			return b.send(0, 0, "self", []byte("to myself"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatchRelay(t, 2, tc.mod)
			go func() { _, _ = b.ncs[0].Read(make([]byte, 1<<20)) }() // the source's responses: not needed
			burst := append(b.send(0, 1, "m0", []byte("first and only")), tc.after(b)...)
			if _, err := b.ncs[0].Write(burst); err != nil {
				t.Fatal(err)
			}
			if tc.then != nil {
				tc.then(b.ncs[0])
			}
			// The deadline only ends a failing test (the source waits,
			// nothing else would push the frame out before idle_timeout).
			_ = b.ncs[1].SetReadDeadline(time.Now().Add(15 * time.Second))
			var got []byte
			err := b.answer(t, 1, 1, func(f *msrp.Frame, body []byte) error {
				got = f.Get(msrp.HdrMessageID)
				if !bytes.Equal(body, []byte("first and only")) {
					return fmt.Errorf("body %q", body)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("the buffered frame never reached its destination: %v", err)
			}
			if string(got) != "m0" {
				t.Fatalf("got Message-ID %q", got)
			}
		})
	}
}

// A read loop streaming a frame into a destination that does not read
// (its socket full) while an earlier frame of the same burst, to another
// destination, waits in that one's buffer: the earlier frame must go out
// before the read loop blocks on the stalled destination, not after it
// drains or send_timeout passes (minutes here). The part of the frame
// written so far is less than the relay's write buffer: only the flush
// before the read loop reads the rest of the body writes it.
func TestReviewStalledHolderDoesNotHoldEarlierFrame(t *testing.T) {
	b := newBatchRelay(t, 3, func(c *Config) { c.Limits.SendTimeout = 5 * time.Minute })
	local := addrPort(b.ncs[2].LocalAddr())
	var stalled net.Conn
	b.r.mu.Lock()
	for _, x := range b.r.conns {
		if x.info.Remote == local {
			stalled = x.nc
		}
	}
	b.r.mu.Unlock()
	// Fixed socket buffers (no autotuning that makes room again later).
	_ = stalled.(*net.TCPConn).SetWriteBuffer(8192)
	_ = b.ncs[2].(*net.TCPConn).SetReadBuffer(8192)
	// The stalled peer's socket is full (its stream is not read again):
	// written past the relay's write lock, until a write cannot go on.
	for {
		_ = stalled.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := stalled.Write(make([]byte, 1<<20)); err != nil {
			break
		}
	}
	go func() { _, _ = b.ncs[0].Read(make([]byte, 1<<20)) }()
	big := string(b.send(0, 2, "big", bytes.Repeat([]byte("h"), 100000)))
	cut := strings.Index(big, "\r\n\r\n") + 4 + 25000 // header and 25 kB of the body: less than connBufSize
	burst := append(b.send(0, 1, "m0", []byte("to the reading peer")), big[:cut]...)
	if _, err := b.ncs[0].Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = b.ncs[1].SetReadDeadline(time.Now().Add(15 * time.Second))
	if err := b.answer(t, 1, 1, func(f *msrp.Frame, body []byte) error {
		if string(f.Get(msrp.HdrMessageID)) != "m0" {
			return fmt.Errorf("got %s", f.Get(msrp.HdrMessageID))
		}
		return nil
	}); err != nil {
		t.Fatalf("the frame to the reading peer waited behind the stalled one: %v", err)
	}
}
