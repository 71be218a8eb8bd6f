package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk format (version 1), little-endian:
//
//	segment file  = segMagic (8 bytes) record*
//	record        = length uint32 | payloadCRC uint32 | headerCRC uint32 | payload (length bytes)
//	ack file      = slot at offset 0, slot at offset 512
//	slot          = ackMagic (8 bytes) | generation uint64 | seq uint64 | offset uint64 | CRC uint32 of the 32 bytes before
//
// payloadCRC is CRC-32C (Castagnoli) of the payload; headerCRC is CRC-32C of
// the 8 bytes before it. The header checksum tells a corrupt length from a
// corrupt payload: a record whose header is intact but whose payload is not is
// skipped by its length; a corrupt header makes the reader search forward for
// the next position holding a record whose two checksums match (resync).
//
// Ack overwrites the older of the ack file's two slots in place (one write,
// one fdatasync) with the next generation; the slot with the highest
// generation and a valid checksum holds the position. A write torn by a power
// loss spoils only the slot being written: the other one still holds the
// previous position (the record then is replayed once more). The slots sit in
// different 512-byte sectors.
const (
	segMagic   = "msrpspl\x01"
	ackMagic   = "msrpack\x01"
	recHdrSize = 12
	ackSize    = 8 + 8 + 8 + 8 + 4
	ackStride  = 512 // offset of the second slot
	ackFile    = ackStride + ackSize
	// MaxRecord bounds one record's payload.
	MaxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// putHeader writes the 12-byte record header for payload p into h.
func putHeader(h []byte, p []byte) {
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(p)))
	binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(p, castagnoli))
	binary.LittleEndian.PutUint32(h[8:12], crc32.Checksum(h[0:8], castagnoli))
}

// parseHeader checks a record header; ok is false when its checksum does not match.
func parseHeader(h []byte) (n uint32, payloadCRC uint32, ok bool) {
	if crc32.Checksum(h[0:8], castagnoli) != binary.LittleEndian.Uint32(h[8:12]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(h[0:4]), binary.LittleEndian.Uint32(h[4:8]), true
}

// scanResult is what scanSegment found in one segment file's bytes.
type scanResult struct {
	offs     []int64 // start offsets of the intact records, in order
	corrupt  int     // corrupt regions skipped (each: one or more records)
	validEnd int64   // end of the last intact record (len(segMagic) when none)
	torn     bool    // the bytes after validEnd hold no intact record (a torn tail)
}

var errBadMagic = errors.New("not a spool segment (bad magic)")

// scanSegment finds the intact records in data, a whole segment file. It
// never panics on arbitrary input; every offset it returns starts a record
// whose header and payload checksums match and which ends within data.
func scanSegment(data []byte) (scanResult, error) {
	var r scanResult
	if len(data) < len(segMagic) || string(data[:len(segMagic)]) != segMagic {
		return r, errBadMagic
	}
	off := int64(len(segMagic))
	r.validEnd = off
	size := int64(len(data))
	for off < size {
		if n, ok := recordAt(data, off); ok {
			r.offs = append(r.offs, off)
			off += recHdrSize + n
			r.validEnd = off
			continue
		}
		// Corrupt or torn: if the header is intact, the length says where
		// the next record starts; otherwise search for the next intact one.
		next := int64(-1)
		if off+recHdrSize <= size {
			if n, _, ok := parseHeader(data[off : off+recHdrSize]); ok && off+recHdrSize+int64(n) <= size {
				next = off + recHdrSize + int64(n)
			}
		}
		if next < 0 {
			next = resync(data, off+1)
		}
		if next < 0 {
			r.corrupt++
			r.torn = true
			return r, nil
		}
		if next >= size {
			// The damaged record was the last one: a torn tail only in name,
			// its bytes are complete but wrong.
			r.corrupt++
			r.torn = true
			return r, nil
		}
		r.corrupt++
		off = next
	}
	return r, nil
}

// recordAt reports whether an intact record starts at off and its payload length.
func recordAt(data []byte, off int64) (int64, bool) {
	size := int64(len(data))
	if off < 0 || off+recHdrSize > size {
		return 0, false
	}
	n, pcrc, ok := parseHeader(data[off : off+recHdrSize])
	if !ok || int64(n) > MaxRecord || off+recHdrSize+int64(n) > size {
		return 0, false
	}
	p := data[off+recHdrSize : off+recHdrSize+int64(n)]
	if crc32.Checksum(p, castagnoli) != pcrc {
		return 0, false
	}
	return int64(n), true
}

// resync returns the first offset ≥ from where an intact record starts, or -1.
func resync(data []byte, from int64) int64 {
	for off := from; off+recHdrSize <= int64(len(data)); off++ {
		if _, ok := recordAt(data, off); ok {
			return off
		}
	}
	return -1
}

// ackPos is the acknowledged position: every record of a segment with a
// smaller sequence number, and every record of segment seq starting before
// off, is delivered.
type ackPos struct {
	seq uint64
	off int64
}

// encodeAck writes a slot into b (ackSize bytes).
func encodeAck(b []byte, gen uint64, a ackPos) {
	copy(b, ackMagic)
	binary.LittleEndian.PutUint64(b[8:16], gen)
	binary.LittleEndian.PutUint64(b[16:24], a.seq)
	binary.LittleEndian.PutUint64(b[24:32], uint64(a.off))
	binary.LittleEndian.PutUint32(b[32:36], checksum(b[:32]))
}

func decodeAckSlot(b []byte) (gen uint64, a ackPos, ok bool) {
	if len(b) < ackSize || string(b[:8]) != ackMagic || checksum(b[:32]) != binary.LittleEndian.Uint32(b[32:36]) {
		return 0, ackPos{}, false
	}
	off := binary.LittleEndian.Uint64(b[24:32])
	if off > 1<<62 {
		return 0, ackPos{}, false
	}
	return binary.LittleEndian.Uint64(b[8:16]), ackPos{seq: binary.LittleEndian.Uint64(b[16:24]), off: int64(off)}, true
}

// decodeAck returns the position of the newest valid slot of an ack file.
func decodeAck(b []byte) (gen uint64, a ackPos, err error) {
	g0, a0, ok0 := decodeAckSlot(b)
	var g1 uint64
	var a1 ackPos
	ok1 := false
	if len(b) >= ackFile {
		g1, a1, ok1 = decodeAckSlot(b[ackStride:])
	}
	switch {
	case ok0 && (!ok1 || g0 >= g1):
		return g0, a0, nil
	case ok1:
		return g1, a1, nil
	}
	return 0, ackPos{}, fmt.Errorf("ack file: no valid slot (%d bytes)", len(b))
}
