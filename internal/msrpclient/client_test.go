package msrpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

const testURI = "msrp://127.0.0.1:7777/client;tcp"

// peer is the far end of a net.Pipe, driven step by step by the test.
type peer struct {
	t    *testing.T
	conn net.Conn
	r    *msrp.Reader
	w    *msrp.Writer
}

// frame is a frame the peer read, copied.
type frame struct {
	tid, method string
	code        int
	hdr         []Header
	body        []byte
	hasBody     bool
	flag        byte
}

func (f *frame) get(name string) string {
	for _, h := range f.hdr {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

func newPair(t *testing.T, opts Options) (*Client, *peer) {
	t.Helper()
	a, b := net.Pipe()
	if opts.LocalURI == "" {
		opts.LocalURI = testURI
	}
	c := New(a, false, opts)
	t.Cleanup(func() { _ = c.Close() })
	p := &peer{t: t, conn: b, r: msrp.NewReader(bufio.NewReader(b), msrp.Limits{}), w: msrp.NewWriter(b)}
	t.Cleanup(func() { _ = b.Close() })
	return c, p
}

// read returns the next frame the client wrote (a deadline guards the test).
func (p *peer) read() *frame {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.r.ReadFrame()
	if err != nil {
		p.t.Fatalf("peer: reading a frame: %v", err)
	}
	out := &frame{tid: string(f.TransactID), method: string(f.Method), code: f.StatusCode, hdr: copyHeaders(f), hasBody: f.HasBody()}
	out.body, err = io.ReadAll(f.Body())
	if err != nil {
		p.t.Fatalf("peer: reading a body: %v", err)
	}
	out.flag = f.Flag()
	return out
}

func (p *peer) respond(tid string, code int, comment string, hdrs ...string) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := p.w.StartResponse([]byte(tid), code, comment); err != nil {
		p.t.Fatal(err)
	}
	p.w.HeaderString(msrp.HdrToPath, testURI)
	p.w.HeaderString(msrp.HdrFromPath, "msrp://relay.example:2855;tcp")
	for i := 0; i+1 < len(hdrs); i += 2 {
		p.w.HeaderString(hdrs[i], hdrs[i+1])
	}
	if err := p.w.End(msrp.FlagEnd); err != nil {
		p.t.Fatalf("peer: writing a response: %v", err)
	}
}

func (p *peer) writeRaw(s string) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(p.conn, s); err != nil {
		p.t.Fatalf("peer: write: %v", err)
	}
}

// async runs f in a goroutine owned by the test and returns its result channel.
func async[T any](f func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return ch
}

func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("client call did not return")
		panic("unreachable")
	}
}

type authOut struct {
	use string
	exp int
	err error
}

