package storage

import (
	"encoding/binary"
	"fmt"
)

// A batch is the unit of insert and of the spool: the frames rows and the
// events rows gathered in one batch window, under one batch id. Encoded:
//
//	"MSB1" id(8) minTS(8) maxTS(8) node(str)
//	nFrames(4) framesLen(4) frames  nEvents(4) eventsLen(4) events
//
// minTS and maxTS (µs) bound every row's ts: the batch-id check scans only
// the partitions and granules between them.
const batchMagic = "MSB1"

// Row kinds: the first byte of a row handed from Add to the writer.
const (
	kindFrame = 'F'
	kindEvent = 'E'
)

type batchBuilder struct {
	frames, events   []byte
	nFrames, nEvents int
	minTS, maxTS     int64
}

func (b *batchBuilder) rows() int { return b.nFrames + b.nEvents }

// add appends one row: its kind byte, then the row encoding.
func (b *batchBuilder) add(row string) {
	if len(row) < 9 {
		return
	}
	ts := int64(binary.LittleEndian.Uint64([]byte(row[1:9])))
	if b.rows() == 0 || ts < b.minTS {
		b.minTS = ts
	}
	if b.rows() == 0 || ts > b.maxTS {
		b.maxTS = ts
	}
	if row[0] == kindFrame {
		b.frames = append(b.frames, row[1:]...)
		b.nFrames++
	} else {
		b.events = append(b.events, row[1:]...)
		b.nEvents++
	}
}

// seal encodes the batch and resets the builder.
func (b *batchBuilder) seal(dst []byte, id uint64, node string) []byte {
	dst = append(dst, batchMagic...)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(b.minTS))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(b.maxTS))
	dst = appendStr(dst, node)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.nFrames))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.frames)))
	dst = append(dst, b.frames...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.nEvents))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.events)))
	dst = append(dst, b.events...)
	b.frames, b.events = b.frames[:0], b.events[:0]
	b.nFrames, b.nEvents = 0, 0
	return dst
}

// batch is a decoded batch header; frames and events are the row
// encodings, checked by decodeBatch to hold exactly nFrames and nEvents rows.
type batch struct {
	id           uint64
	minTS, maxTS int64
	node         string
	nFrames      int
	frames       string
	nEvents      int
	events       string
}

// decodeBatch checks and splits an encoded batch. Any malformed record is
// an error (the spool's own checksums catch corruption on disk; this
// catches records of another format).
func decodeBatch(s string) (batch, error) {
	var b batch
	r := reader{s: s}
	if r.fixed(4) != batchMagic {
		return b, fmt.Errorf("storage: batch record: bad magic")
	}
	b.id = r.u64()
	b.minTS = int64(r.u64())
	b.maxTS = int64(r.u64())
	b.node = r.str()
	b.nFrames = int(r.u32())
	b.frames = r.fixed(int(r.u32()))
	b.nEvents = int(r.u32())
	b.events = r.fixed(int(r.u32()))
	if r.err != nil || r.off != len(s) {
		return b, fmt.Errorf("storage: batch record: truncated or trailing bytes")
	}
	if b.minTS > b.maxTS {
		return b, fmt.Errorf("storage: batch record: time range inverted")
	}
	// Walk the rows once so that the insert path cannot meet a bad row.
	if err := eachFrame(b, func(Frame) {}); err != nil {
		return b, err
	}
	if err := eachEvent(b, func(ConnEvent) {}); err != nil {
		return b, err
	}
	return b, nil
}

func eachFrame(b batch, fn func(Frame)) error {
	s := b.frames
	for i := 0; i < b.nFrames; i++ {
		f, n, err := decodeFrame(s, b.id)
		if err != nil {
			return fmt.Errorf("storage: batch record: frame %d: %w", i, err)
		}
		f.Node = b.node
		fn(f)
		s = s[n:]
	}
	if s != "" {
		return fmt.Errorf("storage: batch record: bytes after %d frames", b.nFrames)
	}
	return nil
}

func eachEvent(b batch, fn func(ConnEvent)) error {
	s := b.events
	for i := 0; i < b.nEvents; i++ {
		c, n, err := decodeEvent(s, b.id)
		if err != nil {
			return fmt.Errorf("storage: batch record: event %d: %w", i, err)
		}
		c.Node = b.node
		fn(c)
		s = s[n:]
	}
	if s != "" {
		return fmt.Errorf("storage: batch record: bytes after %d events", b.nEvents)
	}
	return nil
}
