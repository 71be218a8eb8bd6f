package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/internal/faultfs"
)

// -h prints what msrpscope is and its flags, and is not an error (exit 0).
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		for _, want := range []string{"MSRP relay", "-config file", "-check-config", "-version", "docs/CONFIG.md"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: no %q in\n%s", arg, want, out.String())
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-no-such-flag"}, &out); err == nil || !strings.Contains(err.Error(), "-h") {
		t.Fatalf("unknown flag: %v", err)
	}
}

// -version prints one line from the build information and exits 0.
func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, &out); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasPrefix(line, "msrpscope ") || !strings.Contains(line, runtime.Version()) ||
		!strings.HasSuffix(line, runtime.GOOS+"/"+runtime.GOARCH+"\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("version %q", line)
	}
}

// With tracing.enabled false the pcap sink is open (a dynamic trace may
// use it) but writes no file while nothing is traced.
func TestTracingOffWritesNoPcap(t *testing.T) {
	dir := t.TempDir()
	o := startOpsRun(t, "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nadmin: {addr: \"127.0.0.1:0\"}\n"+
		"tracing: {enabled: false}\nsinks:\n  pcap: {type: pcap, dir: \""+dir+"\"}\n", "")
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	if err := sendTo(t, a, useA, b, useB, "not traced"); err != nil {
		t.Fatal(err)
	}
	o.must(t, "GET", "/readyz", "", 200, nil)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("pcap folder with tracing off: %v %v", entries, err)
	}
}

// A pcap folder that cannot be created does not stop the relay (a HEP
// collector that is down does not either): it relays, and /readyz says
// which sink is degraded and why.
func TestUnwritablePcapFolderStartsDegraded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o := startOpsRun(t, "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nadmin: {addr: \"127.0.0.1:0\"}\n"+
		"sinks:\n  pcap: {type: pcap, dir: \""+filepath.Join(file, "pcaps")+"\"}\n", "")
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	for i := range 20 {
		if err := sendTo(t, a, useA, b, useB, "relayed while the sink fails "+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	code, body := o.call(t, "GET", "/readyz", "")
	if code != 503 || !strings.Contains(string(body), "sink pcap: degraded") || !strings.Contains(string(body), "not a directory") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	code, body = o.call(t, "GET", "/metrics", "")
	if code != 200 || !regexp.MustCompile(`msrpscope_trace_sink_degraded\{[^}]*sink="pcap"[^}]*\} 1\n`).Match(body) {
		t.Fatalf("/metrics: %d, no degraded pcap sink in\n%s", code, body)
	}
	if !strings.Contains(o.logs.text(), "pcap sink starts degraded") {
		t.Fatalf("log:\n%s", o.logs.text())
	}
}

// The pcap folder's disk fills up while the relay runs: every message is
// still relayed, the sink turns degraded, and no file per record appears.
func TestFullDiskUnderRelay(t *testing.T) {
	dir := faultfs.Tmpfs(t, 256<<10)
	o := startOpsRun(t, "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nadmin: {addr: \"127.0.0.1:0\"}\n"+
		"sinks:\n  pcap: {type: pcap, dir: \""+dir+"\"}\n", "")
	a, useA := o.demo(t)
	b, useB := o.demo(t)
	body := strings.Repeat("x", 4000)
	for i := range 200 { // ~1.6 MB of frames in and out into 256 KiB
		if err := sendTo(t, a, useA, b, useB, body+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	code, rb := o.call(t, "GET", "/readyz", "")
	if code != 503 || !strings.Contains(string(rb), "sink pcap: degraded") || !strings.Contains(string(rb), "no space") {
		t.Fatalf("/readyz: %d %s", code, rb)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.pcap")); len(files) > 2 {
		t.Fatalf("%d pcap files on a full disk", len(files))
	}
}

// -check-config stays offline: a pcap folder that cannot be created is not a
// configuration error (the relay would start with the sink degraded), and
// checking creates nothing.
func TestCheckConfigOfflineForPcapFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet", "pcaps")
	cfg := writeFile(t, "c.yaml", "sinks:\n  pcap: {type: pcap, dir: \""+dir+"\"}\n")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-check-config", cfg}, &out); err != nil {
		t.Fatalf("-check-config: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Fatalf("-check-config created the pcap folder: %v", err)
	}
	bad := writeFile(t, "bad.yaml", "sinks:\n  pcap: {type: pcap, dir: \""+dir+"\", max_file_bytes: -1}\n")
	if err := run(context.Background(), []string{"-check-config", bad}, &out); err == nil {
		t.Fatal("-check-config passed a negative max_file_bytes")
	}
}
