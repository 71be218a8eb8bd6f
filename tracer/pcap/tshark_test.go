package pcap

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/testenv"
)

// tshark runs tshark on file and returns its standard output.
//
// tshark 4.0 (Debian bookworm) runs as root when only reading a file: it
// prints `Running as user "root" and group "root". This could be dangerous.`
// on stderr and carries on, so no option is needed for that. HOME points to
// an empty folder so that no personal Wireshark profile changes dissection;
// -n disables name resolution. Checksum validation is off by default in
// Wireshark and is switched on with -o for the checks below.
func tshark(t *testing.T, file string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("tshark")
	if err != nil {
		testenv.Missing(t, "tshark not found (apt-get install tshark)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-n", "-r", file,
		"-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\nstderr: %s", cmd.Args, err, stderr.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.Contains(line, "Running as user") {
			t.Logf("tshark stderr: %s", line)
		}
	}
	return stdout.String()
}

// problemFilter matches anything Wireshark considers wrong: TCP analysis
// findings (lost/retransmitted/out-of-order segments, zero window, ...),
// malformed packets, expert infos of severity warning (0x600000) or error,
// and bad IP or TCP checksums (status 0 = bad, 1 = good).
const problemFilter = "tcp.analysis.flags || _ws.malformed || _ws.expert.severity >= 0x600000" +
	" || tcp.checksum.status != 1 || ip.checksum.status != 1"

func assertNoProblems(t *testing.T, file string) {
	t.Helper()
	if out := tshark(t, file, "-Y", problemFilter); strings.TrimSpace(out) != "" {
		t.Errorf("tshark reports problems in %s:\n%s", file, out)
	}
}

func msrpFrame(tid, method string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "MSRP %s %s\r\n", tid, method)
	b.WriteString("To-Path: msrp://b.example.com:7777/s;tcp\r\n")
	b.WriteString("From-Path: msrp://a.example.com:7654/t;tcp\r\n")
	if body != "" {
		fmt.Fprintf(&b, "Message-ID: %s-m\r\nByte-Range: 1-%d/%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n", tid, len(body), len(body), body)
	}
	fmt.Fprintf(&b, "-------%s$\r\n", tid)
	return b.String()
}

const (
	rfcSend = "MSRP a786hjs2 SEND\r\nTo-Path: msrp://b.example.com:7777/s;tcp\r\nFrom-Path: msrp://a.example.com:7654/t;tcp\r\nMessage-ID: 87652491\r\nByte-Range: 1-25/25\r\nContent-Type: text/plain\r\n\r\nHey Bob, are you there?\r\n-------a786hjs2$\r\n"
	rfcOK   = "MSRP a786hjs2 200 OK\r\nTo-Path: msrp://a.example.com:7654/t;tcp\r\nFrom-Path: msrp://b.example.com:7777/s;tcp\r\n-------a786hjs2$\r\n"
)

// writeMSRPCapture writes an IPv4 connection with the RFC 4975 example
// SEND and its 200 OK, a 5000-byte SEND the writer splits into segments, a
// SEND the relay reports in two pieces split inside its headers, and an IPv6
// flow never opened (implicit state) with a SEND and a 481 response.
func writeMSRPCapture(t *testing.T, cfg Config) {
	w := mustOpen(t, cfg)
	c, s := netip.MustParseAddrPort("192.0.2.10:49170"), netip.MustParseAddrPort("198.51.100.20:2855")
	c6, s6 := netip.MustParseAddrPort("[2001:db8::10]:51000"), netip.MustParseAddrPort("[2001:db8::20]:7777")
	at := t0
	next := func() time.Time { at = at.Add(time.Millisecond); return at }
	big := msrpFrame("bigsend1", "SEND", strings.Repeat("0123456789", 500))
	split := msrpFrame("hdrsplt2", "SEND", "split in the headers")
	cut := strings.Index(split, "From-Path") + 5

	ok(t, w.ConnOpen(next(), c, s))
	ok(t, w.Data(next(), c, s, []byte(rfcSend)))
	ok(t, w.Data(next(), s, c, []byte(rfcOK)))
	ok(t, w.Data(next(), c, s, []byte(big)))
	ok(t, w.Data(next(), s, c, []byte(msrpFrame("bigsend1", "200 OK", ""))))
	ok(t, w.Data(next(), c, s, []byte(split[:cut])))
	ok(t, w.Data(next(), c, s, []byte(split[cut:])))
	ok(t, w.Data(next(), s, c, []byte(msrpFrame("hdrsplt2", "200 OK", ""))))
	ok(t, w.Data(next(), c6, s6, []byte(msrpFrame("v6flow33", "SEND", "over IPv6"))))
	ok(t, w.Data(next(), s6, c6, []byte(msrpFrame("v6flow33", "481 Session does not exist", ""))))
	ok(t, w.ConnClose(next(), c, s))
	ok(t, w.ConnClose(next(), c6, s6))
	ok(t, w.Close())
}

var wantMSRP = []string{
	"SEND a786hjs2 -", "- a786hjs2 200",
	"SEND bigsend1 -", "- bigsend1 200",
	"SEND hdrsplt2 -", "- hdrsplt2 200",
	"SEND v6flow33 -", "- v6flow33 481",
}

