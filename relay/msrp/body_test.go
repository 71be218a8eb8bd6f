package msrp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// chunkedReader hands out in at most n bytes per Read.
type chunkedReader struct {
	r io.Reader
	n int
}

func (c *chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestBodyEndLineAtEveryCut moves decoys of the end-line (the boundary of
// the same transact-id with no valid flag or no CRLF, and the boundary of a
// longer transact-id it is a prefix of) and the real end-line across every
// offset of the Reader's 512-byte buffer and of the reads feeding it: the
// body must come out whole, ended only at its own end-line (RFC 4975 §7.1).
func TestBodyEndLineAtEveryCut(t *testing.T) {
	decoys := []string{
		"\r\n-------tid1x\r\n", "\r\n-------tid1$X\r\n", "\r\n-------tid1$\r", "\r\n-------tid12$\r\n",
		"\r\n-------tid", "\r\n------", "\r\r\n-------tid1+\n", "-------tid1$\r\n",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, d := range decoys {
		for lead := 0; lead < 2*minBufSize; lead += 7 {
			body := make([]byte, lead, lead+len(d)+40)
			for i := range body {
				body[i] = byte(rng.IntN(256))
				if body[i] == '\r' {
					body[i] = 'r' // no accidental end-line
				}
			}
			if lead == 0 && d[0] == '-' {
				continue // the lenient empty body (Body.peek): an end-line
			}
			body = append(body, d...)
			body = append(body, bytes.Repeat([]byte{'q'}, lead%40)...)
			in := append(append([]byte("MSRP tid1 SEND\r\n\r\n"), body...), "\r\n-------tid1+\r\nMSRP tid2 SEND\r\n\r\n-------tid2$\r\n"...)
			for _, n := range []int{1, 13, 509, 4096} {
				r := NewReader(bufio.NewReaderSize(&chunkedReader{r: bytes.NewReader(in), n: n}, minBufSize), Limits{})
				f, err := r.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				if _, err := f.Body().WriteTo(&got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), body) || f.Flag() != '+' {
					t.Fatalf("decoy %q lead %d reads of %d: body %d bytes (want %d), flag %q", d, lead, n, got.Len(), len(body), f.Flag())
				}
				f, err = r.ReadFrame()
				if err != nil || string(f.TransactID) != "tid2" {
					t.Fatalf("decoy %q lead %d reads of %d: next frame %v", d, lead, n, err)
				}
			}
		}
	}
}

// BenchmarkReadChunk64KiBRandom reads 64 KiB chunks of random bytes (a
// file transfer): CR and '-' bytes occur as often as any other.
func BenchmarkReadChunk64KiBRandom(b *testing.B) {
	body := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range body {
		body[i] = byte(rng.IntN(256))
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.StartRequest([]byte("a786hjs2x9"), "SEND")
	w.HeaderString(HdrToPath, "msrp://relay.example.com:2855/kjhd37s2s20w2a;tcp")
	w.HeaderString(HdrFromPath, "msrp://alice.example.com:7654/jshA7weztas;tcp")
	_, _ = w.Body().Write(body)
	_ = w.End(FlagEnd)
	frame := buf.Bytes()
	r := NewReader(bufio.NewReaderSize(&cycleReader{b: frame}, 32<<10), Limits{})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Body().WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
