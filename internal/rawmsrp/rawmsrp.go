// Package rawmsrp is the raw MSRP clients of the relay benchmarks (package
// relay's and the whole program's in cmd/msrpscope): two loopback
// connections A and B, A sending prepared SENDs to B through a relay, B
// answering each with a 200. Everything is written from prepared or reused
// buffers: after the first calls the clients allocate nothing per SEND, so
// a benchmark's allocation count is the relay's. It imports relay/msrp and
// msrpclient (for the Digest answer; it imports only relay/msrp), never
// relay, whose own tests use it.
package rawmsrp

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Client is one raw connection to the relay and a frame reader on it.
type Client struct {
	Conn net.Conn
	R    *msrp.Reader
}

// NewClient reads nc with a 32 KiB buffer and the default limits.
func NewClient(nc net.Conn) *Client {
	return &Client{Conn: nc, R: msrp.NewReader(bufio.NewReaderSize(nc, 32<<10), msrp.Limits{})}
}

// URI is the client's own URI with session id sid,
// "msrp://local-host:port/sid;tcp".
func (c *Client) URI(sid string) string {
	return "msrp://" + c.Conn.LocalAddr().String() + "/" + sid + ";tcp"
}

// Drain reads f's body to its end.
func Drain(tb testing.TB, f *msrp.Frame) {
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

// SEND is a complete SEND request of a text/plain body in one chunk.
func SEND(tid, toPath, fromPath, messageID string, body []byte) []byte {
	return []byte("MSRP " + tid + " SEND\r\nTo-Path: " + toPath + "\r\nFrom-Path: " + fromPath +
		"\r\nMessage-ID: " + messageID + "\r\nByte-Range: 1-" + strconv.Itoa(len(body)) + "/" + strconv.Itoa(len(body)) +
		"\r\nContent-Type: text/plain\r\n\r\n" + string(body) + "\r\n-------" + tid + "$\r\n")
}

// AppendOK appends the 200 answering the request f to dst: its To-Path is
// the first URI of f's From-Path, its From-Path f's To-Path (RFC 4975
// §7.2: the response goes back one hop).
func AppendOK(dst []byte, f *msrp.Frame) []byte {
	to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
	dst = append(dst, "MSRP "...)
	dst = append(dst, f.TransactID...)
	dst = append(dst, " 200 OK\r\nTo-Path: "...)
	dst = append(dst, to...)
	dst = append(dst, "\r\nFrom-Path: "...)
	dst = append(dst, f.Get(msrp.HdrToPath)...)
	dst = append(dst, "\r\n-------"...)
	dst = append(dst, f.TransactID...)
	return append(dst, "$\r\n"...)
}

// Pair is A and B with a session each on the relay.
type Pair struct {
	A, B *Client
	// Send is one SEND from A to B, written by One.
	Send []byte
	resp []byte // B's 200s, reused
}

// NewPair makes a pair whose A sends send to B.
func NewPair(a, b net.Conn, send []byte) *Pair {
	return &Pair{A: NewClient(a), B: NewClient(b), Send: send, resp: make([]byte, 0, 512)}
}

// One sends Send from A, reads it at B, answers it with a 200 and waits
// for the relay's 200 at A.
func (p *Pair) One(tb testing.TB) {
	if _, err := p.A.Conn.Write(p.Send); err != nil {
		tb.Fatal(err)
	}
	p.answer(tb, 1)
	p.ok(tb, 1)
}

// Burst writes sends, n SENDs back to back, from A in one write (as a
// client with n in flight), reads the n at B, answers all n in one write
// and reads the n 200s at A.
func (p *Pair) Burst(tb testing.TB, sends []byte, n int) {
	if _, err := p.A.Conn.Write(sends); err != nil {
		tb.Fatal(err)
	}
	p.answer(tb, n)
	p.ok(tb, n)
}

// answer reads n SENDs at B and answers them in one write.
func (p *Pair) answer(tb testing.TB, n int) {
	r := p.resp[:0]
	for range n {
		f, err := p.B.R.ReadFrame()
		if err != nil || string(f.Method) != "SEND" {
			tb.Fatalf("B read %v", err)
		}
		r = AppendOK(r, f)
		Drain(tb, f)
	}
	p.resp = r
	if _, err := p.B.Conn.Write(r); err != nil {
		tb.Fatal(err)
	}
}

// ok reads n 200s at A.
func (p *Pair) ok(tb testing.TB, n int) {
	for range n {
		f, err := p.A.R.ReadFrame()
		if err != nil || f.StatusCode != 200 {
			tb.Fatalf("A read %v", err)
		}
		Drain(tb, f)
	}
}

// Auth authenticates c to the relay at relayURI as user with password
// (RFC 4976 §5.1: an AUTH, its 401's challenge answered with Digest per
// RFC 7616, msrpclient's, qop=auth) and returns the Use-Path URI the relay gave.
func (c *Client) Auth(tb testing.TB, relayURI, user, password string) string {
	tb.Helper()
	from := c.URI("c")
	auth := func(tid, cred string) *msrp.Frame {
		req := "MSRP " + tid + " AUTH\r\nTo-Path: " + relayURI + "\r\nFrom-Path: " + from + "\r\n"
		if cred != "" {
			req += "Authorization: " + cred + "\r\n"
		}
		req += "-------" + tid + "$\r\n"
		if _, err := c.Conn.Write([]byte(req)); err != nil {
			tb.Fatal(err)
		}
		f, err := c.R.ReadFrame()
		if err != nil {
			tb.Fatal(err)
		}
		Drain(tb, f)
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
	cred, _, err := msrpclient.DigestAuthorization(ch, "AUTH", relayURI, user, password)
	if err != nil {
		tb.Fatal(err)
	}
	f = auth("auth2", cred)
	if f.StatusCode != 200 {
		tb.Fatalf("AUTH with credentials: %d", f.StatusCode)
	}
	use, _ := msrp.SplitPath(f.Get(msrp.HdrUsePath))
	return string(use)
}
