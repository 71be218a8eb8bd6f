package msrp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// FuzzReader: any input reads without panic; reading with a 16-byte and a
// 4 KiB buffer gives the same frames (the streaming end-line search does
// not depend on where buffer boundaries fall); and every frame read, written
// again by a Writer and read back, is equal.
//
// The small-buffer read gets its input in irregular chunks of 1 to 13 bytes
// (chunkReader), not one byte at a time: one-byte reads made that path about
// ten times as costly per byte as the 4 KiB one, and the fuzzing engine's
// minimization of a new interesting input runs the target O(n²) times (up to
// -fuzzminimizetime, 60 s by default) and reports those executions only when
// it ends: the one-byte path turned that into stalls of seconds up to the
// whole minimization limit with "execs: N (0/sec)". The chunk sizes do not
// depend on the input, so mutations that insert or delete bytes still move
// end-lines across the buffer boundaries at all offsets;
// TestReaderOneByteSeeds keeps the exhaustive one-byte check for the seeds.
func FuzzReader(f *testing.F) {
	for _, b := range rfcFrames(f) {
		f.Add(b)
	}
	for _, b := range fuzzReaderSeeds {
		f.Add([]byte(b))
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		big := compareSmallBig(t, &chunkReader{r: bytes.NewReader(in)}, in)
		for _, m := range big.msgs {
			var buf bytes.Buffer
			err := writeMessage(NewWriter(&buf), m)
			if errors.Is(err, ErrEndLineInBody) {
				// The Writer is stricter than the Reader: it also refuses a
				// body that starts with, or contains, CRLF "-------" tid
				// without a flag. It must only refuse such bodies.
				pat := append([]byte("\r\n-------"), m.tid...)
				if !bytes.Contains(m.body, pat) && !bytes.HasPrefix(m.body, pat[2:]) {
					t.Fatalf("writer refused a body without its end-line: %q", m.body)
				}
				continue
			}
			if err != nil {
				t.Fatalf("writing a read frame: %v (%+v)", err, m)
			}
			r := NewReader(bufio.NewReader(&buf), Limits{})
			got, err := readMessage(r)
			if err != nil {
				t.Fatalf("reading back %q: %v", buf.Bytes(), err)
			}
			if !got.equal(m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v\nwire %q", got, m, buf.Bytes())
			}
		}
	})
}

// fuzzReaderSeeds are FuzzReader's seeds besides the RFC example frames.
var fuzzReaderSeeds = []string{
	"MSRP tid1 SEND\r\nContent-Type: text/plain\r\n\r\na\r\n-------tid2$\r\n-------tid1\r\n-------tid1$\r\n",
	"MSRP tid1 SEND\r\n\r\n-------tid1$\r\nMSRP tid2 200 OK\r\n-------tid2+\r\n",
	"MSRP abcd SEND\r\nX: a\rb\r\n-------abcd$\r\n",
	"MSRP tid1 SEND\r\n\r\n-------tid1!\r\na\r\n-------tid1!\r\n-------tid1+\r\n",
	"MSRP " + tid32 + " SEND\r\n\r\nx\r\n-------" + tid32 + "$\r\n",
}

// compareSmallBig reads in through a 16-byte bufio.Reader over small (which
// must deliver in) and through a 4 KiB one over all of in at once, fails t
// unless both give the same frames and error, and returns the latter.
func compareSmallBig(t *testing.T, small io.Reader, in []byte) frameRun {
	t.Helper()
	s := readFrames(t, bufio.NewReaderSize(small, 16))
	big := readFrames(t, bufio.NewReaderSize(bytes.NewReader(in), 4096))
	if len(s.msgs) != len(big.msgs) || s.err.Error() != big.err.Error() {
		t.Fatalf("buffer size changes the result: %d frames %v vs %d frames %v", len(s.msgs), s.err, len(big.msgs), big.err)
	}
	for i := range s.msgs {
		if !s.msgs[i].equal(big.msgs[i]) {
			t.Fatalf("frame %d differs by buffer size:\n%+v\n%+v", i, s.msgs[i], big.msgs[i])
		}
	}
	return big
}

