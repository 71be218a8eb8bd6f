package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// udpCounter is the HEP collector of the hep setups: a UDP socket on
// 127.0.0.1 whose one goroutine reads datagrams and counts them, nothing
// more. With gro (hep-gro) the socket has UDP_GRO on: a read may return a
// GSO run as one buffer, counted as the datagrams it holds. Close stops it.
type udpCounter struct {
	conn    *net.UDPConn
	packets atomic.Int64
	bytes   atomic.Int64
	done    chan struct{}
}

func newUDPCounter(gro bool) (*udpCounter, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("HEP receiver: %w", err)
	}
	// As large as the kernel allows (net.core.rmem_max), so that the
	// counter, not the socket buffer, is what keeps up.
	_ = c.SetReadBuffer(32 << 20)
	u := &udpCounter{conn: c, done: make(chan struct{})}
	if gro {
		if err := setUDPGRO(c); err != nil {
			c.Close()
			return nil, fmt.Errorf("HEP receiver: UDP_GRO: %w", err)
		}
		go u.loopGRO()
		return u, nil
	}
	go u.loop()
	return u, nil
}

func (u *udpCounter) addr() string { return u.conn.LocalAddr().String() }

func (u *udpCounter) loop() {
	defer close(u.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		u.packets.Add(1)
		u.bytes.Add(int64(n))
	}
}

func (u *udpCounter) close() {
	u.conn.Close()
	<-u.done
}

// hepSent reads msrpscope's count of trace records its hep sink delivered
// (one HEP packet each) from the Prometheus text at the admin API.
func hepSent(ctx context.Context, admin string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("reading metrics: %s", resp.Status)
	}
	return parseSinkSent(resp.Body, "hep")
}

// parseSinkSent sums msrpscope_trace_records_sent* samples of the sink
// named sink in Prometheus text format.
func parseSinkSent(r io.Reader, sink string) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := `sink="` + sink + `"`
	found := false
	var sum float64
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "msrpscope_trace_records_sent") || !strings.Contains(line, label) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, errors.New("no msrpscope_trace_records_sent sample for sink " + sink)
	}
	return int64(sum), nil
}

// Modes of rawTCP's stream: straight from writer to reader, or through a
// minimal proxy in between.
const (
	rawDirect = ""       // writer → reader
	rawProxy  = "copy"   // writer → proxy (read, write, chunk-byte buffer) → reader
	rawSplice = "splice" // writer → proxy (io.Copy: splice(2) on Linux, no user-space copy) → reader
)

// rawTCP measures the baselines for large transfers in this process: one
// TCP stream on 127.0.0.1, a writer writing chunk-byte buffers until total
// bytes are written, a reader reading (into a buffer of the same size) and
// discarding. With a proxy mode, the writer's connection ends at a proxy
// goroutine that accepts it, dials the reader and copies the stream: the
// least any relay on the path does (two sockets, every byte read and
// written once). It returns MB/s (10^6 bytes) from the first write to the
// reader's last byte.
func rawTCP(total int64, chunk int, mode string) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("raw TCP: %w", err)
	}
	defer l.Close()
	type result struct {
		n   int64
		end time.Time
		err error
	}
	res := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	// The reader: owned here, ends at EOF or error, waited for below.
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, chunk)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				res <- result{n: n, end: time.Now(), err: err}
				return
			}
		}
	}()
	dial := l.Addr().String()
	proxyErr := make(chan error, 1)
	if mode != rawDirect {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			l.Close()
			wg.Wait()
			return 0, fmt.Errorf("raw TCP proxy: %w", err)
		}
		defer pl.Close()
		dial = pl.Addr().String()
		wg.Add(1)
		// The proxy: owned here, ends when the writer's stream ends (or
		// on an error, closing both sides), waited for below.
		go func() {
			defer wg.Done()
			err := proxyOnce(pl, l.Addr().String(), chunk, mode)
			if err != nil {
				l.Close() // the reader's Accept, if the proxy never dialed
			}
			proxyErr <- err
		}()
	} else {
		proxyErr <- nil
	}
	c, err := net.Dial("tcp", dial)
	if err != nil {
		l.Close()
		wg.Wait()
		return 0, fmt.Errorf("raw TCP: %w", err)
	}
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	start := time.Now()
	var werr error
	for w := int64(0); w < total; {
		n := min(int64(chunk), total-w)
		m, err := c.Write(buf[:n])
		w += int64(m)
		if err != nil {
			werr = err
			break
		}
	}
	c.Close()
	r := <-res
	perr := <-proxyErr
	wg.Wait()
	if werr != nil {
		return 0, fmt.Errorf("raw TCP write: %w", werr)
	}
	if perr != nil {
		return 0, fmt.Errorf("raw TCP proxy: %w", perr)
	}
	if r.err != nil {
		return 0, fmt.Errorf("raw TCP read: %w", r.err)
	}
	if r.n != total {
		return 0, fmt.Errorf("raw TCP: read %d bytes of %d", r.n, total)
	}
	return float64(total) / 1e6 / r.end.Sub(start).Seconds(), nil
}

// proxyOnce accepts one connection on l, dials to and copies what it
// reads there until EOF, then closes both. mode rawProxy copies through a
// chunk-byte buffer (read, write); rawSplice uses io.Copy, which on Linux
// moves the bytes with splice(2) without a user-space copy.
func proxyOnce(l net.Listener, to string, chunk int, mode string) error {
	in, err := l.Accept()
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := net.Dial("tcp", to)
	if err != nil {
		return err
	}
	defer out.Close()
	if mode == rawSplice {
		_, err = io.Copy(out, in)
		return err
	}
	return copyBuf(out, in, make([]byte, chunk))
}

// copyBuf copies src to dst by read and write through buf (no splice: as
// a relay that reads its frames) until src ends: nil at EOF, else the
// read's or the write's error.
func copyBuf(dst io.Writer, src io.Reader, buf []byte) error {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}
