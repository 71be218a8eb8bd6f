package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
	"github.com/msrpscope/msrpscope/internal/ratelog"
)

// The floor: "msrpload forward" is the least a relay can do with a frame —
// read it and write it to the other connection, with no parsing, routing,
// transaction or tracing — and the bench measures its CPU per SEND beside
// the relays' (msrpload -direct -via, the same frames at the same rates).
// It is the simplest forwarder of each design, not a proof of a bound: a
// relay does more per frame, but can batch frames into fewer system calls
// than this one-read-one-write loop (msrpscope runs a little below the
// goroutine floor at moderate rates).
//
// Each connection names its destination in a first line, "host:port\n"
// (msrpload -via writes B's listening address), which must be a loopback
// address: the forwarder listens on loopback only and is no open proxy.
// After the line the bytes go both ways unchanged until either side
// closes.

// Floor forwarding modes (msrpload forward -mode).
const (
	// FloorGoroutine: a goroutine per direction, net.Conn Read and Write
	// through Go's netpoller (relay/ uses the same poller).
	FloorGoroutine = "goroutine"
	// FloorEpoll: event loops of the forwarder's own on epoll(7), level
	// triggered: one read per readiness and no read that finds nothing,
	// no goroutine wake-up per frame (Linux only).
	FloorEpoll = "epoll"
)

// floorEpollOK: the epoll floor exists on Linux only.
const floorEpollOK = runtime.GOOS == "linux"

// floorLineMax bounds the first line.
const floorLineMax = 64

// floorBuf is a direction's read buffer.
const floorBuf = 64 << 10

// ForwardMain is "msrpload forward": the floor forwarder on a loopback
// address until SIGINT or SIGTERM. It prints "listening ADDR" when ready.
func ForwardMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("msrpload forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback host:port to listen on")
	mode := fs.String("mode", FloorGoroutine, "goroutine (Go's netpoller) or epoll (event loops of its own, Linux)")
	loops := fs.Int("loops", 1, "epoll mode: event loops (each a locked OS thread)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "msrpload forward: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := ListenForward(*listen, *mode, *loops)
	if err != nil {
		fmt.Fprintln(stderr, "msrpload forward:", err)
		return 2
	}
	f.Log = ratelog.New(slog.New(slog.NewTextHandler(stderr, nil)), ratelog.Config{})
	defer f.Log.Flush()
	fmt.Fprintln(stdout, "listening", f.Addr())
	if err := f.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, "msrpload forward:", err)
		return 1
	}
	return 0
}

// Forwarder is the floor forwarder: its listener and, in epoll mode, its
// event loops.
type Forwarder struct {
	ln    net.Listener
	mode  string
	loops []*floorLoop
	next  int
	wg    sync.WaitGroup // the connection goroutines
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open, closed on stop
	done  bool                  // stopping: no more connections

	// Log, when set before Serve, gets a line for each connection closed
	// before it was forwarded (a bad or late first line, a destination
	// that refused): rate-limited, a peer triggers them.
	Log *ratelog.Logger
}

// ListenForward listens on the loopback addr for the floor forwarder in
// mode (FloorGoroutine, FloorEpoll with loops event loops); Serve runs it.
func ListenForward(addr, mode string, loops int) (*Forwarder, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("-listen %q: not a loopback address", addr)
	}
	f := &Forwarder{mode: mode, conns: map[net.Conn]struct{}{}}
	switch mode {
	case FloorGoroutine:
	case FloorEpoll:
		if loops < 1 {
			return nil, errors.New("-loops must be at least 1")
		}
		for range loops {
			l, err := newFloorLoop()
			if err != nil {
				f.closeLoops()
				return nil, err
			}
			f.loops = append(f.loops, l)
		}
	default:
		return nil, fmt.Errorf("-mode %q: want %s or %s", mode, FloorGoroutine, FloorEpoll)
	}
	if f.ln, err = net.Listen("tcp", addr); err != nil {
		f.closeLoops()
		return nil, err
	}
	return f, nil
}

// Addr is the listening address.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

func (f *Forwarder) closeLoops() {
	for _, l := range f.loops {
		l.close()
	}
}

// Serve accepts until ctx ends, then closes every connection and waits
// for their goroutines and loops.
func (f *Forwarder) Serve(ctx context.Context) error {
	for _, l := range f.loops {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			l.run()
		}()
	}
	stopped := context.AfterFunc(ctx, func() { f.ln.Close() })
	defer stopped()
	var err error
	var backoff time.Duration
	for {
		c, aerr := f.ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			// Out of descriptors (or another passing error, as
			// net/http's Serve treats them): wait and accept again.
			if errors.Is(aerr, syscall.EMFILE) || errors.Is(aerr, syscall.ENFILE) ||
				errors.Is(aerr, syscall.ENOBUFS) || errors.Is(aerr, syscall.ENOMEM) || errors.Is(aerr, syscall.ECONNABORTED) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			err = aerr
			break
		}
		backoff = 0
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.connect(c)
		}()
	}
	f.ln.Close()
	f.mu.Lock()
	f.done = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.closeLoops()
	f.wg.Wait()
	return err
}

