package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The binary's run with a config file: it listens, relays between two
// demo clients, and stops cleanly when its context ends (as on SIGTERM).
func TestRunRelays(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	traces := t.TempDir()
	cfg := writeFile(t, "c.yaml", "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nlog: {level: debug}\nadmin: {addr: \"127.0.0.1:0\"}\n"+
		"sinks:\n  pcap: {type: pcap, dir: \""+traces+"\"}\n")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", cfg}, pw)
		pw.Close()
	}()
	uriCh := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg=listening uri="?([^" ]+)"? addr=(\S+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				uriCh <- m[1] + " " + m[2]
			}
		}
	}()
	var uri, addr string
	select {
	case s := <-uriCh:
		uri, addr, _ = strings.Cut(s, " ")
	case <-time.After(20 * time.Second):
		t.Fatal("no listening log line")
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer tcancel()
	var clients [2]*msrpclient.Client
	var uses [2]string
	for i := range clients {
		c, err := msrpclient.Dial(tctx, addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if uses[i], _, err = c.Auth(tctx, uri, "demo", "demo-secret", 0); err != nil {
			t.Fatalf("AUTH demo: %v", err)
		}
		clients[i] = c
	}
	if _, err := clients[0].Send(tctx, []string{uses[0], uses[1], clients[1].LocalURI()},
		msrpclient.Message{Body: []byte("first run"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-clients[1].Incoming():
		if string(got.Body) != "first run" {
			t.Fatalf("got %+v", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("message not delivered")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no clean shutdown")
	}
	// The embedded default traces everything to a pcap file.
	files, _ := filepath.Glob(filepath.Join(traces, "msrpscope-*.pcap"))
	if len(files) == 0 {
		t.Fatal("no pcap file written by the default trace rule")
	}
	data, err := os.ReadFile(files[0])
	if err != nil || !strings.Contains(string(data), "first run") {
		t.Fatalf("pcap file %s does not hold the message (%d bytes, %v)", files[0], len(data), err)
	}
}