func hexOf(newHash func() hash.Hash, s string) string {
	h := newHash()
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

// checkDigest verifies an Authorization value the way a relay does and
// returns the rspauth for the Authentication-Info.
func checkDigest(t *testing.T, authz string, newHash func() hash.Hash, nonce, uri, password string) string {
	t.Helper()
	d, err := msrp.ParseDigest([]byte(authz))
	if err != nil {
		t.Fatalf("Authorization %q: %v", authz, err)
	}
	get := func(n string) string { v, _ := d.Get(n); return v }
	if get("nonce") != nonce || get("uri") != uri || get("qop") != "auth" || get("nc") != "00000001" || get("cnonce") == "" {
		t.Fatalf("Authorization %q: wrong nonce/uri/qop/nc/cnonce", authz)
	}
	h := func(s string) string { return hexOf(newHash, s) }
	ha1 := h(get("username") + ":" + get("realm") + ":" + password)
	kd := func(ha2 string) string {
		return h(ha1 + ":" + nonce + ":00000001:" + get("cnonce") + ":auth:" + ha2)
	}
	if want := kd(h("AUTH:" + uri)); get("response") != want {
		t.Fatalf("response = %s, want %s", get("response"), want)
	}
	return kd(h(":" + uri))
}

func TestAuth(t *testing.T) {
	const relay = "msrps://relay.example:2855;tcp"
	const use = "msrps://relay.example:2855/jui787s2f;tcp"
	tests := []struct {
		name       string
		challenges []string // WWW-Authenticate values of the 401
		newHash    func() hash.Hash
		stale      bool // first credentials get 401 stale=true
		final      int  // code of the answer to the credentials
		badRspauth bool
		wantCode   int // StatusError code wanted; 0 = success
		wantErr    error
	}{
		{name: "md5", challenges: []string{`Digest realm="r", nonce="n1", qop="auth"`}, newHash: md5.New, final: 200},
		{name: "sha-256 after an unsupported one", challenges: []string{
			`Digest realm="r", nonce="bad", algorithm=SHA-512-256, qop="auth"`,
			`Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"`,
		}, newHash: sha256.New, final: 200},
		{name: "stale nonce retried once", challenges: []string{`Digest realm="r", nonce="n1", qop="auth"`}, newHash: md5.New, stale: true, final: 200},
		{name: "403", challenges: []string{`Digest realm="r", nonce="n1", qop="auth"`}, newHash: md5.New, final: 403, wantCode: 403},
		{name: "401 again", challenges: []string{`Digest realm="r", nonce="n1", qop="auth"`}, newHash: md5.New, final: 401, wantCode: 401},
		{name: "bad rspauth", challenges: []string{`Digest realm="r", nonce="n1", qop="auth"`}, newHash: md5.New, final: 200, badRspauth: true, wantErr: ErrRspauth},
		{name: "no usable challenge", challenges: []string{`Digest realm="r", nonce="n1", algorithm=SHA-512-256`}, wantErr: ErrNoChallenge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, p := newPair(t, Options{})
			ctx := context.Background()
			done := async(func() authOut {
				u, e, err := c.Auth(ctx, relay, "alice", "secret", 900)
				return authOut{u, e, err}
			})
			f := p.read()
			if f.method != "AUTH" || f.get("Authorization") != "" || f.get("To-Path") != relay || f.get("From-Path") != testURI || f.get("Expires") != "900" {
				t.Fatalf("first AUTH: %+v", f)
			}
			hdrs := []string{}
			for _, ch := range tc.challenges {
				hdrs = append(hdrs, "WWW-Authenticate", ch)
			}
			p.respond(f.tid, 401, "Unauthorized", hdrs...)
			if tc.wantErr == ErrNoChallenge {
				if out := await(t, done); !errors.Is(out.err, ErrNoChallenge) {
					t.Fatalf("err = %v, want ErrNoChallenge", out.err)
				}
				return
			}
			nonce := "n1"
			f = p.read()
			rspauth := checkDigest(t, f.get("Authorization"), tc.newHash, nonce, relay, "secret")
			if tc.stale {
				nonce = "n2"
				p.respond(f.tid, 401, "Unauthorized", "WWW-Authenticate", `Digest realm="r", nonce="n2", stale=true, qop="auth"`)
				f = p.read()
				rspauth = checkDigest(t, f.get("Authorization"), tc.newHash, nonce, relay, "secret")
			}
			switch tc.final {
			case 200:
				if tc.badRspauth {
					rspauth = strings.Repeat("0", len(rspauth))
				}
				p.respond(f.tid, 200, "OK", "Use-Path", use, "Expires", "900",
					"Authentication-Info", `rspauth="`+rspauth+`", qop=auth, nc=00000001`)
			case 401:
				p.respond(f.tid, 401, "Unauthorized", "WWW-Authenticate", `Digest realm="r", nonce="n3", qop="auth"`)
			default:
				p.respond(f.tid, tc.final, "Forbidden")
			}
			out := await(t, done)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(out.err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", out.err, tc.wantErr)
				}
			case tc.wantCode != 0:
				var se *StatusError
				if !errors.As(out.err, &se) || se.Code != tc.wantCode {
					t.Fatalf("err = %v, want StatusError %d", out.err, tc.wantCode)
				}
			default:
				if out.err != nil || out.use != use || out.exp != 900 {
					t.Fatalf("Auth = %q, %d, %v", out.use, out.exp, out.err)
				}
			}
		})
	}
}

