package main

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
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

	"github.com/msrpscope/msrpscope/relay/msrp"
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
	a, b       net.Conn
	ar, br     *msrp.Reader
	send, resp []byte
	burst      []byte        // window SENDs of distinct transact-ids and Message-IDs, back to back
	hepGot     *atomic.Int64 // HEP datagrams the loopback reader received (traceHEPUDP)
	pcapDir    string
}

// startTraced starts run in mode and authenticates two clients.
func startTraced(tb testing.TB, mode traceMode) *tracedRelay {
	tb.Helper()
	tr := &tracedRelay{hepGot: new(atomic.Int64)}
	port := freePortTB(tb)
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
	var useA, useB string
	tr.a, tr.ar, useA = authClient(tb, port, relayURI)
	tr.b, tr.br, useB = authClient(tb, port, relayURI)
	uriB := "msrp://" + tr.b.LocalAddr().String() + "/c;tcp"
	uriA := "msrp://" + tr.a.LocalAddr().String() + "/c;tcp"
	body := make([]byte, 100)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	tr.send = []byte("MSRP a786hjs2 SEND\r\nTo-Path: " + useA + " " + useB + " " + uriB +
		"\r\nFrom-Path: " + uriA + "\r\nMessage-ID: 87652491\r\nByte-Range: 1-100/100\r\n" +
		"Content-Type: text/plain\r\n\r\n" + string(body) + "\r\n-------a786hjs2$\r\n")
	tr.resp = make([]byte, 0, 512)
	for i := range window {
		tid := fmt.Sprintf("b%07d", i)
		tr.burst = append(tr.burst, "MSRP "+tid+" SEND\r\nTo-Path: "+useA+" "+useB+" "+uriB+
			"\r\nFrom-Path: "+uriA+"\r\nMessage-ID: m"+tid+"\r\nByte-Range: 1-100/100\r\n"+
			"Content-Type: text/plain\r\n\r\n"+string(body)+"\r\n-------"+tid+"$\r\n"...)
	}
	return tr
}

// window is the number of SENDs in flight in a burst, as msrpload -window 64.
const window = 64

// many relays window SENDs at once: A writes them in one write, B reads
// them all and answers all in one write, A reads the window 200s. The relay
// so sees reads of many frames, as under load.
func (tr *tracedRelay) many(tb testing.TB) {
	if _, err := tr.a.Write(tr.burst); err != nil {
		tb.Fatal(err)
	}
	r := tr.resp[:0]
	for range window {
		f, err := tr.br.ReadFrame()
		if err != nil || string(f.Method) != "SEND" {
			tb.Fatalf("B read %v", err)
		}
		to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
		r = append(r, "MSRP "...)
		r = append(r, f.TransactID...)
		r = append(r, " 200 OK\r\nTo-Path: "...)
		r = append(r, to...)
		r = append(r, "\r\nFrom-Path: "...)
		r = append(r, f.Get(msrp.HdrToPath)...)
		r = append(r, "\r\n-------"...)
		r = append(r, f.TransactID...)
		r = append(r, "$\r\n"...)
		drainFrame(tb, f)
	}
	tr.resp = r
	if _, err := tr.b.Write(r); err != nil {
		tb.Fatal(err)
	}
	for range window {
		f, err := tr.ar.ReadFrame()
		if err != nil || f.StatusCode != 200 {
			tb.Fatalf("A read %v", err)
		}
		drainFrame(tb, f)
	}
}

