package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// selfSignedFiles writes a certificate for 127.0.0.1 and its key (PEM).
func selfSignedFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// A TLS connection waits for its next frame in a blocking read that holds
// its read side (it has no readability wait that returns it, as a plain
// TCP one has): after a large body it must not take the 256 KiB read side
// for that wait, or every idle TLS connection whose last body was large
// holds 256 KiB until it sends again (largeread.go: "an idle one returns
// it"). tls.Conn hands out one record (16 KiB at most) per read anyway.
func TestReview2TLSIdleKeepsSmallReadSide(t *testing.T) {
	var grew atomic.Int32
	testHookResize = func(large bool) {
		if large {
			grew.Add(1)
		}
	}
	t.Cleanup(func() { testHookResize = nil })
	certFile, keyFile := selfSignedFiles(t)
	// A frame each client reads first is observed by its connection's read
	// loop, which starts after its handshake set the connection up: the
	// sessions are added after that (as an AUTH would).
	ready := make(chan netip.AddrPort, 2)
	obs := &benchObserver{frames: true, accepted: make(chan netip.AddrPort, 2), onFrame: func(_ *Relay, e *event.Event) {
		if e.Kind == event.FrameIn {
			select {
			case ready <- e.Conn.Remote:
			default: // the later frames
			}
		}
	}}
	r, err := New(Config{Listen: []Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: certFile, Key: keyFile}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b := &batchRelay{r: r}
	for i := range 2 {
		nc, err := tls.Dial("tcp", r.Addrs()[0].String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		local := addrPort(nc.LocalAddr())
		for got := <-obs.accepted; got != local; got = <-obs.accepted {
		}
		var c *conn
		for c == nil {
			r.mu.Lock()
			for _, x := range r.conns {
				if x.info.Remote == local {
					c = x
				}
			}
			r.mu.Unlock()
		}
		sid := "tsess" + strconv.Itoa(i)
		b.ncs, b.sids = append(b.ncs, nc), append(b.sids, sid)
		// No session yet: the relay answers this SEND with an error.
		if _, err := nc.Write(b.send(i, i, "probe", nil)); err != nil {
			t.Fatal(err)
		}
		if got := <-ready; got != local {
			t.Fatalf("frame from %v, sent from %v", got, local)
		}
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := msrp.NewReader(bufio.NewReader(nc), msrp.Limits{}).ReadFrame(); err != nil {
			t.Fatal(err)
		}
		prev, err := msrp.ParseURI(b.uriOf(nc))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.sessions.add(&session{id: sid, user: sid, conn: c, prevHop: prev, expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		c.requestOK.Store(true)
	}
	for _, nc := range b.ncs {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // only ends a failing test
	}
	large := bytes.Repeat([]byte("L"), 100<<10)
	for k, body := range [][]byte{large, []byte("small")} {
		if _, err := b.ncs[0].Write(b.send(0, 1, "m"+strconv.Itoa(k), body)); err != nil {
			t.Fatal(err)
		}
		if err := b.answer(t, 1, 1, func(f *msrp.Frame, got []byte) error {
			if !bytes.Equal(got, body) {
				return fmt.Errorf("body of %d bytes, want %d", len(got), len(body))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The small SEND was read after the wait that followed the large one.
	if n := grew.Load(); n != 0 {
		t.Fatalf("a TLS connection took the large read side %d times to wait for its next frame", n)
	}
}