type sendOut struct {
	res *Result
	err error
}

func TestSendChunks(t *testing.T) {
	body := []byte("abcdEFGHij")
	tests := []struct {
		name   string
		msg    Message
		ranges []string
		flags  string
	}{
		{"one chunk", Message{Body: body}, []string{"1-10/10"}, "$"},
		{"chunks of 4", Message{Body: body, ChunkSize: 4}, []string{"1-4/10", "5-8/10", "9-10/10"}, "++$"},
		{"streamed", Message{BodyReader: bytes.NewReader(body), Size: 10, ChunkSize: 5}, []string{"1-5/10", "6-10/10"}, "+$"},
		{"bodiless", Message{}, []string{"1-0/0"}, "$"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, p := newPair(t, Options{})
			to := []string{"msrp://relay.example:2855/s1;tcp", "msrp://bob.example:8888/b;tcp"}
			tc.msg.Headers = []Header{{"X-Test", "1"}}
			done := async(func() sendOut { r, err := c.Send(context.Background(), to, tc.msg); return sendOut{r, err} })
			var got []byte
			for i, want := range tc.ranges {
				f := p.read()
				if f.method != "SEND" || f.get("To-Path") != strings.Join(to, " ") || f.get("From-Path") != testURI ||
					f.get("Byte-Range") != want || f.flag != tc.flags[i] || f.get("X-Test") != "1" || f.get("Message-ID") == "" {
					t.Fatalf("chunk %d: %+v, want Byte-Range %s flag %c", i, f, want, tc.flags[i])
				}
				if tc.name == "bodiless" && (f.hasBody || f.get("Content-Type") != "") {
					t.Fatalf("bodiless SEND has a body or Content-Type: %+v", f)
				}
				if bytes.Contains(f.body, []byte(f.tid)) {
					t.Fatalf("transact-id %s occurs in the body", f.tid)
				}
				got = append(got, f.body...)
				p.respond(f.tid, 200, "OK")
			}
			out := await(t, done)
			if out.err != nil || len(out.res.Chunks) != len(tc.ranges) {
				t.Fatalf("Send = %+v, %v", out.res, out.err)
			}
			for _, ch := range out.res.Chunks {
				if ch.Code != 200 {
					t.Fatalf("chunk %+v", ch)
				}
			}
			if tc.name != "bodiless" && !bytes.Equal(got, body) {
				t.Fatalf("peer got %q", got)
			}
		})
	}
}

