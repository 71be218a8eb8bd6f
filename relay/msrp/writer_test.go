package msrp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// message is a frame in plain values, for writing and comparing.
type message struct {
	tid     string
	method  string
	status  int
	comment string
	headers []Header
	hasBody bool
	body    []byte
	flag    byte
}

func writeMessage(w *Writer, m *message) error {
	var err error
	if m.method != "" {
		err = w.StartRequest([]byte(m.tid), m.method)
	} else {
		err = w.StartResponse([]byte(m.tid), m.status, m.comment)
	}
	if err != nil {
		return err
	}
	for _, h := range m.headers {
		w.HeaderString(string(h.Name), string(h.Value))
	}
	if m.hasBody {
		if _, err := w.Body().Write(m.body); err != nil {
			_ = w.End(FlagAbort)
			return err
		}
	}
	return w.End(m.flag)
}

func readMessage(r *Reader) (*message, error) {
	f, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	m := &message{tid: string(f.TransactID), method: string(f.Method), status: f.StatusCode,
		comment: string(f.Comment), hasBody: f.HasBody()}
	for _, h := range f.Headers {
		m.headers = append(m.headers, Header{Name: bytes.Clone(h.Name), Value: bytes.Clone(h.Value)})
	}
	if m.body, err = io.ReadAll(f.Body()); err != nil {
		return nil, err
	}
	m.flag = f.Flag()
	return m, nil
}

func (m *message) equal(o *message) bool {
	if m.tid != o.tid || m.method != o.method || m.status != o.status || m.comment != o.comment ||
		m.hasBody != o.hasBody || !bytes.Equal(m.body, o.body) || m.flag != o.flag || len(m.headers) != len(o.headers) {
		return false
	}
	for i := range m.headers {
		if !bytes.Equal(m.headers[i].Name, o.headers[i].Name) || !bytes.Equal(m.headers[i].Value, o.headers[i].Value) {
			return false
		}
	}
	return true
}

