package spool

import (
	"encoding/binary"
	"testing"
)

// FuzzScanSegment feeds arbitrary bytes to the segment reader as a segment
// file: it never panics, and every record it returns is inside the data with
// matching checksums.
func FuzzScanSegment(f *testing.F) {
	seg := []byte(segMagic)
	for i := range 4 {
		seg = appendFrame(seg, rec(i))
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add([]byte(segMagic))
	f.Add([]byte("garbage"))
	bad := append([]byte(nil), seg...)
	bad[len(segMagic)+1] ^= 0xff
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := scanSegment(data)
		if err != nil {
			return
		}
		prevEnd := int64(len(segMagic))
		for _, off := range r.offs {
			if off < prevEnd {
				t.Fatalf("record at %d overlaps the previous one ending at %d", off, prevEnd)
			}
			n, ok := recordAt(data, off)
			if !ok {
				t.Fatalf("returned record at %d is not intact", off)
			}
			h := data[off : off+recHdrSize]
			p := data[off+recHdrSize : off+recHdrSize+n]
			if checksum(p) != binary.LittleEndian.Uint32(h[4:8]) || checksum(h[:8]) != binary.LittleEndian.Uint32(h[8:12]) {
				t.Fatalf("record at %d: checksum mismatch", off)
			}
			prevEnd = off + recHdrSize + n
		}
		if r.validEnd != prevEnd || r.validEnd > int64(len(data)) {
			t.Fatalf("validEnd %d, last record ends at %d, data %d", r.validEnd, prevEnd, len(data))
		}
		if !r.torn && r.corrupt == 0 && r.validEnd != int64(len(data)) {
			t.Fatalf("clean scan ended at %d of %d", r.validEnd, len(data))
		}
	})
}

func appendFrame(b, p []byte) []byte {
	var h [recHdrSize]byte
	putHeader(h[:], p)
	return append(append(b, h[:]...), p...)
}

// FuzzDecodeAck: an arbitrary ack file never panics the decoder; a position
// it returns comes from a slot whose checksum matches.
func FuzzDecodeAck(f *testing.F) {
	b := make([]byte, ackFile)
	encodeAck(b, 7, ackPos{seq: 3, off: 100})
	encodeAck(b[ackStride:], 8, ackPos{seq: 3, off: 120})
	f.Add(b)
	f.Add(b[:ackSize])
	f.Add([]byte("xx"))
	f.Fuzz(func(t *testing.T, data []byte) {
		gen, a, err := decodeAck(data)
		if err != nil {
			return
		}
		g0, a0, ok0 := decodeAckSlot(data)
		var g1 uint64
		var a1 ackPos
		ok1 := false
		if len(data) >= ackFile {
			g1, a1, ok1 = decodeAckSlot(data[ackStride:])
		}
		if !(ok0 && g0 == gen && a0 == a) && !(ok1 && g1 == gen && a1 == a) {
			t.Fatalf("position %+v gen %d from no valid slot", a, gen)
		}
	})
}