func TestSendErrors(t *testing.T) {
	to := []string{"msrp://bob.example:8888/b;tcp"}
	t.Run("481", func(t *testing.T) {
		c, p := newPair(t, Options{})
		done := async(func() sendOut {
			r, err := c.Send(context.Background(), to, Message{Body: []byte("x")})
			return sendOut{r, err}
		})
		f := p.read()
		p.respond("unknown1234", 200, "OK") // a response to nothing: counted, dropped
		p.respond(f.tid, 481, "Session does not exist")
		out := await(t, done)
		var se *StatusError
		if !errors.As(out.err, &se) || se.Code != 481 {
			t.Fatalf("err = %v, want StatusError 481", out.err)
		}
		if n := c.Stats().UnknownResponses; n != 1 {
			t.Fatalf("UnknownResponses = %d, want 1", n)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c, p := newPair(t, Options{ResponseTimeout: 50 * time.Millisecond})
		done := async(func() sendOut {
			r, err := c.Send(context.Background(), to, Message{Body: []byte("x")})
			return sendOut{r, err}
		})
		f := p.read()
		out := await(t, done)
		if !errors.Is(out.err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", out.err)
		}
		// A late response is counted as unknown and dropped.
		p.respond(f.tid, 200, "OK")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if n := c.Stats().UnknownResponses; n != 1 {
			t.Fatalf("UnknownResponses = %d, want 1", n)
		}
	})
	t.Run("truncated response", func(t *testing.T) {
		c, p := newPair(t, Options{})
		done := async(func() sendOut {
			r, err := c.Send(context.Background(), to, Message{Body: []byte("x")})
			return sendOut{r, err}
		})
		f := p.read()
		p.writeRaw("MSRP " + f.tid + " 200 OK\r\nTo-Path: " + testURI + "\r\n")
		p.conn.Close()
		out := await(t, done)
		if !errors.Is(out.err, msrp.ErrTruncated) {
			t.Fatalf("err = %v, want msrp.ErrTruncated", out.err)
		}
		<-c.Done()
		if _, err := c.Send(context.Background(), to, Message{Body: []byte("y")}); err == nil {
			t.Fatal("Send on a dead connection succeeded")
		}
	})
	t.Run("failure-report no", func(t *testing.T) {
		c, p := newPair(t, Options{})
		done := async(func() sendOut {
			r, err := c.Send(context.Background(), to, Message{Body: []byte("x"), FailureReport: "no"})
			return sendOut{r, err}
		})
		f := p.read()
		if f.get("Failure-Report") != "no" {
			t.Fatalf("%+v", f)
		}
		if out := await(t, done); out.err != nil || out.res.Chunks[0].Code != 0 {
			t.Fatalf("Send = %+v, %v", out.res, out.err)
		}
	})
	t.Run("window full, context cancelled", func(t *testing.T) {
		c, p := newPair(t, Options{Window: 1})
		started := async(func() *Pending {
			pend, err := c.SendAsync(context.Background(), to, Message{Body: []byte("1")})
			if err != nil {
				t.Error(err)
			}
			return pend
		})
		f := p.read()
		first := await(t, started)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.SendAsync(ctx, to, Message{Body: []byte("2")}); !errors.Is(err, context.Canceled) {
			t.Fatalf("SendAsync with a full window and a cancelled context: %v", err)
		}
		p.respond(f.tid, 200, "OK")
		if res, err := first.Wait(context.Background()); err != nil || res.Chunks[0].Code != 200 {
			t.Fatalf("first: %+v %v", res, err)
		}
	})
}

func TestIncoming(t *testing.T) {
	const from = "msrp://relay.example:2855/r1;tcp msrp://alice.example:7777/a;tcp"
	send := func(p *peer, tid, extra string, body string, flag byte) {
		p.writeRaw("MSRP " + tid + " SEND\r\nTo-Path: " + testURI + "\r\nFrom-Path: " + from +
			"\r\nMessage-ID: m123\r\n" + extra + "Content-Type: text/plain\r\n\r\n" + body + "\r\n-------" + tid + string(flag) + "\r\n")
	}
	next := func(t *testing.T, c *Client) *Received {
		t.Helper()
		select {
		case r := <-c.Incoming():
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("nothing incoming")
			return nil
		}
	}

	t.Run("200 and success REPORT", func(t *testing.T) {
		c, p := newPair(t, Options{})
		send(p, "tid00001", "Byte-Range: 1-5/10\r\nSuccess-Report: yes\r\n", "Hello", '+')
		f := p.read()
		if f.code != 200 || f.tid != "tid00001" || f.get("To-Path") != "msrp://relay.example:2855/r1;tcp" || f.get("From-Path") != testURI {
			t.Fatalf("response %+v: want 200 to the first From-Path URI only", f)
		}
		send(p, "tid00002", "Byte-Range: 6-10/10\r\nSuccess-Report: yes\r\n", "World", '$')
		if f = p.read(); f.code != 200 || f.tid != "tid00002" {
			t.Fatalf("response %+v", f)
		}
		f = p.read()
		if f.method != "REPORT" || f.get("To-Path") != from || f.get("Status") != "000 200 OK" ||
			f.get("Byte-Range") != "1-10/10" || f.get("Message-ID") != "m123" || f.get("Success-Report") != "" {
			t.Fatalf("REPORT %+v", f)
		}
		r1, r2 := next(t, c), next(t, c)
		if string(r1.Body)+string(r2.Body) != "HelloWorld" || r1.Flag != '+' || r2.Flag != '$' ||
			r2.ByteRange != (msrp.ByteRange{Start: 6, End: 10, Total: 10}) || len(r2.FromPath) != 2 || !r2.Responded {
			t.Fatalf("received %+v / %+v", r1, r2)
		}
		// REPORTs are delivered and never answered.
		p.writeRaw("MSRP rep00001 REPORT\r\nTo-Path: " + testURI + "\r\nFrom-Path: " + from +
			"\r\nMessage-ID: m9\r\nByte-Range: 1-3/3\r\nStatus: 000 408 Timeout\r\n-------rep00001$\r\n")
		r := next(t, c)
		if r.Method != "REPORT" || r.Status == nil || r.Status.Code != 408 || r.Responded {
			t.Fatalf("REPORT received %+v", r)
		}
	})
	t.Run("auto report off, failure-report no, big body hashed", func(t *testing.T) {
		c, p := newPair(t, Options{MaxBodyKeep: 8, DisableAutoReport: true})
		big := strings.Repeat("0123456789", 100)
		send(p, "tid00003", "Byte-Range: 1-1000/1000\r\nSuccess-Report: yes\r\nFailure-Report: no\r\n", big, '$')
		r := next(t, c)
		sum := sha256.Sum256([]byte(big))
		if r.Body != nil || r.BodyHash == nil || *r.BodyHash != sum || r.BodySize != 1000 || r.Sum() != sum || r.Responded {
			t.Fatalf("received %+v", r)
		}
		// Neither a response nor a REPORT was written: the next frame the
		// peer reads is the answer to this NICKNAME, which the test sends.
		p.writeRaw("MSRP nick0001 NICKNAME\r\nTo-Path: " + testURI + "\r\nFrom-Path: " + from + "\r\nUse-Nickname: \"bob\"\r\n-------nick0001$\r\n")
		n := next(t, c)
		if n.Method != "NICKNAME" || n.Responded {
			t.Fatalf("NICKNAME %+v", n)
		}
		responded := async(func() error { return c.Respond(n, 200, "OK") })
		if f := p.read(); f.tid != "nick0001" || f.code != 200 || f.get("To-Path") != from {
			t.Fatalf("NICKNAME response %+v: want 200 to the full From-Path", f)
		}
		if err := await(t, responded); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("malformed frame closes", func(t *testing.T) {
		c, p := newPair(t, Options{})
		p.writeRaw("HTTP/1.1 200 OK\r\n\r\n")
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("reader did not stop")
		}
		if !errors.Is(c.Err(), msrp.ErrStartLine) {
			t.Fatalf("Err = %v, want msrp.ErrStartLine", c.Err())
		}
		if _, ok := <-c.Incoming(); ok {
			t.Fatal("Incoming not closed")
		}
	})
}

func TestDialLoopback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := async(func() net.Conn { conn, _ := l.Accept(); return conn })
	c, err := Dial(context.Background(), l.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := await(t, accepted)
	defer conn.Close()
	u, err := msrp.ParseURI(c.LocalURI())
	if err != nil || u.Host != "127.0.0.1" || u.Port != conn.RemoteAddr().(*net.TCPAddr).Port || len(u.SessionID) < 10 || u.Transport != "tcp" || u.Secure {
		t.Fatalf("LocalURI %q (%v)", c.LocalURI(), err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
