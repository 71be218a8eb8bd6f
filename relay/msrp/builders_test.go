package msrp

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

func TestBuilders(t *testing.T) {
	tid := []byte("a786hjs2")
	to, from := []byte("msrp://a.example:7654/s1;tcp"), []byte("msrp://r.example:2855/s2;tcp")
	tests := []struct {
		name  string
		build func(dst []byte) []byte
		want  string
	}{
		{"request line", func(b []byte) []byte { return AppendRequestLine(b, tid, "SEND") },
			"MSRP a786hjs2 SEND\r\n"},
		{"request line, string tid, bytes method", func(b []byte) []byte { return AppendRequestLine(b, "x1", []byte("NICKNAME")) },
			"MSRP x1 NICKNAME\r\n"},
		{"response line", func(b []byte) []byte { return AppendResponseLine(b, tid, 200, "OK") },
			"MSRP a786hjs2 200 OK\r\n"},
		{"response line without comment", func(b []byte) []byte { return AppendResponseLine(b, tid, 481, "") },
			"MSRP a786hjs2 481\r\n"},
		{"response line, bytes comment", func(b []byte) []byte { return AppendResponseLine(b, "t", 425, []byte("Nickname in use")) },
			"MSRP t 425 Nickname in use\r\n"},
		{"header", func(b []byte) []byte { return AppendHeader(b, HdrToPath, to) },
			"To-Path: msrp://a.example:7654/s1;tcp\r\n"},
		{"header, bytes name, string value", func(b []byte) []byte { return AppendHeader(b, []byte("Expires"), "600") },
			"Expires: 600\r\n"},
		{"path header, no prefix", func(b []byte) []byte { return AppendPathHeader(b, HdrFromPath, nil, to) },
			"From-Path: msrp://a.example:7654/s1;tcp\r\n"},
		{"path header, two URIs in front", func(b []byte) []byte {
			return AppendPathHeader(b, []byte("From-Path"), [][]byte{[]byte("R2"), []byte("R1")}, []byte("A"))
		}, "From-Path: R2 R1 A\r\n"},
		{"status header", func(b []byte) []byte { return AppendStatusHeader(b, Status{Code: 408, Reason: "Request Timeout"}) },
			"Status: 000 408 Request Timeout\r\n"},
		{"end-line", func(b []byte) []byte { return AppendEndLine(b, tid, FlagMore) },
			"-------a786hjs2+\r\n"},
		{"response", func(b []byte) []byte { return AppendResponse(b, tid, 200, "OK", to, from) },
			"MSRP a786hjs2 200 OK\r\nTo-Path: msrp://a.example:7654/s1;tcp\r\nFrom-Path: msrp://r.example:2855/s2;tcp\r\n-------a786hjs2$\r\n"},
		{"response with extra header fields", func(b []byte) []byte {
			return AppendResponse(b, "t9a7", 423, "Interval Out-of-Bounds", to, from,
				Header{Name: []byte(HdrMinExpires), Value: []byte("60")}, Header{Name: []byte("X-A"), Value: []byte("b")})
		}, "MSRP t9a7 423 Interval Out-of-Bounds\r\nTo-Path: msrp://a.example:7654/s1;tcp\r\nFrom-Path: msrp://r.example:2855/s2;tcp\r\n" +
			"Min-Expires: 60\r\nX-A: b\r\n-------t9a7$\r\n"},
		{"report", func(b []byte) []byte {
			return AppendReport(b, tid, to, from, []byte("m1"), []byte("1-10/10"), Status{Code: 200, Reason: "OK"})
		}, "MSRP a786hjs2 REPORT\r\nTo-Path: msrp://a.example:7654/s1;tcp\r\nFrom-Path: msrp://r.example:2855/s2;tcp\r\n" +
			"Message-ID: m1\r\nByte-Range: 1-10/10\r\nStatus: 000 200 OK\r\n-------a786hjs2$\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Appends after what dst holds, leaving it as it was.
			got := tc.build([]byte("prefix|"))
			if string(got) != "prefix|"+tc.want {
				t.Fatalf("got %q\nwant %q", got, "prefix|"+tc.want)
			}
			// Whole frames read back as the frame they were built as.
			if bytes.HasSuffix(got, []byte("$\r\n")) && bytes.HasPrefix(got[7:], []byte("MSRP ")) {
				f, err := NewReader(bufio.NewReader(bytes.NewReader(got[7:])), Limits{}).ReadFrame()
				if err != nil {
					t.Fatalf("built frame does not read back: %v", err)
				}
				if f.Flag() != FlagEnd && f.HasBody() {
					t.Fatalf("flag %q", f.Flag())
				}
			}
			// A buffer with room: no allocation.
			buf := make([]byte, 0, 1024)
			if n := testing.AllocsPerRun(100, func() { buf = tc.build(buf[:0]) }); n != 0 {
				t.Fatalf("%v allocations into a buffer with room", n)
			}
		})
	}
}

// RawHeaders takes whole CRLF-ended lines only; anything else is refused
// (End reports ErrRawHeaders) and nothing of it reaches the wire.
func TestRawHeadersWholeLinesOnly(t *testing.T) {
	tests := []struct {
		name  string
		lines string
		ok    bool
	}{
		{"one line", "To-Path: a\r\n", true},
		{"two lines", "To-Path: a\r\nFrom-Path: b\r\n", true},
		{"nothing", "", true},
		{"a name alone", "To-Path", false},
		{"colon and space", ": ", false},
		{"line without CRLF", "To-Path: a", false},
		{"LF only", "To-Path: a\n", false},
		{"bare CRLF: the blank line is the Writer's", "\r\n", false},
		{"blank line inside", "To-Path: a\r\n\r\nX: y\r\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewWriter(&out)
			_ = w.StartRequest([]byte("t1"), "SEND")
			w.RawHeaders([]byte(tc.lines))
			err := w.End(FlagEnd)
			if tc.ok {
				if err != nil || out.String() != "MSRP t1 SEND\r\n"+tc.lines+"-------t1$\r\n" {
					t.Fatalf("End: %v, wrote %q", err, out.String())
				}
				return
			}
			if !errors.Is(err, ErrRawHeaders) {
				t.Fatalf("End: %v, want ErrRawHeaders", err)
			}
			if bytes.Contains(out.Bytes(), []byte(tc.lines)) && tc.lines != "\r\n" {
				t.Fatalf("refused bytes written: %q", out.String())
			}
		})
	}
}