func TestWriterRoundTrip(t *testing.T) {
	hdr := func(n, v string) Header { return Header{Name: []byte(n), Value: []byte(v)} }
	msgs := []*message{
		{tid: "a786hjs2", method: "SEND", headers: []Header{hdr(HdrToPath, "msrp://b.example.com:1/s;tcp"), hdr(HdrFromPath, "msrp://a.example.com:2/t;tcp"),
			hdr(HdrMessageID, "87652491"), hdr(HdrByteRange, "1-25/25"), hdr(HdrContentType, "text/plain")},
			hasBody: true, body: []byte("Hey Bob, are you there?"), flag: FlagEnd},
		{tid: "a786hjs2", status: 200, comment: "OK", headers: []Header{hdr(HdrToPath, "msrp://a.example.com:2/t;tcp")}, flag: FlagEnd},
		{tid: "abcd", status: 481, flag: FlagMore},
		{tid: "dkei38sd", method: "SEND", hasBody: true, body: []byte{}, flag: FlagEnd},
		{tid: "dkei38se", method: "SEND", hasBody: true, body: []byte("\r\n-------dkei38sd$\r\n\r\n-------\r\n"), flag: FlagAbort},
		{tid: "dkei38sf", method: "NICKNAME", headers: []Header{hdr("Use-Nickname", "\"Alice\"")}, flag: FlagEnd},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range msgs {
		if err := writeMessage(w, m); err != nil {
			t.Fatalf("write %s: %v", m.tid, err)
		}
	}
	r := NewReader(bufio.NewReader(&buf), Limits{})
	for i, want := range msgs {
		got, err := readMessage(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !got.equal(want) {
			t.Fatalf("frame %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("trailing: %v", err)
	}
}

func TestWriterRefusesOwnEndLine(t *testing.T) {
	tests := []struct {
		name   string
		pieces []string
	}{
		{"in one write", []string{"abc\r\n-------tid1$\r\nxyz"}},
		{"without flag", []string{"abc\r\n-------tid1"}},
		{"split across writes", []string{"abc\r\n---", "----tid", "1$\r\n"}},
		{"at body start", []string{"-------tid1$\r\n"}},
		{"split at body start", []string{"---", "----tid1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			if err := w.StartRequest([]byte("tid1"), "SEND"); err != nil {
				t.Fatal(err)
			}
			body := w.Body()
			var err error
			for _, p := range tc.pieces {
				if _, err = body.Write([]byte(p)); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrEndLineInBody) {
				t.Fatalf("err %v, want ErrEndLineInBody", err)
			}
			if err := w.End(FlagAbort); err != nil {
				t.Fatal(err)
			}
			// What was sent is still one well-framed, aborted frame.
			r := NewReader(bufio.NewReader(&buf), Limits{})
			m, err := readMessage(r)
			if err != nil || m.flag != FlagAbort {
				t.Fatalf("aborted frame reads as %+v, %v", m, err)
			}
			if _, err := r.ReadFrame(); err != io.EOF {
				t.Fatalf("trailing: %v", err)
			}
		})
	}
}

func TestTransactIDFor(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tid := TransactIDFor(nil, []byte("body"))
		if !ValidIdent(tid) || len(tid) != TransactIDLen || seen[string(tid)] {
			t.Fatalf("bad or repeated transact-id %q", tid)
		}
		seen[string(tid)] = true
	}
	// A Writer with no transact-id picks one.
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.StartRequest(nil, "SEND"); err != nil || !ValidIdent(w.TransactID()) {
		t.Fatalf("StartRequest(nil): %v, tid %q", err, w.TransactID())
	}
	if err := w.End(FlagEnd); err != nil || !strings.HasPrefix(buf.String(), "MSRP "+string(w.TransactID())+" SEND\r\n") {
		t.Fatalf("wrote %q, %v", buf.String(), err)
	}
}

func TestWriterState(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.End(FlagEnd); !errors.Is(err, ErrWriterState) {
		t.Fatalf("End before Start: %v", err)
	}
	if err := w.StartResponse([]byte("abcd"), 42, ""); !errors.Is(err, ErrWriterState) {
		t.Fatalf("2-digit status: %v", err)
	}
	_ = w.StartRequest([]byte("abcd"), "SEND")
	if err := w.StartRequest([]byte("abcd"), "SEND"); !errors.Is(err, ErrWriterState) {
		t.Fatalf("Start twice: %v", err)
	}
	if err := w.End('x'); !errors.Is(err, ErrWriterState) {
		t.Fatalf("bad flag: %v", err)
	}
	w.Body()
	w.HeaderString("X", "y") // after the body: an error at End
	if err := w.End(FlagEnd); !errors.Is(err, ErrWriterState) {
		t.Fatalf("header after body: %v", err)
	}
}

// EndBuffered leaves frames in the buffer, in order, until a Flush; a
// Capture counts and keeps the bytes written whether or not they left.
func TestWriterEndBufferedCapture(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(bufio.NewWriterSize(&out, 4096))
	w.Capture(make([]byte, 0, 64), 10)
	for _, tid := range []string{"t1", "t2"} {
		if err := w.StartRequest([]byte(tid), "SEND"); err != nil {
			t.Fatal(err)
		}
		w.HeaderString(HdrMessageID, "m")
		_, _ = w.Body().Write([]byte("hi"))
		if err := w.EndBuffered(FlagEnd); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("EndBuffered wrote %q before the flush", out.String())
	}
	capd, n := w.Captured()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "MSRP t1 SEND\r\nMessage-ID: m\r\n\r\nhi\r\n-------t1$\r\nMSRP t2 SEND\r\nMessage-ID: m\r\n\r\nhi\r\n-------t2$\r\n"
	if out.String() != want || n != int64(len(want)) || string(capd) != want[:10] {
		t.Fatalf("wrote %q (%d counted, %q kept), want %q", out.String(), n, capd, want)
	}
}
