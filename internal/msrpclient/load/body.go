package load

import "hash/crc32"

// Every message's body is the same: byte i is 'a' + i%26. It is not kept
// whole: A sends it from a pattern of a few chunks' length (cache-sized
// even for 10 MB messages), whose slice at i%26 is the body from i on.
// Nothing is copied or generated per chunk, and B's check is unchanged:
// the CRC-32C of the whole body, computed once, against that of the bytes
// B reassembled by Byte-Range.
const (
	bodyPeriod = 26
	// bodySpanMax bounds the longest slice of the pattern (a multiple of
	// the period): a longer chunk is sent as several slices.
	bodySpanMax = 256 << 10 / bodyPeriod * bodyPeriod
)

// bodyPattern is the body's bytes from any offset, a slice at a time.
type bodyPattern struct {
	pat  []byte // span + bodyPeriod bytes of the body
	span int    // a multiple of bodyPeriod: the longest slice handed out
}

// newBodyPattern covers slices up to piece bytes (a chunk) in one, up to
// bodySpanMax.
func newBodyPattern(piece int) bodyPattern {
	span := (min(max(piece, 1), bodySpanMax) + bodyPeriod - 1) / bodyPeriod * bodyPeriod
	pat := make([]byte, span+bodyPeriod)
	fillBody(pat)
	return bodyPattern{pat: pat, span: span}
}

// fillBody writes the body's first len(b) bytes into b, by doubling.
func fillBody(b []byte) {
	n := copy(b, "abcdefghijklmnopqrstuvwxyz")
	for n < len(b) {
		n += copy(b[n:], b[:n])
	}
}

// slice is the body from off on, at most n bytes and at most span: the
// caller loops until it has its n.
func (bp *bodyPattern) slice(off, n int64) []byte {
	ph := int(off % bodyPeriod)
	return bp.pat[ph : ph+int(min(n, int64(bp.span)))]
}

// crc is the CRC-32C of the body's first size bytes.
func (bp *bodyPattern) crc(size int64) uint32 {
	var c uint32
	for off := int64(0); off < size; {
		s := bp.slice(off, size-off)
		c = crc32.Update(c, castagnoli, s)
		off += int64(len(s))
	}
	return c
}