// msrpFields lists method, transaction id and status code of every MSRP
// frame tshark dissects in files, "-" for an empty field.
func msrpFields(t *testing.T, files ...string) []string {
	var got []string
	for _, f := range files {
		out := tshark(t, f, "-Y", "msrp", "-T", "fields", "-E", "occurrence=f",
			"-e", "msrp.method", "-e", "msrp.transaction.id", "-e", "msrp.status.code")
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if line == "" {
				continue
			}
			fs := strings.Split(line, "\t")
			for i := range fs {
				if fs[i] == "" {
					fs[i] = "-"
				}
			}
			got = append(got, strings.Join(fs, " "))
		}
	}
	return got
}

func TestTsharkMSRP(t *testing.T) {
	dir := t.TempDir()
	writeMSRPCapture(t, Config{Dir: dir})
	files := ourPcaps(t, dir, DefaultPrefix)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	if got := msrpFields(t, files[0]); !slices.Equal(got, wantMSRP) {
		t.Errorf("tshark MSRP frames:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantMSRP, "\n"))
	}
	assertNoProblems(t, files[0])
	// The conversation list shows both complete TCP streams.
	if out := tshark(t, files[0], "-q", "-z", "conv,tcp"); !strings.Contains(out, "192.0.2.10:49170") || !strings.Contains(out, "2001:db8::10:51000") {
		t.Errorf("conv,tcp:\n%s", out)
	}

	// Control: the problem filter does catch a corrupted packet.
	data, err := os.ReadFile(files[0])
	ok(t, err)
	i := bytes.Index(data, []byte("Hey Bob"))
	if i < 0 {
		t.Fatal("payload not found in file")
	}
	data[i] ^= 0x20
	bad := filepath.Join(t.TempDir(), "bad.pcap")
	ok(t, os.WriteFile(bad, data, 0o644))
	if out := tshark(t, bad, "-Y", problemFilter, "-T", "fields", "-e", "frame.number"); strings.TrimSpace(out) != "4" {
		t.Errorf("corrupted file: problem frames %q, want 4", out)
	}
}

// Rotated files are each valid captures; together they hold all frames.
func TestTsharkRotated(t *testing.T) {
	dir := t.TempDir()
	writeMSRPCapture(t, Config{Dir: dir, MaxFileBytes: 3000})
	files := ourPcaps(t, dir, DefaultPrefix)
	if len(files) < 3 {
		t.Fatalf("only %d files", len(files))
	}
	var frames int
	for _, f := range files {
		n := len(readPcap(t, f))
		frames += n
		out := tshark(t, f, "-T", "fields", "-e", "frame.number")
		if got := strings.Count(out, "\n"); got != n {
			t.Errorf("%s: tshark read %d packets, pcapgo %d", f, got, n)
		}
		if out := tshark(t, f, "-Y", "_ws.malformed || tcp.checksum.status != 1 || ip.checksum.status != 1"); strings.TrimSpace(out) != "" {
			t.Errorf("%s: %s", f, out)
		}
	}
	// A frame whose segments straddle two files is lost to the dissector,
	// but every frame that starts and ends in one file is there.
	got := msrpFields(t, files...)
	for _, g := range got {
		if !slices.Contains(wantMSRP, g) {
			t.Errorf("unexpected MSRP frame %q", g)
		}
	}
	if len(got) < 4 {
		t.Errorf("only %d MSRP frames across %d files: %v", len(got), len(files), got)
	}
	t.Logf("%d files, %d packets, %d MSRP frames dissected", len(files), frames, len(got))
}

// README's command for rotated files, as a user types it in the folder:
// mergecap joins them into one stream that tshark reads from standard input,
// so even the frames straddling two files are dissected. -a (concatenate in
// the glob's order, which is the order written) matters: merging by time
// puts the segments of one frame, which share a timestamp, out of order
// across files, and that frame is lost to the dissector. (`tshark -r` with
// the glob, the command README gave before, fails with two files.)
func TestReadmeMergecapCommand(t *testing.T) {
	for _, bin := range []string{"tshark", "mergecap"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Missing(t, bin+" not found (apt-get install tshark)")
		}
	}
	dir := t.TempDir()
	writeMSRPCapture(t, Config{Dir: dir, MaxFileBytes: 3000})
	if files := ourPcaps(t, dir, DefaultPrefix); len(files) < 3 {
		t.Fatalf("only %d files", len(files))
	}
	run := func(command string) (string, error) {
		cmd := exec.Command("sh", "-c", command)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := run("mergecap -a -w - msrpscope-*.pcap | tshark -r - -Y msrp")
	if err != nil {
		t.Fatalf("README command: %v\n%s", err, out)
	}
	var n int
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, " MSRP ") {
			n++
		}
	}
	if n != len(wantMSRP) {
		t.Fatalf("README command shows %d MSRP frames, want %d:\n%s", n, len(wantMSRP), out)
	}
	if _, err := run("tshark -r msrpscope-*.pcap -Y msrp"); err == nil {
		t.Fatal("the old README command works with several files: this test no longer shows why mergecap")
	}
}
