package msrp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// avoidRun reads the first frame of in with Body.Avoid(avoid) through a
// bufio.Reader of size over src, and returns the body, the offset in it
// of the piece that Avoided first reported (-1: never), the flag, and the
// error of the body or of the next ReadFrame (io.EOF: none).
func avoidRun(t *testing.T, src io.Reader, size int, avoid []byte) (body []byte, at int, flag byte, err error) {
	t.Helper()
	r := NewReader(bufio.NewReaderSize(src, size), Limits{MinTransactIDLen: 1})
	f, err := r.ReadFrame()
	if err != nil {
		return nil, -1, 0, err
	}
	b := f.Body()
	b.Avoid(avoid)
	at = -1
	for {
		p, err := b.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return body, at, 0, err
		}
		if b.Avoided() && at < 0 {
			at = len(body)
		}
		body = append(body, p...)
	}
	flag = f.Flag() // before the next ReadFrame reuses f
	_, err = r.ReadFrame()
	return body, at, flag, err
}

// avoidWant is where the boundary CRLF "-------" avoid first occurs in
// body, the blank line's CRLF counted (-1: nowhere): the first piece
// that may not be written under avoid starts there.
func avoidWant(body, avoid []byte) int {
	pat := append([]byte("\r\n-------"), avoid...)
	i := bytes.Index(append([]byte("\r\n"), body...), pat)
	return max(i-2, min(i, 0))
}