func freePortTB(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

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

// authClient dials the relay and authenticates as demo (RFC 4976 §5.1,
// Digest per RFC 7616 with qop=auth); it returns the Use-Path URI.
func authClient(tb testing.TB, port int, relayURI string) (net.Conn, *msrp.Reader, string) {
	tb.Helper()
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	rd := msrp.NewReader(bufio.NewReaderSize(nc, 32<<10), msrp.Limits{})
	from := "msrp://" + nc.LocalAddr().String() + "/c;tcp"
	auth := func(tid, cred string) *msrp.Frame {
		req := "MSRP " + tid + " AUTH\r\nTo-Path: " + relayURI + "\r\nFrom-Path: " + from + "\r\n"
		if cred != "" {
			req += "Authorization: " + cred + "\r\n"
		}
		req += "-------" + tid + "$\r\n"
		if _, err := nc.Write([]byte(req)); err != nil {
			tb.Fatal(err)
		}
		f, err := rd.ReadFrame()
		if err != nil {
			tb.Fatal(err)
		}
		drainFrame(tb, f)
		return f
	}
	f := auth("auth1", "")
	if f.StatusCode != 401 {
		tb.Fatalf("AUTH: %d, want 401", f.StatusCode)
	}
	ch, err := msrp.ParseDigest(f.Get(msrp.HdrWWWAuthenticate))
	if err != nil {
		tb.Fatal(err)
	}
	realm, _ := ch.Get("realm")
	nonce, _ := ch.Get("nonce")
	alg, hasAlg := ch.Get("algorithm")
	newHash := md5.New
	if strings.EqualFold(alg, "SHA-256") {
		newHash = sha256.New
	}
	h := func(s string) string { return hexOf(newHash, s) }
	const cnonce, nc1 = "0a4f113b", "00000001"
	resp := h(h("demo:"+realm+":pw") + ":" + nonce + ":" + nc1 + ":" + cnonce + ":auth:" + h("AUTH:"+relayURI))
	params := []msrp.DigestParam{
		{Name: "username", Value: "demo", Quoted: true}, {Name: "realm", Value: realm, Quoted: true},
		{Name: "nonce", Value: nonce, Quoted: true}, {Name: "uri", Value: relayURI, Quoted: true},
		{Name: "response", Value: resp, Quoted: true}, {Name: "qop", Value: "auth"},
		{Name: "cnonce", Value: cnonce, Quoted: true}, {Name: "nc", Value: nc1},
	}
	if hasAlg {
		params = append(params, msrp.DigestParam{Name: "algorithm", Value: alg})
	}
	if op, ok := ch.Get("opaque"); ok {
		params = append(params, msrp.DigestParam{Name: "opaque", Value: op, Quoted: true})
	}
	f = auth("auth2", string(msrp.AppendDigest(nil, "Digest", params...)))
	if f.StatusCode != 200 {
		tb.Fatalf("AUTH with credentials: %d", f.StatusCode)
	}
	use, _ := msrp.SplitPath(f.Get(msrp.HdrUsePath))
	return nc, rd, string(use)
}

func hexOf(newHash func() hash.Hash, s string) string {
	h := newHash()
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

func drainFrame(tb testing.TB, f *msrp.Frame) {
	body := f.Body()
	for {
		_, err := body.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// one sends one SEND from A to B, answers it at B and waits for the
// relay's 200 at A.
func (tr *tracedRelay) one(tb testing.TB) {
	if _, err := tr.a.Write(tr.send); err != nil {
		tb.Fatal(err)
	}
	f, err := tr.br.ReadFrame()
	if err != nil || string(f.Method) != "SEND" {
		tb.Fatalf("B read %v", err)
	}
	to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
	r := append(tr.resp[:0], "MSRP "...)
	r = append(r, f.TransactID...)
	r = append(r, " 200 OK\r\nTo-Path: "...)
	r = append(r, to...)
	r = append(r, "\r\nFrom-Path: "...)
	r = append(r, f.Get(msrp.HdrToPath)...)
	r = append(r, "\r\n-------"...)
	r = append(r, f.TransactID...)
	r = append(r, "$\r\n"...)
	tr.resp = r
	drainFrame(tb, f)
	if _, err := tr.b.Write(tr.resp); err != nil {
		tb.Fatal(err)
	}
	f, err = tr.ar.ReadFrame()
	if err != nil || f.StatusCode != 200 {
		tb.Fatalf("A read %v", err)
	}
	drainFrame(tb, f)
}

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
