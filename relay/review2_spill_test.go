package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// slowReader hands out at most 1500 bytes per Read and yields first: the
// relay's writes into its peer keep finding a full socket (spill, drain,
// writes that wait for the drain) while other read loops write there.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	runtime.Gosched()
	return s.r.Read(p[:min(len(p), 1500)])
}

// consumeAt reads at client j until it has seen sends SENDs and rsps
// responses, answering each SEND with 200; every SEND must be whole, its
// body the one its Message-ID names, and each source's in the order sent.
func (b *batchRelay) consumeAt(j int, slow bool, sends, rsps int) error {
	var src io.Reader = b.ncs[j]
	if slow {
		src = slowReader{b.ncs[j]}
	}
	rd := msrp.NewReader(bufio.NewReaderSize(src, 32<<10), msrp.Limits{})
	next := map[int]int{}
	for gotS, gotR := 0, 0; gotS < sends || gotR < rsps; {
		f, err := rd.ReadFrame()
		if err != nil {
			return fmt.Errorf("client %d after %d SENDs, %d responses: %w", j, gotS, gotR, err)
		}
		var body []byte
		for p := f.Body(); ; {
			q, err := p.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("client %d body: %w", j, err)
			}
			body = append(body, q...)
		}
		if f.StatusCode != 0 {
			if f.StatusCode != 200 {
				return fmt.Errorf("client %d: response %d", j, f.StatusCode)
			}
			gotR++
			continue
		}
		mid := string(f.Get(msrp.HdrMessageID))
		if string(f.Method) != "SEND" {
			return fmt.Errorf("client %d: %s for %s", j, f.Method, mid)
		}
		var s, k int
		if _, err := fmt.Sscanf(strings.ReplaceAll(mid, "-", " "), "s%d %d", &s, &k); err != nil {
			return fmt.Errorf("client %d: Message-ID %q", j, mid)
		}
		if k != next[s] {
			return fmt.Errorf("client %d: from %d got message %d, want %d (reordered or lost)", j, s, k, next[s])
		}
		next[s]++
		if f.Flag() != msrp.FlagEnd || !bytes.Equal(body, bodyFor(s, k)) {
			return fmt.Errorf("client %d: %s ends with %c, body %d bytes, want %d intact", j, mid, f.Flag(), len(body), len(bodyFor(s, k)))
		}
		gotS++
		to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
		// One Write per frame: client j's own SENDs go out on the same
		// socket from another goroutine.
		if _, err := fmt.Fprintf(b.ncs[j], "MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID); err != nil {
			return err
		}
	}
	return nil
}

// Two sources pipeline SENDs (small, and larger than the relay's write
// buffer) into a peer that reads slowly through small socket buffers,
// while that peer pipelines its own SENDs (the relay's 200s to it join
// the same connection): spills, drains and blocking writes interleave on
// it. Every frame arrives whole, each source's in order, nothing lost.
func TestReview2SpillOrderSlowPeer(t *testing.T) {
	const n = 300
	b := newBatchRelay(t, 3, func(c *Config) { c.Limits.SendTimeout = time.Minute })
	x := b.connOf(1)
	_ = x.nc.(*net.TCPConn).SetWriteBuffer(4096)
	_ = b.ncs[1].(*net.TCPConn).SetReadBuffer(4096)
	for _, nc := range b.ncs {
		_ = nc.SetDeadline(time.Now().Add(2 * time.Minute)) // only ends a failing test
	}
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	sendAll := func(i, j int) {
		defer wg.Done()
		for k := range n { // one Write per frame (see consumeAt)
			if _, err := b.ncs[i].Write(b.send(i, j, "s"+strconv.Itoa(i)+"-"+strconv.Itoa(k), bodyFor(i, k))); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(3)
	go sendAll(0, 1)
	go sendAll(2, 1)
	go sendAll(1, 2)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- b.consumeAt(0, false, 0, n) }()
	go func() { defer wg.Done(); errs <- b.consumeAt(1, true, 2*n, n) }()
	go func() { defer wg.Done(); errs <- b.consumeAt(2, false, n, n) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if st := b.r.Stats(); st.QueueFull != 0 {
		t.Errorf("Stats.QueueFull %d: a peer that reads was closed", st.QueueFull)
	}
}