// chunkReader reads from r in chunks whose sizes cycle through chunkSizes:
// irregular, a third of them single bytes, about 4 bytes on average.
type chunkReader struct {
	r io.Reader
	i int
}

var chunkSizes = [...]int{1, 3, 1, 7, 2, 1, 13, 5, 1, 11, 4, 1, 2, 9, 1, 6}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := chunkSizes[c.i%len(chunkSizes)]
	c.i++
	return c.r.Read(p[:min(len(p), n)])
}

// The seed frames of FuzzReader, each truncated at every length, read the
// same one byte at a time as all at once: the exhaustive buffer-boundary
// check that FuzzReader does with irregular chunks only.
func TestReaderOneByteSeeds(t *testing.T) {
	seeds := slices.Clone(fuzzReaderSeeds)
	for _, b := range rfcFrames(t) {
		seeds = append(seeds, string(b))
	}
	for _, s := range seeds {
		for n := range len(s) + 1 {
			in := []byte(s[:n])
			compareSmallBig(t, oneByteReader{bytes.NewReader(in)}, in)
			compareSmallBig(t, &chunkReader{r: bytes.NewReader(in)}, in)
		}
	}
}

type frameRun struct {
	msgs []*message
	err  error
}

func readFrames(t *testing.T, br *bufio.Reader) frameRun {
	r := NewReader(br, Limits{})
	var run frameRun
	for {
		m, err := readMessage(r)
		if err != nil {
			if err != io.EOF {
				var fe *FrameError
				if !errors.As(err, &fe) {
					t.Fatalf("error is not a *FrameError: %v", err)
				}
			}
			run.err = err
			return run
		}
		run.msgs = append(run.msgs, m)
	}
}

// FuzzURI: a URI that parses, formatted and parsed again, is equal, and
// equal to itself under the RFC 4975 §6.1 comparison.
func FuzzURI(f *testing.F) {
	for _, s := range []string{
		"msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp", "msrps://alice@intra.example.com;tcp",
		"msrp://[2001:db8::1]:2855/s+=/x;tcp;foo=bar;baz", "MSRP://H:1", "msrp://u%41@h%2d:9/a/b/c;TCP",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrURI) {
				t.Fatalf("error is not ErrURI: %v", err)
			}
			return
		}
		again, err := ParseURI(u.String())
		if err != nil || again != u {
			t.Fatalf("round trip %q -> %q: %+v, %v", s, u.String(), again, err)
		}
		if !u.Equal(again) {
			t.Fatalf("%q not Equal to itself", s)
		}
	})
}

// FuzzByteRange: a Byte-Range that parses formats back to a value that
// parses to the same range.
func FuzzByteRange(f *testing.F) {
	for _, s := range []string{"1-25/25", "1-*/*", "26-*/100", "1-0/0", "0-1/1", "1-1/", "007-8/9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		br, err := ParseByteRange([]byte(s))
		if err != nil {
			if !errors.Is(err, ErrValue) {
				t.Fatalf("error is not ErrValue: %v", err)
			}
			return
		}
		again, err := ParseByteRange([]byte(br.String()))
		if err != nil || again != br {
			t.Fatalf("round trip %q -> %q: %+v, %v", s, br.String(), again, err)
		}
	})
}

// FuzzDigest: parameters that parse, formatted and parsed again, are equal.
func FuzzDigest(f *testing.F) {
	f.Add(`Digest realm="intra.example.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"`)
	f.Add(`Digest username="Al\"ice", nc=00000001, response="6629fae49393a05397450978507c4ef1"`)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest([]byte(s))
		if err != nil {
			if !errors.Is(err, ErrValue) {
				t.Fatalf("error is not ErrValue: %v", err)
			}
			return
		}
		again, err := ParseDigest(AppendDigest(nil, "Digest", d...))
		if err != nil || len(again) != len(d) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		for i := range d {
			if again[i] != d[i] {
				t.Fatalf("param %d: %+v vs %+v", i, again[i], d[i])
			}
		}
	})
}