// checkAvoid reads in through a 4 KiB buffer without Avoid (the
// reference), then with Avoid through a 4 KiB buffer and through a
// minimal one fed in irregular chunks: the body, flag and next frame must
// not change, and Avoided must turn true exactly at the first avoided
// boundary (RFC 4975 §7.1), as the Writer's own check would refuse it.
func checkAvoid(t *testing.T, in, avoid []byte) {
	t.Helper()
	ref, _, refFlag, refErr := avoidRun(t, bytes.NewReader(in), 4096, nil)
	want := avoidWant(ref, avoid)
	for _, run := range []struct {
		src  io.Reader
		size int
	}{{bytes.NewReader(in), 4096}, {&chunkReader{r: bytes.NewReader(in)}, minBufSize}, {oneByteReader{bytes.NewReader(in)}, minBufSize}} {
		got, at, flag, err := avoidRun(t, run.src, run.size, avoid)
		if !bytes.Equal(got, ref) || flag != refFlag || errString(err) != errString(refErr) {
			t.Fatalf("avoid %q changes the frame of %q: body %q flag %q err %v, want %q %q %v", avoid, in, got, flag, err, ref, refFlag, refErr)
		}
		if refErr == nil || errors.Is(refErr, io.EOF) {
			if at != want {
				t.Fatalf("%q avoiding %q: avoided at %d, want %d", in, avoid, at, want)
			}
		}
	}
	// The Writer refuses exactly such a body.
	if refErr == nil || errors.Is(refErr, io.EOF) {
		var out bytes.Buffer
		w := NewWriter(&out)
		_ = w.StartRequest(avoid, "SEND")
		_, werr := w.Body().Write(ref)
		if (werr != nil) != (want >= 0) {
			t.Fatalf("%q avoiding %q: Writer says %v, Body says %d", in, avoid, werr, want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestBodyAvoidAtEveryCut moves the avoided boundary, decoys of it (a
// prefix of it, a longer transact-id it is a prefix of, the own end-line's
// decoys) and the end-line across every offset of the Reader's buffer.
func TestBodyAvoidAtEveryCut(t *testing.T) {
	const avoid = "AvoidTid12345678"
	pieces := []string{
		"\r\n-------" + avoid, "\r\n-------" + avoid + "$\r\n", "\r\n-------" + avoid[:9], "\r\n-------" + avoid + "x",
		"-------" + avoid, "\r\n-------tid1x", "\r\n-------", "\r\r\n-------" + avoid,
	}
	for _, d := range pieces {
		for lead := 0; lead < minBufSize+40; lead += 5 {
			body := append(bytes.Repeat([]byte{'a'}, lead), d...)
			body = append(body, bytes.Repeat([]byte{'q'}, lead%23)...)
			in := append(append([]byte("MSRP tid1 SEND\r\n\r\n"), body...), "\r\n-------tid1+\r\nMSRP tid2 SEND\r\n\r\n-------tid2$\r\n"...)
			checkAvoid(t, in, []byte(avoid))
		}
	}
}

// TestBodyAvoidShortEndLine: a frame whose end-line (a one-letter
// transact-id) is shorter than the avoided boundary, right after a prefix
// of that boundary, ends there: the Body must not wait for bytes past it.
func TestBodyAvoidShortEndLine(t *testing.T) {
	for _, in := range []string{
		"MSRP t SEND\r\n\r\n-------A\r\n-------t$\r\n",
		"MSRP t SEND\r\n\r\nx\r\n-------A\r\n-------t$\r\n",
		"MSRP t SEND\r\n\r\n-------\r\n-------t$\r\n",
	} {
		// A reader that fails the test when read past the frame.
		src := io.MultiReader(bytes.NewReader([]byte(in)), failReader{t})
		got, at, flag, err := avoidRun(t, oneByteReader{src}, minBufSize, []byte("ABCDEFGHIJKLMNOP"))
		_ = err // the next ReadFrame reads failReader
		if flag != '$' || at != -1 || bytes.Contains(got, []byte("-------t$")) {
			t.Fatalf("%q: body %q avoided at %d flag %q", in, got, at, flag)
		}
	}
}

// TestBodyAvoidTruncatedStart: a stream that ends right after the blank
// line, inside what began like the lenient empty-body end-line or the
// avoided boundary, hands out the same data before the error whatever the
// buffer's size (found by FuzzBodyAvoid: "-0" was lost when read byte by
// byte, as "-" still looked like "-------0$").
func TestBodyAvoidTruncatedStart(t *testing.T) {
	for _, c := range []struct{ in, avoid string }{
		{"MSRP 0 A\r\n\r\n-0", "0"},
		{"MSRP 0 A\r\n\r\n-0", "x"},
		{"MSRP 0 A\r\n\r\n---", "x"},
		{"MSRP 0 A\r\n\r\n-------", "12"},
		{"MSRP 0 A\r\n\r\n-------1", "12"},
		{"MSRP 0 A\r\n\r\n-------0", "12"},
		{"MSRP 0 A\r\n\r\n-------0$", "0"},
		{"MSRP 0 A\r\n\r\n-------0$\r", "1"},
		{"MSRP 0 A\r\n\r\n-------0$\r\n", "1"},
		{"MSRP 0 A\r\n\r\n-------12\r\n", "12"},
		// A prefix of the avoided boundary cut by the stream's end, read in
		// chunks: bufio moved the bytes under a stale slice ("-----t-t").
		{"MSRP 00000 A\r\n\r\n-------t", "t0"},
		// The same inside the body: a prefix of the avoided boundary, not
		// of the own end-line, is data when the stream ends in it.
		{"MSRP 0 A\r\n\r\n\r\n-------1", "10"},
		{"MSRP 0 A\r\n\r\nab\r\n-------1", "10"},
		{"MSRP 0 A\r\n\r\nab\r\n-------0", "00"},
		{"MSRP 0 A\r\n\r\nab\r\n---", "10"},
	} {
		checkAvoid(t, []byte(c.in), []byte(c.avoid))
	}
}

type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) { return 0, io.EOF }

// FuzzBodyAvoid: Avoid changes nothing of what a Body reads, whatever the
// buffer boundaries, and reports the avoided boundary where it first is.
func FuzzBodyAvoid(f *testing.F) {
	for _, s := range fuzzReaderSeeds {
		f.Add([]byte(s), []byte("tid2"))
	}
	f.Add([]byte("MSRP tid1 SEND\r\n\r\n-------tid2\r\n-------tid1$\r\n"), []byte("tid2"))
	f.Add([]byte("MSRP tid1 SEND\r\n\r\nab\r\n-------tid\r\n-------tid1$\r\n"), []byte("tid1x"))
	f.Add([]byte("MSRP abc SEND\r\n\r\n\r\n-------abcdef\r\n-------abc$\r\n"), []byte("abcd"))
	f.Add([]byte("MSRP 0 A\r\n\r\n-0"), []byte("0"))
	f.Fuzz(func(t *testing.T, in, avoid []byte) {
		if len(avoid) == 0 || len(avoid) > 255 || bytes.ContainsAny(avoid, "\r\n") {
			return
		}
		checkAvoid(t, in, avoid)
	})
}

// benchForward reads 64 KiB chunks of random bytes and writes their
// bodies under another transact-id, as a relay forwards them: checked by
// the Writer (Body) or by the one scan of the Reader (Avoid, BodyScanned).
func benchForward(b *testing.B, scanned bool) {
	body := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range body {
		body[i] = byte(rng.IntN(256))
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.StartRequest([]byte("a786hjs2x9"), "SEND")
	w.HeaderString(HdrToPath, "msrp://relay.example.com:2855/kjhd37s2s20w2a;tcp")
	_, _ = w.Body().Write(body)
	_ = w.End(FlagEnd)
	frame := buf.Bytes()
	r := NewReader(bufio.NewReaderSize(&cycleReader{b: frame}, 64<<10), Limits{})
	out := NewWriter(bufio.NewWriterSize(io.Discard, 32<<10))
	tid := []byte("Qx8fK2pLm3Zr7TwA")
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		_ = out.StartRequest(tid, "SEND")
		bd := f.Body()
		var bw io.Writer
		if scanned {
			bd.Avoid(tid)
			bw = out.BodyScanned()
		} else {
			bw = out.Body()
		}
		for {
			p, err := bd.Next()
			if err == io.EOF {
				break
			}
			if err != nil || bd.Avoided() {
				b.Fatal(err)
			}
			if _, err := bw.Write(p); err != nil {
				b.Fatal(err)
			}
		}
		if err := out.End(FlagEnd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkForwardChunk64KiBChecked(b *testing.B) { benchForward(b, false) }
func BenchmarkForwardChunk64KiBScanned(b *testing.B) { benchForward(b, true) }
