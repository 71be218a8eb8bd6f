package msrp

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"testing"
)

// cycleReader repeats one byte string forever without allocating.
type cycleReader struct {
	b   []byte
	off int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], c.b[c.off:])
		n += k
		c.off = (c.off + k) % len(c.b)
	}
	return n, nil
}

func benchFrame(bodyLen int) (frame []byte, body []byte) {
	body = bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog.\r\n"), bodyLen/46+1)[:bodyLen]
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.StartRequest([]byte("a786hjs2x9"), "SEND")
	w.HeaderString(HdrToPath, "msrp://relay.example.com:2855/kjhd37s2s20w2a;tcp msrp://bob.example.com:7777/98cjs;tcp")
	w.HeaderString(HdrFromPath, "msrp://alice.example.com:7654/jshA7weztas;tcp")
	w.HeaderString(HdrMessageID, "87652491")
	w.HeaderString(HdrByteRange, "1-"+itoa(bodyLen)+"/"+itoa(bodyLen))
	w.HeaderString(HdrSuccessReport, "yes")
	w.HeaderString(HdrContentType, "text/plain")
	_, _ = w.Body().Write(body)
	_ = w.End(FlagEnd)
	return buf.Bytes(), body
}

func itoa(n int) string { return strconv.Itoa(n) }

func benchRead(b *testing.B, bodyLen int) {
	frame, _ := benchFrame(bodyLen)
	r := NewReader(bufio.NewReaderSize(&cycleReader{b: frame}, 32<<10), Limits{})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f, err := r.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, f.Body()); err != nil {
			b.Fatal(err)
		}
		if f.Flag() != FlagEnd {
			b.Fatal("flag")
		}
	}
}

func BenchmarkReadSEND200(b *testing.B)    { benchRead(b, 200) }
func BenchmarkReadChunk64KiB(b *testing.B) { benchRead(b, 64<<10) }

func benchWrite(b *testing.B, bodyLen int) {
	frame, body := benchFrame(bodyLen)
	w := NewWriter(bufio.NewWriterSize(io.Discard, 32<<10))
	tid := []byte("a786hjs2x9")
	to := []byte("msrp://relay.example.com:2855/kjhd37s2s20w2a;tcp msrp://bob.example.com:7777/98cjs;tcp")
	from := []byte("msrp://alice.example.com:7654/jshA7weztas;tcp")
	br := []byte("1-" + itoa(bodyLen) + "/" + itoa(bodyLen))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := w.StartRequest(tid, "SEND"); err != nil {
			b.Fatal(err)
		}
		w.Header(HdrToPath, to)
		w.Header(HdrFromPath, from)
		w.HeaderString(HdrMessageID, "87652491")
		w.Header(HdrByteRange, br)
		w.HeaderString(HdrSuccessReport, "yes")
		w.HeaderString(HdrContentType, "text/plain")
		if _, err := w.Body().Write(body); err != nil {
			b.Fatal(err)
		}
		if err := w.End(FlagEnd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteSEND200(b *testing.B)    { benchWrite(b, 200) }
func BenchmarkWriteChunk64KiB(b *testing.B) { benchWrite(b, 64<<10) }

func BenchmarkParseURI(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseURI("msrp://relay.example.com:2855/kjhd37s2s20w2a;tcp"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseByteRange(b *testing.B) {
	v := []byte("1-65536/1048576")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseByteRange(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendTransactID(b *testing.B) {
	var buf [TransactIDLen]byte
	b.ReportAllocs()
	for b.Loop() {
		AppendTransactID(buf[:0])
	}
}