// track adds c to the open connections; when the forwarder stops it
// closes c instead and returns false.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// connect reads a's first line, dials the loopback address it names and
// forwards between them.
func (f *Forwarder) connect(a net.Conn) {
	if !f.track(a) {
		return
	}
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(a, floorBuf)
	to, err := readDest(br, f.ln.Addr())
	_ = a.SetReadDeadline(time.Time{})
	if err != nil {
		f.refused(a, "first_line", "no valid first line (host:port within 5 s)", err)
		return
	}
	b, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		f.refused(a, "dial", "destination not reached", err)
		return
	}
	if f.mode == FloorEpoll {
		// Bytes that came with the line are B's already.
		if n := br.Buffered(); n > 0 {
			p, _ := br.Peek(n)
			_ = b.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := b.Write(p)
			_ = b.SetWriteDeadline(time.Time{})
			if err != nil {
				b.Close()
				f.refused(a, "first_bytes", "bytes sent with the first line not written", err)
				return
			}
		}
		// The loop takes duplicates of both descriptors; a pair it
		// refuses (stopping) is closed, which msrpload reports.
		err := f.loops[f.pick()].add(a, b)
		b.Close()
		if err != nil {
			f.refused(a, "loop", "not added to an event loop", err)
			return
		}
		f.untrack(a)
		return
	}
	if !f.track(b) {
		f.untrack(a)
		return
	}
	done := make(chan struct{})
	go func() {
		// A's side ended: B gets the end (its reader then ends); a
		// failure resets both.
		if pipe(b, br) {
			closeWrite(b)
		} else {
			abort(b)
			abort(a)
		}
		close(done)
	}()
	if pipe(a, b) {
		closeWrite(a)
	} else {
		abort(a)
		abort(b)
	}
	<-done
	f.untrack(a)
	f.untrack(b)
}

// refused closes a, which was not forwarded, and says why.
func (f *Forwarder) refused(a net.Conn, key, msg string, err error) {
	if f.Log != nil {
		f.Log.Info(key, "msrpload forward: connection closed: "+msg, slog.String("remote", a.RemoteAddr().String()), slog.String("err", err.Error()))
	}
	f.untrack(a)
}

func (f *Forwarder) pick() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.next % len(f.loops)
	f.next++
	return i
}

// readDest reads the first line: a loopback host:port, not self (a
// connection chaining through the forwarder again and again).
func readDest(br *bufio.Reader, self net.Addr) (string, error) {
	var line []byte
	for {
		c, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		if c == '\n' {
			break
		}
		if len(line) == floorLineMax {
			return "", errors.New("first line too long")
		}
		line = append(line, c)
	}
	to := strings.TrimSuffix(string(line), "\r")
	host, _, err := net.SplitHostPort(to)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%q: not a loopback address", to)
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return "", err
	}
	if sa, ok := self.(*net.TCPAddr); ok && sa.AddrPort().Addr().Unmap() == ap.Addr().Unmap() && sa.AddrPort().Port() == ap.Port() {
		return "", fmt.Errorf("%q: the forwarder itself", to)
	}
	return to, nil
}

// pipe copies src to dst through a buffer of its own until src ends or
// dst fails: whether src ended cleanly (EOF) with everything written.
func pipe(dst net.Conn, src io.Reader) bool {
	return copyBuf(dst, src, make([]byte, floorBuf)) == nil
}

// abort resets c (linger 0): after a failure on the other side a clean
// end would make what was lost look whole.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = c.Close()
	}
}

// kindFloor is the floor forwarder's rows.
const kindFloor = "floor"

// floorLabel names a floor row.
func floorLabel(mode string) string {
	if mode == FloorEpoll {
		return "floor: minimal forwarder, epoll loop of its own, one thread (no parsing)"
	}
	return "floor: minimal forwarder, goroutine per connection (no parsing)"
}

// floorNote explains the floor rows under a table.
const floorNote = "floor: msrpload forward, a process that only reads each connection and writes what it read to the other one (no parsing, routing, transactions or tracing), driven by msrpload -direct -via with the same frames: what the simplest forwarder of each design (Go's netpoller; event loops of its own) pays on this machine under the same load, its CPU measured as a relay's. A relay does more per frame, and only batching frames into fewer system calls takes it below its design's floor"

// startFloor starts "msrpload forward -mode mode" on a free loopback port.
func (r *runner) startFloor(ctx context.Context, mode string) (*target, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var t *target
		if t, err = r.startFloorOnce(ctx, mode); err == nil {
			return t, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (r *runner) startFloorOnce(ctx context.Context, mode string) (*target, error) {
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	logPath := filepath.Join(r.dir, "forward-"+mode+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.msrpload, "forward", "-listen", addr, "-mode", mode)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proc.Start(cmd, func() { logf.Close() })
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := proc.WaitTCP(ctx, addr, p.Exited(), 20*time.Second); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("msrpload forward -mode %s: %w; log:\n%s", mode, err, proc.Tail(proc.ReadLog(logPath), 20))
	}
	return &target{kind: kindFloor, name: floorLabel(mode), uri: addr, pid: p.Pid(), floor: p}, nil
}
