package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/internal/testenv"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRun runs msrpscope's run with a config file until the test ends.
// It returns when the relay logged that it listens.
func startRun(t *testing.T, config string) {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", writeFile(t, "c.yaml", config)}, pw)
		pw.Close()
	}()
	listening := make(chan struct{})
	var logged strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			logged.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "msg=listening") {
				once = true
				close(listening)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("msrpscope did not stop")
		}
		<-logDone
		if t.Failed() {
			t.Logf("msrpscope log:\n%s", logged.String())
		}
	})
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("run ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("msrpscope did not start")
	}
}

func tsharkBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	if err != nil {
		testenv.Missing(t, "tshark not found (apt-get install tshark)")
	}
	return bin
}

// End to end: two rules, one by remote CIDR and local port to a HEP
// collector (Kamailio sipcapture, nobody's code but Kamailio's), one by
// method to pcap (read back by tshark). Each receives exactly what its
// rule matches.
func TestTracingEndToEnd(t *testing.T) {
	tshark := tsharkBinary(t)
	homer := kamailio.StartHEPCollector(t)
	pcapDir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "pw")
	startRun(t, fmt.Sprintf(`
listen:
  - {transport: msrp, addr: "127.0.0.1:%[1]d"}
  - {transport: msrp, addr: "127.0.0.1:%[2]d"}
admin: {addr: "127.0.0.1:0"}
tracing:
  enabled: true
  rules:
    - name: partners
      match: 'remote.ip in cidr("127.0.0.2/32") && local.port == %[1]d'
      events: true
      frames: true
      to: [homer]
    - name: sends
      match: 'method == "SEND"'
      frames: true
      to: [pcap]
sinks:
  homer: {type: hep, addr: "%[3]s", transport: udp, capture_id: 2001, node: relay-1}
  pcap: {type: pcap, dir: "%[4]s"}
log: {level: debug}
`, p1, p2, homer.Addr(), pcapDir))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(from string, port int) (*msrpclient.Client, string) {
		c, err := msrpclient.DialOptions(ctx, fmt.Sprintf("127.0.0.1:%d", port), nil, msrpclient.Options{LocalAddr: from + ":0"})
		if err != nil {
			t.Fatal(err)
		}
		use, _, err := c.Auth(ctx, fmt.Sprintf("msrp://127.0.0.1:%d;tcp", port), "demo", "pw", 0)
		if err != nil {
			t.Fatal(err)
		}
		return c, use
	}
	a, useA := dial("127.0.0.2", p1) // the partner: matches rule 1
	b, useB := dial("127.0.0.3", p2) // matches rule 1 on neither address nor port
	defer b.Close()
	res, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("traced"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	var got *msrpclient.Received
	select {
	case got = <-b.Incoming():
	case <-ctx.Done():
		t.Fatal("B got nothing")
	}
	// A 40,000-byte SEND: the relay captures its first 16,384 bytes
	// (trace_capture_bytes); HEP and pcap carry it cut once, with the same
	// marker stating the true totals.
	bigBody := []byte(strings.Repeat("0123456789", 4000))
	resBig, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: bigBody, ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	var gotBig *msrpclient.Received
	select {
	case gotBig = <-b.Incoming():
	case <-ctx.Done():
		t.Fatal("B got no big SEND")
	}
	a.Close() // A's connection closes: a closed event on rule 1's connection

	sidA := useA[strings.LastIndexByte(useA, '/')+1 : strings.LastIndexByte(useA, ';')]
	sidB := useB[strings.LastIndexByte(useB, '/')+1 : strings.LastIndexByte(useB, ';')]
	chat := sidA + "~" + sidB
	if sidB < sidA {
		chat = sidB + "~" + sidA
	}
	// Rule 1, A's connection only: accepted, AUTH in, 401 out, AUTH in,
	// 200 out, SEND in, 200 out, closed. Nothing of B's connection.
	// Correlation (docs/HEP.md): the AUTH that creates A's session and its
	// 200 carry that session; the chat's frames both sessions, sorted and
	// joined with "~"; the rest the connection. A search for %sidA% in Homer
	// finds the AUTH and the chat.
	want := []struct {
		payload string // prefix of the payload
		fromA   bool   // src is A (else the relay)
		cid     string // "chat", "sidA", or "" for conn-<n>
	}{
		{"MSRP:ACCEPTED:SUCCESS:Connection accepted", true, ""},
		{"MSRP ", true, ""},      // AUTH
		{"MSRP ", false, ""},     // 401
		{"MSRP ", true, "sidA"},  // AUTH
		{"MSRP ", false, "sidA"}, // 200 with Use-Path
		{"MSRP ", true, "chat"},  // SEND
		{"MSRP ", false, "chat"}, // 200
		{"MSRP ", true, "chat"},  // the big SEND
		{"MSRP ", false, "chat"}, // 200
		{"MSRP:CLOSED:SUCCESS:", true, ""},
	}
	pkts := homer.WaitFor(t, len(want), 20*time.Second)
	sort.SliceStable(pkts, func(i, j int) bool { return pkts[i].Time().Before(pkts[j].Time()) })
	if len(pkts) != len(want) {
		for _, p := range pkts {
			t.Logf("%s %v:%d → %v:%d %q", p.CorrelationID, p.Src, p.SrcPort, p.Dst, p.DstPort, p.Payload)
		}
		t.Fatalf("collector got %d packets, want %d", len(pkts), len(want))
	}
	var connCID string
	for i, w := range want {
		p := pkts[i]
		if p.Err != nil || p.Version != 3 || p.Family != 2 || p.IPProto != 6 || p.ProtoType != 100 || p.CaptureID != 2001 || p.Transport != "udp" {
			t.Errorf("packet %d header: %+v", i, p)
		}
		a, r := "127.0.0.2", "127.0.0.1"
		src, dst, dport := p.Src.String(), p.Dst.String(), int(p.DstPort)
		if w.fromA {
			if src != a || dst != r || dport != p1 {
				t.Errorf("packet %d: %s:%d → %s:%d, want A → relay:%d", i, src, p.SrcPort, dst, p.DstPort, p1)
			}
		} else if src != r || dst != a || int(p.SrcPort) != p1 {
			t.Errorf("packet %d: %s:%d → %s:%d, want relay:%d → A", i, src, p.SrcPort, dst, p.DstPort, p1)
		}
		if !strings.HasPrefix(string(p.Payload), w.payload) {
			t.Errorf("packet %d payload %q, want prefix %q", i, p.Payload, w.payload)
		}
		cid := string(p.CorrelationID)
		switch {
		case w.cid == "chat" && cid != chat:
			t.Errorf("packet %d correlation id %q, want the chat %q", i, cid, chat)
		case w.cid == "sidA" && cid != sidA:
			t.Errorf("packet %d correlation id %q, want A's session %q", i, cid, sidA)
		case w.cid == "":
			if connCID == "" {
				connCID = cid
			}
			if !regexp.MustCompile(`^conn-\d+$`).MatchString(cid) || cid != connCID {
				t.Errorf("packet %d correlation id %q, want %q", i, cid, connCID)
			}
		}
	}
	for i, m := range []string{" AUTH\r\n", " 401 ", " AUTH\r\n", " 200 OK\r\n", " SEND\r\n", " 200 OK\r\n", " SEND\r\n", " 200 OK\r\n"} {
		if !strings.Contains(string(pkts[i+1].Payload), m) {
			t.Errorf("frame packet %d %q lacks %q", i+1, pkts[i+1].Payload, m)
		}
	}
	if !strings.Contains(string(pkts[5].Payload), "\r\n\r\ntraced\r\n-------") {
		t.Errorf("SEND packet body: %q", pkts[5].Payload)
	}
	big := pkts[7].Payload
	mm := regexp.MustCompile(`\r\n\[msrpscope: frame truncated, (\d+) of (\d+) bytes omitted\]\r\n-------` +
		regexp.QuoteMeta(resBig.Chunks[0].TransactID) + `\$\r\n$`).FindSubmatch(big)
	if mm == nil {
		t.Fatalf("big SEND packet of %d bytes ends %q: no marker with its end-line", len(big), big[max(0, len(big)-100):])
	}
	omitted, total := atoi(t, string(mm[1])), atoi(t, string(mm[2]))
	if len(big)-len(mm[0]) != 16384 || total <= 40000 || omitted != total-16384 {
		t.Fatalf("big SEND: %d bytes kept, marker says %d of %d omitted: want 16384 kept of the whole frame", len(big)-len(mm[0]), omitted, total)
	}
	bigMarker := mm[0]

	// Rule 2: exactly the two SENDs, in (A's transact-id) and out (the
	// relay's, as B received it), in the pcap file tshark reads.
	files, _ := filepath.Glob(filepath.Join(pcapDir, "msrpscope-*.pcap"))
	if len(files) != 1 {
		t.Fatalf("pcap files %v", files)
	}
	wantLines := []string{"SEND\t" + res.Chunks[0].TransactID, "SEND\t" + got.TransactID,
		"SEND\t" + resBig.Chunks[0].TransactID, "SEND\t" + gotBig.TransactID}
	var lines []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmd := exec.Command(tshark, "-n", "-r", files[0], "-Y", "msrp", "-T", "fields", "-E", "occurrence=f",
			"-e", "msrp.method", "-e", "msrp.transaction.id")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		lines = strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), "\t", "|"))
		if len(lines) >= len(wantLines) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the sink flushes when idle; poll the file
	}
	for i := range lines {
		lines[i] = strings.ReplaceAll(lines[i], "|", "\t")
	}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Fatalf("tshark shows %q, want %q", lines, wantLines)
	}
	pcapBytes, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pcapBytes, bigMarker) {
		t.Fatalf("the pcap file lacks the HEP packet's marker %q", bigMarker)
	}
}

