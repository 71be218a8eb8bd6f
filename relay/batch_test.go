package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// batchRelay is a relay with raw loopback clients, each holding a session
// made directly in the table (as newBenchPair), for the write-batching
// tests.
type batchRelay struct {
	r    *Relay
	ncs  []net.Conn
	sids []string
	stop context.CancelFunc // cancels Serve's context: a graceful shutdown
	done chan error         // Serve's result (the cleanup waits for it)
}

func newBatchRelay(t *testing.T, n int, mod func(*Config)) *batchRelay {
	obs := &benchObserver{accepted: make(chan netip.AddrPort, n)}
	cfg := Config{Listen: []Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler), Observer: obs}
	// The sessions are made in the table below, not by AUTH: each read loop
	// already waits for its connection's first frame under the probation
	// deadline (first_request_timeout from the accept, RFC 4976 §6.1) when
	// requestOK is set, and that wait is not re-armed. A client that sends
	// nothing for that long (a destination that only receives, a source
	// whose test builds a large stream first on a loaded machine) would be
	// closed: out of every test's way.
	cfg.Limits.FirstRequestTimeout = time.Hour
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	br := &batchRelay{r: r, stop: cancel, done: done}
	for i := range n {
		nc, err := net.Dial("tcp", r.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		local := addrPort(nc.LocalAddr())
		if got := <-obs.accepted; got != local {
			t.Fatalf("accepted %v, dialled from %v", got, local)
		}
		var c *conn
		r.mu.Lock()
		for _, x := range r.conns {
			if x.info.Remote == local {
				c = x
			}
		}
		r.mu.Unlock()
		if c == nil {
			t.Fatal("accepted connection not registered")
		}
		sid := "sess" + strconv.Itoa(i)
		prev, err := msrp.ParseURI(br.uriOf(nc))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.sessions.add(&session{id: sid, user: sid, conn: c, prevHop: prev, expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		c.requestOK.Store(true)
		br.ncs, br.sids = append(br.ncs, nc), append(br.sids, sid)
	}
	return br
}

func (b *batchRelay) uriOf(nc net.Conn) string { return "msrp://" + nc.LocalAddr().String() + "/c;tcp" }

// send is a SEND from client i to client j with Message-ID mid and body.
func (b *batchRelay) send(i, j int, mid string, body []byte) []byte {
	u := b.r.URIs()[0]
	own := func(sid string) string { v := u; v.SessionID = sid; return v.String() }
	tid := "t" + strconv.Itoa(i) + "x" + strconv.Itoa(len(mid)) // repeats are fine: the relay makes its own
	return []byte("MSRP " + tid + " SEND\r\nTo-Path: " + own(b.sids[i]) + " " + own(b.sids[j]) + " " + b.uriOf(b.ncs[j]) +
		"\r\nFrom-Path: " + b.uriOf(b.ncs[i]) + "\r\nMessage-ID: " + mid + "\r\nByte-Range: 1-" + strconv.Itoa(len(body)) + "/" +
		strconv.Itoa(len(body)) + "\r\nContent-Type: text/plain\r\n\r\n" + string(body) + "\r\n-------" + tid + "$\r\n")
}

// bodyFor is the body of message k of source s: its size varies from a few
// bytes to more than a connection's write buffer, its bytes name it.
func bodyFor(s, k int) []byte {
	n := 20 + k%7*15
	if k%50 == 49 {
		n = connBufSize + 5000 // crosses a buffer flush in the middle of a frame
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (s*7+k+i)%26)
	}
	return b
}

// answer200 reads n SENDs at client j, checks each with check and answers
// every one with 200, returning on the first error.
func (b *batchRelay) answer(t *testing.T, j, n int, check func(f *msrp.Frame, body []byte) error) error {
	br := bufio.NewReaderSize(b.ncs[j], 32<<10)
	rd := msrp.NewReader(br, msrp.Limits{})
	bw := bufio.NewWriter(b.ncs[j])
	for k := range n {
		f, err := rd.ReadFrame()
		if err != nil {
			return fmt.Errorf("frame %d: %w", k, err)
		}
		var body []byte
		for p := f.Body(); ; {
			q, err := p.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("frame %d body: %w", k, err)
			}
			body = append(body, q...)
		}
		if f.Flag() != msrp.FlagEnd {
			return fmt.Errorf("frame %d ends with %q", k, f.Flag())
		}
		if err := check(f, body); err != nil {
			return fmt.Errorf("frame %d: %w", k, err)
		}
		to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
		fmt.Fprintf(bw, "MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID)
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

// drainResponses reads n frames at client i (the relay's 200s).
func (b *batchRelay) drainResponses(i, n int) error {
	rd := msrp.NewReader(bufio.NewReaderSize(b.ncs[i], 32<<10), msrp.Limits{})
	for k := range n {
		f, err := rd.ReadFrame()
		if err != nil {
			return fmt.Errorf("response %d: %w", k, err)
		}
		if f.StatusCode != 200 {
			return fmt.Errorf("response %d: %d", k, f.StatusCode)
		}
		for p := f.Body(); ; {
			if _, err := p.Next(); err != nil {
				break
			}
		}
	}
	return nil
}

// Two sources pipeline SENDs to one destination at once (write batching:
// each source's read loop leaves frames in the destination's buffer while
// its next frame is already read): every frame arrives whole, and each
// source's frames in the order sent, chunks larger than the buffer too.
func TestBatchTwoSourcesOneDestination(t *testing.T) {
	const n = 400
	b := newBatchRelay(t, 3, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for s := range 2 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var out []byte
			for k := range n {
				out = append(out, b.send(s, 2, "s"+strconv.Itoa(s)+"-"+strconv.Itoa(k), bodyFor(s, k))...)
				if len(out) > 64<<10 || k == n-1 {
					if _, err := b.ncs[s].Write(out); err != nil {
						errs <- err
						return
					}
					out = out[:0]
				}
			}
		}()
		go func() {
			defer wg.Done()
			if err := b.drainResponses(s, n); err != nil {
				errs <- fmt.Errorf("source %d: %w", s, err)
			}
		}()
	}
	next := [2]int{}
	err := b.answer(t, 2, 2*n, func(f *msrp.Frame, body []byte) error {
		mid := string(f.Get(msrp.HdrMessageID))
		var s, k int
		if _, err := fmt.Sscanf(mid, "s%d-%d", &s, &k); err != nil || s < 0 || s > 1 {
			return fmt.Errorf("Message-ID %q", mid)
		}
		if k != next[s] {
			return fmt.Errorf("source %d: message %d arrived, want %d", s, k, next[s])
		}
		next[s]++
		if want := bodyFor(s, k); string(body) != string(want) {
			return fmt.Errorf("source %d message %d: body of %d bytes differs (want %d)", s, k, len(body), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := b.r.Stats(); st.Forwarded != 2*n {
		t.Fatalf("forwarded %d, want %d", st.Forwarded, 2*n)
	}
}

// A destination that stops reading: the relay buffers a bounded amount
// (its write buffer and the sockets'), stops reading the source (TCP
// back-pressure) instead of filling memory, and once the destination reads
// again every frame arrives, in order.
func TestBatchStalledDestinationBounded(t *testing.T) {
	const total = 64 << 20
	b := newBatchRelay(t, 2, func(c *Config) { c.Limits.SendTimeout = 5 * time.Minute })
	body := make([]byte, 16<<10)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	var stream []byte
	n := 0
	for ; len(stream) < total; n++ {
		stream = append(stream, b.send(0, 1, "m"+strconv.Itoa(n), body)...)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// A writes until it cannot go on for a second: the relay stopped reading it.
	written := 0
	for written < len(stream) {
		_ = b.ncs[0].SetWriteDeadline(time.Now().Add(time.Second))
		k, err := b.ncs[0].Write(stream[written:min(len(stream), written+1<<20)])
		written += k
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if written >= len(stream) {
		t.Fatalf("the relay took all %d bytes while the destination read nothing", written)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Fatalf("heap grew by %d bytes while the destination was stalled (%d bytes taken from the source)", grew, written)
	}

	// B reads again: the rest follows, everything arrives in order.
	_ = b.ncs[0].SetWriteDeadline(time.Time{})
	wErr := make(chan error, 1)
	go func() {
		_, err := b.ncs[0].Write(stream[written:])
		wErr <- err
	}()
	go func() { _ = b.drainResponses(0, n) }()
	k := 0
	if err := b.answer(t, 1, n, func(f *msrp.Frame, got []byte) error {
		if mid := string(f.Get(msrp.HdrMessageID)); mid != "m"+strconv.Itoa(k) {
			return fmt.Errorf("Message-ID %s, want m%d", mid, k)
		}
		k++
		if string(got) != string(body) {
			return errors.New("body differs")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-wErr; err != nil {
		t.Fatal(err)
	}
}

// A frame left in a destination's buffer because the source's next frame
// had begun to arrive goes out when the source's read loop would wait for
// the rest of that frame: the destination gets it while the source sends
// nothing more, wherever the next frame is cut (its header, its body,
// which the read loop is already streaming into the destination).
func TestBatchFlushBeforeWait(t *testing.T) {
	for _, cut := range []struct {
		name string
		at   func(next []byte) int
	}{
		{"in the next frame's header", func(next []byte) int { return 30 }},
		{"in the next frame's body", func(next []byte) int { return len(next) - 40 }},
	} {
		t.Run(cut.name, func(t *testing.T) {
			b := newBatchRelay(t, 2, nil)
			go func() { _ = b.drainResponses(0, 2) }()
			first := b.send(0, 1, "m0", bodyFor(0, 1))
			next := b.send(0, 1, "m1", bodyFor(0, 2))
			k := cut.at(next)
			if _, err := b.ncs[0].Write(append(append([]byte(nil), first...), next[:k]...)); err != nil {
				t.Fatal(err)
			}
			// Bounded by a deadline only so that a failure ends the test.
			_ = b.ncs[1].SetReadDeadline(time.Now().Add(20 * time.Second))
			err := b.answer(t, 1, 1, func(f *msrp.Frame, body []byte) error {
				if string(f.Get(msrp.HdrMessageID)) != "m0" {
					return fmt.Errorf("got %s first", f.Get(msrp.HdrMessageID))
				}
				return nil
			})
			if err != nil {
				t.Fatalf("the first frame did not arrive while the next one waits for its end: %v", err)
			}
			if _, err := b.ncs[0].Write(next[k:]); err != nil {
				t.Fatal(err)
			}
		})
	}
}
