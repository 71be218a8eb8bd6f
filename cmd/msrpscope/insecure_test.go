package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsCollector is a TLS listener on loopback with a self-signed certificate that
// reads and discards what it is sent (a HEP collector nothing can verify).
func tlsCollector(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "collector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// insecure_skip_verify on relay.outbound or a HEP sink is never silent: -check-config
// prints a warning (and still succeeds), start-up logs one per place, and the HEP client
// logs one when it connects (issue 15, defect 6).
func TestInsecureSkipVerifyWarns(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	addr := tlsCollector(t)
	config := func(insecure bool) string {
		return writeFile(t, "c.yaml", fmt.Sprintf(`listen:
  - {transport: msrp, addr: "127.0.0.1:0"}
relay:
  outbound: {insecure_skip_verify: %[1]t}
tracing:
  rules:
    - {name: all, events: true, frames: true, to: [h]}
sinks:
  h: {type: hep, transport: tls, addr: "%[2]s", insecure_skip_verify: %[1]t}
  off: {type: hep, transport: tls, addr: "%[2]s", insecure_skip_verify: true}
admin: {addr: ""}
`, insecure, addr))
	}
	relayWarn := "relay.outbound.insecure_skip_verify is on"
	sinkWarn := "sinks.h.insecure_skip_verify is on"
	for _, insecure := range []bool{false, true} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"-check-config", config(insecure)}, &out); err != nil {
			t.Fatalf("insecure %v: -check-config: %v\n%s", insecure, err, out.String())
		}
		s := out.String()
		for _, w := range []string{relayWarn, sinkWarn} {
			if strings.Contains(s, w) != insecure {
				t.Errorf("insecure %v: -check-config output %q: has %q: %v", insecure, s, w, !insecure)
			}
		}
		if strings.Contains(s, "sinks.off") {
			t.Errorf("-check-config warns about a sink no rule uses: %q", s)
		}
		if !strings.Contains(s, "configuration OK") {
			t.Errorf("insecure %v: -check-config output %q, want configuration OK", insecure, s)
		}
	}

	// Start-up and the HEP client's connection.
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", config(true)}, pw)
		pw.Close()
	}()
	want := map[string]bool{
		"relay.outbound.insecure_skip_verify is on": false, // start
		"collector's certificate is not verified":   false, // the sink's start
		"connected without verifying":               false, // the HEP client's connection
	}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		left := len(want)
		for sc.Scan() {
			line := sc.Text()
			for w, seen := range want {
				if !seen && strings.Contains(line, w) && strings.Contains(line, "level=WARN") {
					want[w] = true
					if left--; left == 0 {
						close(found)
					}
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-found:
	case <-time.After(20 * time.Second): // a deadlock detector, not a timing assertion
		cancel()
		<-done
		t.Fatal("not all the warnings were logged at start (relay, sink, connection)")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
