package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
	"github.com/msrpscope/msrpscope/internal/rawmsrp"
)

// The cost of tracing per relayed SEND, measured on the whole program: run
// with a configuration, two raw loopback clients authenticated as the demo
// user, A sending 100-byte SENDs to B through the relay, B answering 200.
// Each SEND is four traced frames (SEND in and out, 200 in and out).
// Allocations and CPU are the whole process's (relay, tracer, sinks,
// metrics; the raw clients allocate nothing per SEND).

// traceMode is one configuration of the tracing cost benchmarks.
type traceMode int

const (
	traceOff     traceMode = iota // tracing: {enabled: false} (metrics on, as by default)
	traceDefault                  // the embedded default: every event and frame to pcap and recent
	traceHEPUDP                   // every event and frame to HEP over UDP
)

// tracedRelay is run with a configuration of one mode and two raw clients
// with a session each.
type tracedRelay struct {
	raw     *rawmsrp.Pair
	burst   []byte        // window SENDs of distinct transact-ids and Message-IDs, back to back
	hepGot  *atomic.Int64 // HEP datagrams the loopback reader received (traceHEPUDP)
	pcapDir string
}

// startTraced starts run in mode and authenticates two clients.
func startTraced(tb testing.TB, mode traceMode) *tracedRelay {
	tb.Helper()
	tr := &tracedRelay{hepGot: new(atomic.Int64)}
	port, err := proc.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := fmt.Sprintf("listen:\n  - {transport: msrp, addr: \"127.0.0.1:%d\"}\nadmin: {addr: \"127.0.0.1:0\"}\n", port)
	switch mode {
	case traceOff:
		cfg += "tracing: {enabled: false}\n"
	case traceDefault:
		// The embedded default's pcap sink writes to the working directory.
		tr.pcapDir = tb.TempDir()
		tb.Chdir(tr.pcapDir)
	case traceHEPUDP:
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		done := make(chan struct{})
		go func() { // owned by the test: ends when pc is closed
			defer close(done)
			buf := make([]byte, 65536)
			for {
				// Read allocates nothing (ReadFrom would: the sender's address).
				if _, err := pc.Read(buf); err != nil {
					return
				}
				tr.hepGot.Add(1)
			}
		}()
		tb.Cleanup(func() { pc.Close(); <-done })
		cfg += fmt.Sprintf(`tracing:
  rules:
    - {name: all, match: "", events: true, frames: true, to: [homer]}
sinks:
  homer: {type: hep, addr: "%s", transport: udp}
`, pc.LocalAddr())
	}
	tb.Setenv("MSRPSCOPE_DEMO_PASSWORD", "pw")
	startRunTB(tb, cfg)
	relayURI := fmt.Sprintf("msrp://127.0.0.1:%d;tcp", port)
	a, b := authClient(tb, port), authClient(tb, port)
	useA := a.Auth(tb, relayURI, "demo", "pw")
	useB := b.Auth(tb, relayURI, "demo", "pw")
	toPath, fromPath := useA+" "+useB+" "+b.URI("c"), a.URI("c")
	body := make([]byte, 100)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	tr.raw = rawmsrp.NewPair(a.Conn, b.Conn, rawmsrp.SEND("a786hjs2", toPath, fromPath, "87652491", body))
	for i := range window {
		tid := fmt.Sprintf("b%07d", i)
		tr.burst = append(tr.burst, rawmsrp.SEND(tid, toPath, fromPath, "m"+tid, body)...)
	}
	return tr
}

// window is the number of SENDs in flight in a burst, as msrpload -window 64.
const window = 64

// many relays window SENDs at once: A writes them in one write, B reads
// them all and answers all in one write, A reads the window 200s. The relay
// so sees reads of many frames, as under load.
func (tr *tracedRelay) many(tb testing.TB) { tr.raw.Burst(tb, tr.burst, window) }

// startRunTB is startRun for benchmarks too; the log is discarded.
func startRunTB(tb testing.TB, config string) {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", p, "-log-level", "warn"}, pw)
		pw.Close()
	}()
	// run logs nothing at warn when all is well: wait for the listener.
	logDone := make(chan struct{})
	var logged strings.Builder
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logged.WriteString(sc.Text() + "\n")
		}
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Error("msrpscope did not stop")
		}
		<-logDone
		if tb.Failed() {
			tb.Logf("msrpscope log:\n%s", logged.String())
		}
	})
	addr := regexp.MustCompile(`addr: "([^"]+)"`).FindStringSubmatch(config)[1]
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			tb.Fatalf("run ended: %v\n%s", err, logged.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatal("msrpscope did not start")
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a listener that is not up yet: no event to wait on
	}
}

// authClient dials the relay's port.
func authClient(tb testing.TB, port int) *rawmsrp.Client {
	tb.Helper()
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	return rawmsrp.NewClient(nc)
}

// one sends one SEND from A to B, answers it at B and waits for the
// relay's 200 at A.
func (tr *tracedRelay) one(tb testing.TB) { tr.raw.One(tb) }

// framesPerSEND are the traced frames of one relayed SEND.
const framesPerSEND = 4

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchTraced(b *testing.B, mode traceMode) {
	tr := startTraced(b, mode)
	for range 500 { // warm the pools, rings and flows
		tr.one(b)
	}
	for range 20 {
		tr.many(b)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	b.ResetTimer()
	n := 0
	for n < b.N {
		tr.many(b)
		n += window
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(n), "cpu-µs/SEND")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(n*framesPerSEND), "allocs/frame")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/SEND")
}

// BenchmarkRelayTracedOff: tracing switched off, metrics on (the default).
func BenchmarkRelayTracedOff(b *testing.B) { benchTraced(b, traceOff) }

// BenchmarkRelayTracedDefault: the embedded default, every event and frame
// to pcap (in a temporary working directory) and recent.
func BenchmarkRelayTracedDefault(b *testing.B) { benchTraced(b, traceDefault) }

// BenchmarkRelayTracedHEPUDP: every event and frame to HEP over UDP, to a
// loopback reader.
func BenchmarkRelayTracedHEPUDP(b *testing.B) { benchTraced(b, traceHEPUDP) }

// allocsPerSEND is the process's mean allocations per relayed SEND over n
// SENDs (half one at a time, half in bursts of window), after a warm-up:
// the least of three such rounds, so that a buffer pool growing to a
// higher number in flight than the warm-up reached (the machine is shared:
// a sink's goroutine may fall behind) is not taken for a cost per frame.
func allocsPerSEND(tb testing.TB, tr *tracedRelay, n int) float64 {
	for range 500 {
		tr.one(tb)
	}
	for range 20 {
		tr.many(tb)
	}
	// The best of several rounds: buffers that wait in a sink's queue (or
	// transactions whose answer the relay has not read yet) are recycled
	// objects, and on a busy machine the backlog can reach a new peak in a
	// round, allocating once up to the queue's bound; a round without a new
	// peak shows the steady state, which allocates nothing.
	best := math.Inf(1)
	for range 8 {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range n / 2 {
			tr.one(tb)
		}
		for range n / 2 / window {
			tr.many(tb)
		}
		runtime.ReadMemStats(&m1)
		best = min(best, float64(m1.Mallocs-m0.Mallocs)/float64(n/2+n/2/window*window))
	}
	return best
}
