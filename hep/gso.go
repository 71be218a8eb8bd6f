package hep

import (
	"encoding/binary"
	"slices"
)

// UDP segmentation offload (GSO). Each datagram costs the kernel a full trip
// through its UDP/IP send path (about 3 µs on the machines BENCHMARKS.md was
// measured on, whatever the receiver). With UDP_SEGMENT (Linux 4.18+) one
// sendmsg carries a run of datagrams of one size that crosses the stack
// once and is cut into ordinary datagrams at the device (or by the NIC): the
// collector receives exactly the packets it would have received otherwise,
// about six times cheaper to send.
//
// The segments of a run must be of equal size except the last, which may be
// shorter. HEP packets differ in size, so the writer sorts a batch by size,
// groups packets of similar size and pads all but the smallest of a group
// to the group's size with a padding chunk. The padding chunk is a vendor
// chunk, which every HEP receiver skips: Kamailio sipcapture skips vendor
// chunks, heplify-server (Homer) skips chunk types it does not know, and
// this package's decoder drops it. Reordering within a batch is harmless:
// every packet carries its own capture time.

// The padding chunk: vendor PadVendor, type PadType, zero bytes of data.
const (
	PadVendor uint16 = 0xffff
	PadType   uint16 = 0xffff
)

const (
	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS before Linux 6.x raised it to 128.
	gsoMaxSegments = 64
	// gsoMaxBytes bounds a run's total size: one IP packet's worth (65535 less the IPv4 and
	// UDP headers).
	gsoMaxBytes = 65507
	// gsoMinPadSlack: packets up to this many bytes (or an eighth of the largest) smaller than
	// the largest of a group are padded into it; larger differences start a new group.
	gsoMinPadSlack = 64
)

// gsoRun is one sendmsg: packets order[start:end] (in the planner's order,
// largest first), each but the last padded to seg bytes. seg == 0 means a
// single datagram sent as it is.
type gsoRun struct {
	start, end int
	seg        int
}

// gsoPlanner groups a batch of packets into runs. Its slices are reused
// from batch to batch.
type gsoPlanner struct {
	order []int // indices into the batch, by size, largest first
	keys  []uint64
	runs  []gsoRun
}

// plan groups the packets of lens (their sizes) into runs whose segment
// size is at most maxSeg (the largest datagram that leaves unfragmented,
// and the profile's packet limit). Packets larger than maxSeg are sent
// alone.
func (p *gsoPlanner) plan(lens []int, maxSeg int) []gsoRun {
	// By size, largest first, in batch order among equals: one key per
	// packet (its size inverted, then its index), sorted without a
	// comparison function.
	p.keys = p.keys[:0]
	for i, l := range lens {
		p.keys = append(p.keys, uint64(max(maxTotalLen-l, 0))<<32|uint64(i))
	}
	slices.Sort(p.keys)
	p.order = p.order[:0]
	for _, k := range p.keys {
		p.order = append(p.order, int(uint32(k)))
	}
	p.runs = p.runs[:0]
	for i := 0; i < len(p.order); {
		top := lens[p.order[i]]
		if top > maxSeg {
			p.runs = append(p.runs, gsoRun{start: i, end: i + 1})
			i++
			continue
		}
		slack := max(gsoMinPadSlack, top/8)
		// Members: while similar in size, within the segment count and the run's byte limit
		// (counted with a 6-byte bump of the segment size, see below).
		j := i + 1
		for j < len(p.order) && j-i < gsoMaxSegments &&
			top-lens[p.order[j]] <= slack && (j-i)*(top+chunkHeaderLen)+lens[p.order[j]] <= gsoMaxBytes {
			j++
		}
		seg := top
		// A padding chunk is at least its 6-byte header: a member 1-5 bytes short of top
		// (which is not the last) needs a segment 6 bytes larger, or the run ends with it.
		for k := i + 1; k < j-1; k++ {
			if d := top - lens[p.order[k]]; d > 0 && d < chunkHeaderLen {
				if top+chunkHeaderLen <= maxSeg {
					seg = top + chunkHeaderLen
				} else {
					j = k + 1
				}
				break
			}
		}
		if j-i == 1 {
			seg = 0
		}
		p.runs = append(p.runs, gsoRun{start: i, end: j, seg: seg})
		i = j
	}
	return p.runs
}

// single plans every packet of a batch of n as a datagram of its own, in
// order.
func (p *gsoPlanner) single(n int) []gsoRun {
	p.order, p.runs = p.order[:0], p.runs[:0]
	for i := range n {
		p.order = append(p.order, i)
		p.runs = append(p.runs, gsoRun{start: i, end: i + 1})
	}
	return p.runs
}

// appendPadded appends pkt (one HEP packet) grown to size bytes with a
// padding chunk; size-len(pkt) must be 0 or at least a chunk header.
func appendPadded(dst, pkt []byte, size int) []byte {
	start := len(dst)
	dst = append(dst, pkt...)
	pad := size - len(pkt)
	if pad == 0 {
		return dst
	}
	binary.BigEndian.PutUint16(dst[start+4:], uint16(size))
	dst = binary.BigEndian.AppendUint16(dst, PadVendor)
	dst = binary.BigEndian.AppendUint16(dst, PadType)
	dst = binary.BigEndian.AppendUint16(dst, uint16(pad))
	return append(dst, make([]byte, pad-chunkHeaderLen)...)
}
