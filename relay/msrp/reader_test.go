package msrp

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// crlf turns "\n" line endings of a readable literal into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func newTestReader(s string) *Reader {
	return NewReader(bufio.NewReader(strings.NewReader(s)), Limits{})
}

type readResult struct {
	tid, method string
	status      int
	comment     string
	headers     []string // "Name: Value"
	hasBody     bool
	body        string
	flag        byte
}

func readAll(t *testing.T, r *Reader) ([]readResult, error) {
	t.Helper()
	var out []readResult
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return out, err
		}
		res := readResult{
			tid: string(f.TransactID), method: string(f.Method),
			status: f.StatusCode, comment: string(f.Comment), hasBody: f.HasBody(),
		}
		for _, h := range f.Headers {
			res.headers = append(res.headers, string(h.Name)+": "+string(h.Value))
		}
		b, err := io.ReadAll(f.Body())
		if err != nil {
			return out, err
		}
		res.body = string(b)
		res.flag = f.Flag()
		out = append(out, res)
	}
}

// tid32 is a transact-id of the RFC 4975 §9 maximum length, every kind of
// ident-char in it.
const tid32 = "A1b2.c-d+e%f=g3h4i5j6k7l8m9n0o1Z"

func TestReadFrameGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []readResult
	}{
		{
			name: "RFC 4975 §4 SEND",
			in: crlf("MSRP a786hjs2 SEND\nTo-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\n" +
				"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\nMessage-ID: 87652491\n" +
				"Byte-Range: 1-25/25\nContent-Type: text/plain\n\nHey Bob, are you there?\n-------a786hjs2$\n"),
			want: []readResult{{
				tid: "a786hjs2", method: "SEND",
				headers: []string{
					"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
					"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
					"Message-ID: 87652491", "Byte-Range: 1-25/25", "Content-Type: text/plain",
				},
				hasBody: true, body: "Hey Bob, are you there?", flag: '$',
			}},
		},
		{
			name: "response without body, then request",
			in: crlf("MSRP a786hjs2 200 OK\nTo-Path: msrp://a.example.com:7654/x;tcp\nFrom-Path: msrp://b.example.com:12763/y;tcp\n-------a786hjs2$\n" +
				"MSRP dkei38sd REPORT\nTo-Path: msrp://a.example.com:7654/x;tcp\n-------dkei38sd$\n"),
			want: []readResult{
				{tid: "a786hjs2", status: 200, comment: "OK", headers: []string{"To-Path: msrp://a.example.com:7654/x;tcp", "From-Path: msrp://b.example.com:12763/y;tcp"}, flag: '$'},
				{tid: "dkei38sd", method: "REPORT", headers: []string{"To-Path: msrp://a.example.com:7654/x;tcp"}, flag: '$'},
			},
		},
		{
			name: "response without comment, continuation flags",
			in: crlf("MSRP abcd 481\nTo-Path: msrp://a:1/x;tcp\n-------abcd+\n") +
				crlf("MSRP abce SEND\nContent-Type: text/plain\n\npart\n-------abce#\n"),
			want: []readResult{
				{tid: "abcd", status: 481, headers: []string{"To-Path: msrp://a:1/x;tcp"}, flag: '+'},
				{tid: "abce", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true, body: "part", flag: '#'},
			},
		},
		{
			name: "body containing CRLF + hyphens that are not this frame's end-line (OpenSIPS closes the connection)",
			in: "MSRP tid1 SEND\r\nContent-Type: text/plain\r\n\r\n" +
				"a\r\n-------\r\nb\r\n-------tid2$\r\nc\r\n-------tid1\r\n-------tid1x$\r\n-------tid1$x\r\n--------tid1$\r\nend" +
				"\r\n-------tid1$\r\n",
			want: []readResult{{
				tid: "tid1", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true,
				body: "a\r\n-------\r\nb\r\n-------tid2$\r\nc\r\n-------tid1\r\n-------tid1x$\r\n-------tid1$x\r\n--------tid1$\r\nend",
				flag: '$',
			}},
		},
		{
			// RFC 4975 §7.1: only a flag of "$", "+" or "#" ends the frame.
			name: "this frame's end-line with an invalid flag byte is body data",
			in: "MSRP tid1 SEND\r\nContent-Type: text/plain\r\n\r\n" +
				"a\r\n-------tid1!\r\nb\r\n-------tid1 \r\nc\r\n-------tid1-\r\nd" +
				"\r\n-------tid1#\r\n",
			want: []readResult{{
				tid: "tid1", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true,
				body: "a\r\n-------tid1!\r\nb\r\n-------tid1 \r\nc\r\n-------tid1-\r\nd",
				flag: '#',
			}},
		},
		{
			// The same at the start of the body, where the lenient check
			// for an end-line without its leading CRLF runs.
			name: "body starting with this frame's end-line with an invalid flag byte",
			in:   "MSRP tid1 SEND\r\nContent-Type: text/plain\r\n\r\n-------tid1!\r\nx\r\n-------tid1$\r\n",
			want: []readResult{{
				tid: "tid1", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true,
				body: "-------tid1!\r\nx", flag: '$',
			}},
		},
		{
			// RFC 4975 §9: transact-id = ident = ALPHANUM 3*31ident-char,
			// 32 characters at most.
			name: "32-character transact-id (the maximum)",
			in: "MSRP " + tid32 + " SEND\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------" + tid32 + "$\r\n" +
				"MSRP " + tid32 + " 200 OK\r\n-------" + tid32 + "$\r\n",
			want: []readResult{
				{tid: tid32, method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true, body: "hi", flag: '$'},
				{tid: tid32, status: 200, comment: "OK", flag: '$'},
			},
		},
		{
			name: "empty body",
			in:   crlf("MSRP tid1 SEND\nContent-Type: text/plain\n\n\n-------tid1$\n"),
			want: []readResult{{tid: "tid1", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true, flag: '$'}},
		},
		{
			name: "empty body, sender omitted the CRLF before the end-line (lenient)",
			in:   crlf("MSRP tid1 SEND\nContent-Type: text/plain\n\n-------tid1$\nMSRP tid2 NICKNAME\n-------tid2$\n"),
			want: []readResult{
				{tid: "tid1", method: "SEND", headers: []string{"Content-Type: text/plain"}, hasBody: true, flag: '$'},
				{tid: "tid2", method: "NICKNAME", flag: '$'},
			},
		},
		{
			name: "header blanks trimmed, names any case, unknown method",
			in:   crlf("MSRP Ab.-+%=9 FOO\nto-path:msrp://h/s;tcp  \nX-Thing:\t  v a l  \n-------Ab.-+%=9$\n"),
			want: []readResult{{tid: "Ab.-+%=9", method: "FOO", headers: []string{"to-path: msrp://h/s;tcp", "X-Thing: v a l"}, flag: '$'}},
		},
		{
			name: "body is binary and has CRs",
			in:   "MSRP tid1 SEND\r\nContent-Type: application/octet-stream\r\n\r\n\x00\r\r\r\n\xff-\r\n-------tid1$\r\n",
			want: []readResult{{tid: "tid1", method: "SEND", headers: []string{"Content-Type: application/octet-stream"}, hasBody: true, body: "\x00\r\r\r\n\xff-", flag: '$'}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, newTestReader(tc.in))
			if err != io.EOF {
				t.Fatalf("error %v, want io.EOF after the frames", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d frames, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.tid != w.tid || g.method != w.method || g.status != w.status || g.comment != w.comment ||
					g.hasBody != w.hasBody || g.body != w.body || g.flag != w.flag ||
					strings.Join(g.headers, "|") != strings.Join(w.headers, "|") {
					t.Errorf("frame %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

func TestReadFrameMalformed(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	tests := []struct {
		name    string
		in      string
		want    error
		wantTID string
	}{
		{"truncated start line", "MSRP abcd SE", ErrTruncated, ""},
		{"truncated after start line", "MSRP abcd SEND\r\nTo-Path: msrp://a/b;tcp\r\n", ErrTruncated, "abcd"},
		{"truncated body", "MSRP abcd SEND\r\n\r\nhello\r\n-----", ErrTruncated, "abcd"},
		{"truncated end-line", "MSRP abcd SEND\r\n\r\nhello\r\n-------abcd", ErrTruncated, "abcd"},
		{"not MSRP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrStartLine, ""},
		{"lower-case msrp", "msrp abcd SEND\r\n-------abcd$\r\n", ErrStartLine, ""},
		{"garbage before frame", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ErrStartLine, ""},
		{"short start line", "MS\r\n-------abcd$\r\n", ErrStartLine, ""},
		{"no method", "MSRP abcd\r\n-------abcd$\r\n", ErrStartLine, ""},
		{"empty method", "MSRP abcd \r\n-------abcd$\r\n", ErrStartLine, "abcd"},
		{"lower-case method", "MSRP abcd send\r\n-------abcd$\r\n", ErrStartLine, "abcd"},
		{"status 000", "MSRP abcd 000 OK\r\n-------abcd$\r\n", ErrStartLine, "abcd"},
		{"status not 3 digits", "MSRP abcd 2000 OK\r\n-------abcd$\r\n", ErrStartLine, "abcd"},
		{"transact-id too short", "MSRP abc SEND\r\n-------abc$\r\n", ErrTransactID, ""},
		{"transact-id too long", "MSRP " + strings.Repeat("a", 33) + " SEND\r\n", ErrTransactID, ""},
		{"transact-id bad first char", "MSRP .abcd SEND\r\n-------.abcd$\r\n", ErrTransactID, ""},
		{"transact-id bad char", "MSRP ab_cd SEND\r\n-------ab_cd$\r\n", ErrTransactID, ""},
		{"two spaces", "MSRP  abcd SEND\r\n", ErrTransactID, ""},
		{"header without colon", "MSRP abcd SEND\r\nTo-Path msrp://a/b;tcp\r\n-------abcd$\r\n", ErrHeaderSyntax, "abcd"},
		{"header empty name", "MSRP abcd SEND\r\n: x\r\n-------abcd$\r\n", ErrHeaderSyntax, "abcd"},
		{"header name with space", "MSRP abcd SEND\r\nTo Path: x\r\n-------abcd$\r\n", ErrHeaderSyntax, "abcd"},
		{"header value with NUL", "MSRP abcd SEND\r\nX: a\x00b\r\n-------abcd$\r\n", ErrHeaderSyntax, "abcd"},
		{"folded header line", "MSRP abcd SEND\r\nX: a\r\n b\r\n-------abcd$\r\n", ErrHeaderSyntax, "abcd"},
		{"end-line wrong id", "MSRP abcd SEND\r\nX: a\r\n-------abce$\r\n", ErrEndLine, "abcd"},
		{"end-line no flag", "MSRP abcd SEND\r\nX: a\r\n-------abcd\r\n", ErrEndLine, "abcd"},
		{"end-line bad flag", "MSRP abcd SEND\r\nX: a\r\n-------abcd!\r\n", ErrEndLine, "abcd"},
		{"end-line junk after flag", "MSRP abcd SEND\r\nX: a\r\n-------abcd$ \r\n", ErrEndLine, "abcd"},
		{"CR without LF in header", "MSRP abcd SEND\r\nX: a\rb\r\n-------abcd$\r\n", ErrLineEnding, "abcd"},
		{"CR without LF in start line", "MSRP abcd SE\rND\r\n", ErrLineEnding, ""},
		{"LF without CR", "MSRP abcd SEND\nX: a\n-------abcd$\n", ErrLineEnding, ""},
		{"LF without CR in header", "MSRP abcd SEND\r\nX: a\n-------abcd$\r\n", ErrLineEnding, "abcd"},
		{"100 KB header", "MSRP abcd SEND\r\nX: " + long + "\r\n-------abcd$\r\n", ErrHeaderTooLarge, "abcd"},
		{"100 KB start line", "MSRP abcd " + long + "\r\n", ErrHeaderTooLarge, ""},
		{"too many headers", "MSRP abcd SEND\r\n" + strings.Repeat("X: y\r\n", 65) + "-------abcd$\r\n", ErrTooManyHeaders, "abcd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(t, newTestReader(tc.in))
			var fe *FrameError
			if !errors.Is(err, tc.want) || !errors.As(err, &fe) {
				t.Fatalf("error %v, want %v as *FrameError", err, tc.want)
			}
			if fe.TransactID != tc.wantTID {
				t.Errorf("TransactID %q, want %q", fe.TransactID, tc.wantTID)
			}
			if !strings.HasPrefix(err.Error(), "msrp: ") {
				t.Errorf("error text %q lacks the package prefix", err)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantNext string // transact-id of the frame read after recovering
	}{
		{"bad header, no body", crlf("MSRP abcd SEND\nbad header\n-------abcd$\nMSRP next1 SEND\n-------next1$\n"), "next1"},
		{"bad header, with body", crlf("MSRP abcd SEND\nbad header\n\nbody\n-------abcd+\nMSRP next1 SEND\n-------next1$\n"), "next1"},
		{"too many headers", crlf("MSRP abcd SEND\n" + strings.Repeat("X: y\n", 70) + "-------abcd$\nMSRP next1 SEND\n-------next1$\n"), "next1"},
		{"bad method", crlf("MSRP abcd se-nd\n-------abcd$\nMSRP next1 SEND\n-------next1$\n"), "next1"},
		{"header too large", "MSRP abcd SEND\r\nX: " + strings.Repeat("y", 20000) + "\r\n\r\n-------abcd$\r\nMSRP next1 SEND\r\n-------next1$\r\n", "next1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReader(tc.in)
			if _, err := r.ReadFrame(); err == nil {
				t.Fatal("first frame read without error")
			}
			if err := r.Recover(1 << 20); err != nil {
				t.Fatalf("Recover: %v", err)
			}
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("after Recover: %v", err)
			}
			if string(f.TransactID) != tc.wantNext {
				t.Fatalf("next frame %q, want %q", f.TransactID, tc.wantNext)
			}
		})
	}
	// Without a transact-id there is nothing to recover to.
	r := newTestReader("garbage\r\nMSRP next1 SEND\r\n-------next1$\r\n")
	_, err := r.ReadFrame()
	if err2 := r.Recover(1 << 20); err2 == nil || err2 != err {
		t.Fatalf("Recover after untyped garbage = %v, want the original error %v", err2, err)
	}
}

func TestSkipsUnreadBody(t *testing.T) {
	in := crlf("MSRP tid1 SEND\nContent-Type: text/plain\n\n" + strings.Repeat("body ", 2000) + "\n-------tid1+\nMSRP tid2 SEND\n-------tid2$\n")
	r := newTestReader(in)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	f, err := r.ReadFrame()
	if err != nil || string(f.TransactID) != "tid2" {
		t.Fatalf("second frame %v, %v", f, err)
	}
}

// genReader yields n bytes of a repeating pattern without holding them.
type genReader struct {
	n   int64
	pat []byte
	off int
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	for i := range p {
		p[i] = g.pat[g.off]
		g.off = (g.off + 1) % len(g.pat)
	}
	g.n -= int64(len(p))
	return len(p), nil
}

// A 100 MB body streams through with memory bounded by the buffer.
func TestLargeBodyBoundedMemory(t *testing.T) {
	const size = 100 << 20
	pat := []byte("0123456789abcdef\r\n-------tidX$\r\n-------\r")
	mk := func() io.Reader {
		return io.MultiReader(
			strings.NewReader(crlf("MSRP tid1 SEND\nByte-Range: 1-104857600/104857600\nContent-Type: application/octet-stream\n\n")),
			&genReader{n: size, pat: pat},
			strings.NewReader("\r\n-------tid1$\r\n"),
		)
	}
	want := sha256.New()
	if _, err := io.Copy(want, &genReader{n: size, pat: pat}); err != nil {
		t.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewReader(bufio.NewReaderSize(mk(), 32<<10), Limits{})
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, f.Body())
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) || f.Flag() != '$' {
		t.Fatalf("body %d bytes flag %q, content equal %v", n, f.Flag(), bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("reading a 100 MB body allocated %d bytes; want it bounded by the buffer", alloc)
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the frame: %v, want io.EOF", err)
	}
}

// Reading through Read with tiny buffers gives the same body as Next.
func TestBodyReadSmallBuffers(t *testing.T) {
	body := "x\r\n-------tid\r\n-------tid1+y\r\r\n--" + strings.Repeat("z", 5000)
	in := "MSRP tid1 SEND\r\n\r\n" + body + "\r\n-------tid1+\r\n"
	for _, bufSize := range []int{1, 2, 3, 7, 64} {
		r := NewReader(bufio.NewReaderSize(iotestOneByte(strings.NewReader(in)), 16), Limits{})
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, bufSize)
		for {
			n, err := f.Body().Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != body || f.Flag() != '+' {
			t.Fatalf("buf %d: body %q flag %q", bufSize, got, f.Flag())
		}
	}
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func iotestOneByte(r io.Reader) io.Reader { return oneByteReader{r} }

func TestFrameAccessors(t *testing.T) {
	r := newTestReader(crlf("MSRP abcd SEND\nTO-PATH: msrp://a/b;tcp\nX: 1\nx: 2\n-------abcd$\n"))
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if string(f.Get(HdrToPath)) != "msrp://a/b;tcp" || !f.Has("to-path") || f.Has(HdrFromPath) ||
		f.Get(HdrFromPath) != nil || f.Count("X") != 2 || string(f.Get("x")) != "1" || !f.IsRequest() {
		t.Fatalf("accessors wrong on %+v", f)
	}
	if string(f.Raw()) != crlf("MSRP abcd SEND\nTO-PATH: msrp://a/b;tcp\nX: 1\nx: 2\n") {
		t.Fatalf("Raw = %q", f.Raw())
	}
}

func TestFailedHeaderAndMethod(t *testing.T) {
	r := newTestReader(crlf("MSRP abcd SEND\nTo-Path: msrp://relay;tcp\nFrom-Path: msrp://a/s;tcp\nbroken\n-------abcd$\n"))
	if _, err := r.ReadFrame(); !errors.Is(err, ErrHeaderSyntax) {
		t.Fatalf("err %v", err)
	}
	if got := string(r.FailedHeader("from-path")); got != "msrp://a/s;tcp" {
		t.Fatalf("FailedHeader = %q", got)
	}
	if r.FailedHeader("Message-ID") != nil || r.FailedMethod() != "SEND" {
		t.Fatalf("FailedHeader(Message-ID) %q, FailedMethod %q", r.FailedHeader("Message-ID"), r.FailedMethod())
	}
	// A response's failure has no method; a good frame no failed header.
	r = newTestReader(crlf("MSRP abcd 200 OK\nbroken\n-------abcd$\n"))
	_, _ = r.ReadFrame()
	if r.FailedMethod() != "" {
		t.Fatalf("FailedMethod of a response = %q", r.FailedMethod())
	}
	r = newTestReader(crlf("MSRP abcd SEND\nFrom-Path: msrp://a/s;tcp\n-------abcd$\n"))
	if _, err := r.ReadFrame(); err != nil || r.FailedHeader("From-Path") != nil {
		t.Fatal("FailedHeader without a failure")
	}
}