// A HEP collector that accepts and never reads: relaying goes on (every
// message is delivered) and the sink counts what it dropped.
func TestStalledCollectorDoesNotSlowRelaying(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c // accepted, never read
		}
	}()
	defer func() {
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	}()
	port := freePort(t)
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "pw")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := writeFile(t, "c.yaml", fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:%d"}]
admin: {addr: "127.0.0.1:0"}
tracing:
  enabled: true
  rules: [{name: all, events: true, frames: true, to: [stalled]}]
sinks:
  stalled: {type: hep, addr: "%s", transport: tcp, queue: 256, frame_limit: 60000}
`, port, ln.Addr()))
	go func() {
		done <- run(ctx, []string{"-config", cfg}, pw)
		pw.Close()
	}()
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for l := range lines {
		if strings.Contains(l, "msg=listening") {
			break
		}
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer tcancel()
	uri := fmt.Sprintf("msrp://127.0.0.1:%d;tcp", port)
	a, err := msrpclient.Dial(tctx, fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := msrpclient.DialOptions(tctx, fmt.Sprintf("127.0.0.1:%d", port), nil, msrpclient.Options{DiscardIncoming: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	useA, _, err := a.Auth(tctx, uri, "demo", "pw", 0)
	if err != nil {
		t.Fatal(err)
	}
	useB, _, err := b.Auth(tctx, uri, "demo", "pw", 0)
	if err != nil {
		t.Fatal(err)
	}
	// 2,000 SENDs of 16 KB: 8,000 traced frames, about 130 MB of HEP,
	// far more than the socket buffers and a 256-packet queue hold.
	body := make([]byte, 16<<10)
	for i := range 2000 {
		if _, err := a.Send(tctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: body, ContentType: "application/octet-stream"}); err != nil {
			t.Fatalf("SEND %d with the collector stalled: %v", i, err)
		}
	}
	cancel()
	var sinkLine string
	for l := range lines {
		if strings.Contains(l, `msg="trace sink"`) {
			sinkLine = l
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`dropped=(\d+)`).FindStringSubmatch(sinkLine)
	if m == nil || m[1] == "0" {
		t.Fatalf("no drops counted with the collector stalled: %q", sinkLine)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
