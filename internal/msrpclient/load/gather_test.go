package load

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// The pattern's slices are the body 'a'+i%26 from any offset, whatever
// the span, and its CRC is that of the whole body.
func TestBodyPattern(t *testing.T) {
	full := make([]byte, 3<<20+7)
	for i := range full {
		full[i] = 'a' + byte(i%26)
	}
	for _, piece := range []int{1, 25, 26, 27, 100, 16 << 10, 64 << 10, 10 << 20} {
		bp := newBodyPattern(piece)
		if bp.span%bodyPeriod != 0 || bp.span < min(piece, bodySpanMax) || len(bp.pat) != bp.span+bodyPeriod {
			t.Fatalf("piece %d: span %d, pattern %d bytes", piece, bp.span, len(bp.pat))
		}
		for _, r := range [][2]int64{{0, 1}, {0, 26}, {5, 100}, {25, 64 << 10}, {1000003, 65536}, {0, int64(len(full))}, {12345, 1 << 20}} {
			var got []byte
			for off, end := r[0], r[0]+r[1]; off < end; {
				s := bp.slice(off, end-off)
				if len(s) == 0 || len(s) > bp.span {
					t.Fatalf("piece %d: slice(%d, %d) is %d bytes", piece, off, end-off, len(s))
				}
				got = append(got, s...)
				off += int64(len(s))
			}
			if !bytes.Equal(got, full[r[0]:r[0]+r[1]]) {
				t.Errorf("piece %d: body [%d, +%d) differs", piece, r[0], r[1])
			}
		}
		for _, size := range []int64{1, 26, 100, 3<<20 + 7} {
			if got, want := bp.crc(size), crc32.Checksum(full[:size], castagnoli); got != want {
				t.Errorf("piece %d: crc(%d) = %08x, want %08x", piece, size, got, want)
			}
		}
	}
}

// plainWriter is an io.Writer without writev: the copying path.
type plainWriter struct{ bytes.Buffer }

// A gatherWriter writes every byte in order, over TCP (writev, pieces
// referenced) and over a writer without writev (copied), across the
// buffer, iovec and byte limits.
func TestGatherWriterOrder(t *testing.T) {
	big := make([]byte, 300<<10)
	fillBody(big)
	ops := func(g *gatherWriter, want *bytes.Buffer) {
		str := func(s string) { _, _ = g.WriteString(s); want.WriteString(s) }
		body := func(p []byte) { g.WriteBody(p); want.Write(p) }
		str("MSRP t1 SEND\r\n")
		b := strconvAppend(g.AvailableBuffer(), "Byte-Range: 1-65536/100\r\n")
		_, _ = g.Write(b)
		want.Write(b)
		body(big[:64<<10])
		_ = g.WriteByte('$')
		want.WriteByte('$')
		body(big[3 : 3+100])        // small: copied
		body(big[7 : 7+gatherMin])  // the threshold: referenced on TCP
		body(big[:writeBufSize+10]) // a buffer long
		for i := range 2 * gatherMaxIOV {
			str("-------t")
			body(big[i : i+gatherMin+i])
		}
		for range 5 { // past gatherMaxBytes
			body(big[1:])
		}
		for range writeBufSize/7 + 3 { // small writes past the buffer
			str("1234567")
		}
		body(big[:10])
	}

	t.Run("tcp", func(t *testing.T) {
		ac, bc := loopback(t)
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(bc); got <- b }()
		g := newGatherWriter(ac, writeBufSize)
		if !g.vec {
			t.Fatal("a *net.TCPConn does not take the writev path")
		}
		var want bytes.Buffer
		ops(g, &want)
		if err := g.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = ac.(*net.TCPConn).CloseWrite()
		if b := <-got; !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("got %d bytes, want %d, or they differ", len(b), want.Len())
		}
	})
	t.Run("plain", func(t *testing.T) {
		var w plainWriter
		g := newGatherWriter(&w, writeBufSize)
		if g.vec {
			t.Fatal("a plain writer takes the writev path")
		}
		var want bytes.Buffer
		ops(g, &want)
		if g.Buffered() == 0 {
			t.Fatal("nothing pending before Flush")
		}
		if err := g.Flush(); err != nil || g.Buffered() != 0 {
			t.Fatal(err, g.Buffered())
		}
		if !bytes.Equal(w.Bytes(), want.Bytes()) {
			t.Fatalf("got %d bytes, want %d, or they differ", w.Len(), want.Len())
		}
	})
}

