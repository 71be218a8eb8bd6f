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

func TestCheckConfig(t *testing.T) {
	users := writeFile(t, "users.yaml", "users:\n  - name: alice\n    password: pw\n")
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"defaults", "", ""},
		{"users file", "relay:\n  auth:\n    users_file: " + users + "\n", ""},
		{"unknown key", "relay:\n  auht: {}\n", "field auht not found"},
		{"bad transport", "listen:\n  - {transport: udp, addr: \"127.0.0.1:2855\"}\n", "transport must be msrp or msrps"},
		{"msrps without cert", "listen:\n  - {transport: msrps, addr: \"127.0.0.1:2856\"}\n", "msrps needs cert and key"},
		{"unspecified address without uri", "listen:\n  - {transport: msrp, addr: \"0.0.0.0:2855\"}\n", "needs an explicit uri"},
		{"missing users file", "relay:\n  auth:\n    users_file: /nonexistent/users.yaml\n", "users"},
		{"bad expires", "relay:\n  auth: {expires: 10, min_expires: 60}\n", "min_expires <= expires"},
		{"bad duration", "relay:\n  limits: {idle_timeout: soon}\n", "line 2: cannot unmarshal"},
		{"unknown sink key", "sinks:\n  pcap:\n    type: pcap\n    dri: /tmp\n", `sink "pcap": line 4: field dri not found`},
		{"unknown sink type", "sinks:\n  pcap: {type: kafka}\n", `unknown type "kafka"`},
		{"hep addr without port", "sinks:\n  pcap: {type: hep, addr: 127.0.0.1}\n", "want host:port"},
		{"bad sink value", "sinks:\n  pcap: {type: pcap, max_file_age: soon}\n", "line 2: cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := run(context.Background(), []string{"-check-config", writeFile(t, "c.yaml", tc.yaml)}, &out)
			if tc.wantErr == "" {
				if err != nil || !strings.Contains(out.String(), "configuration OK") {
					t.Fatalf("err %v, output %q", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// The binary's run with a config file: it listens, relays between two
// demo clients, and stops cleanly when its context ends (as on SIGTERM).
func TestRunRelays(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	traces := t.TempDir()
	cfg := writeFile(t, "c.yaml", "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nlog: {level: debug}\n"+
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