func strconvAppend(b []byte, s string) []byte { return append(b, s...) }

type failWriter struct{ n int }

var errWrite = errors.New("write failed")

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errWrite
}

// A write error sticks: later writes do nothing, Flush returns it.
func TestGatherWriterError(t *testing.T) {
	fw := &failWriter{}
	g := newGatherWriter(fw, 16)
	_, _ = g.WriteString("0123456789abcdef") // fills the buffer
	if _, err := g.WriteString("x"); !errors.Is(err, errWrite) {
		t.Fatalf("write past a full buffer: %v", err)
	}
	g.WriteBody(make([]byte, 100))
	if err := g.WriteByte('x'); !errors.Is(err, errWrite) {
		t.Fatalf("WriteByte: %v", err)
	}
	if err := g.Flush(); !errors.Is(err, errWrite) || fw.n != 1 {
		t.Fatalf("Flush: %v after %d writes, want the first error and no more writes", err, fw.n)
	}
}

// Over TLS (no writev: every byte copied, a body as long as the buffer
// written directly) the engine delivers large messages, chunked and whole,
// each checked by CRC at B.
func TestEngineTLSLarge(t *testing.T) {
	cert := selfSigned(t)
	for _, tc := range []struct{ size, chunk, count int }{{1 << 20, 64 << 10, 12}, {300 << 10, 0, 10}, {100 << 10, 8 << 10, 5}} {
		ac, bc := loopback(t)
		srv := tls.Server(bc, &tls.Config{Certificates: []tls.Certificate{cert}})
		cli := tls.Client(ac, &tls.Config{InsecureSkipVerify: true}) // a throw-away certificate on loopback
		hs := make(chan error, 1)
		go func() { hs <- srv.Handshake() }()
		if err := cli.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-hs; err != nil {
			t.Fatal(err)
		}
		if g := newGatherWriter(cli, writeBufSize); g.vec {
			t.Fatal("TLS takes the writev path")
		}
		p := runPair(t, cli, srv, Options{RelayURI: "msrp://127.0.0.1:1;tcp", Size: tc.size, Chunk: tc.chunk, Window: 8, Count: tc.count})
		if p.acked.Load() != int64(tc.count) || p.delivrd.Load() != int64(tc.count) || len(p.errs)+len(p.bErrs) != 0 ||
			p.recvBytes != int64(tc.count*tc.size) {
			t.Fatalf("%+v: acked %d delivered %d, %d bytes, errors %v %v", tc, p.acked.Load(), p.delivrd.Load(), p.recvBytes, p.errs, p.bErrs)
		}
	}
}

// The same over TCP, chunked and whole (one SEND of 300 KiB: several
// pattern slices in one frame).
func TestEngineTCPLarge(t *testing.T) {
	for _, tc := range []struct{ size, chunk, count int }{{1 << 20, 64 << 10, 12}, {300 << 10, 0, 20}, {3<<20 + 5, 100 << 10, 3}} {
		ac, bc := loopback(t)
		p := runPair(t, ac, bc, Options{RelayURI: "msrp://127.0.0.1:1;tcp", Size: tc.size, Chunk: tc.chunk, Window: 8, Count: tc.count})
		if p.acked.Load() != int64(tc.count) || p.delivrd.Load() != int64(tc.count) || len(p.errs)+len(p.bErrs) != 0 ||
			p.recvBytes != int64(tc.count*tc.size) {
			t.Fatalf("%+v: acked %d delivered %d, %d bytes, errors %v %v", tc, p.acked.Load(), p.delivrd.Load(), p.recvBytes, p.errs, p.bErrs)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
