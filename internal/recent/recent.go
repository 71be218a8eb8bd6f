// Package recent is the "recent" trace sink: a bounded in-memory ring of the
// last traced frames, indexed by relay session, which the admin web view reads.
package recent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// Defaults and bounds of Config.
const (
	DefaultFrames    = 10000
	DefaultWireBytes = 512
	MaxFrames        = 1 << 20
	MaxWireBytes     = 64 << 10
)

// Field lengths a slot keeps at most (longer values are cut): RFC 4975 §9
// bounds a transact-id to 32 characters and a Message-ID to 32; the slack
// keeps a non-conforming peer's value readable.
const (
	maxTID    = 64
	maxMethod = 32
	maxMsgID  = 64
	maxCType  = 64
)

// Config is a recent sink's own configuration block (besides type and
// queue, which it does not use: Put copies into the ring directly).
type Config struct {
	Frames    int `yaml:"frames" json:"frames"`         // frames kept; the oldest is overwritten (default 10000)
	WireBytes int `yaml:"wire_bytes" json:"wire_bytes"` // bytes of each frame's start kept (default 512; -1: none)
}

// Kind is the sink kind; register it with sink.Register("recent",
// recent.Kind{Store: s}). Every ring it opens joins s while open, so that
// the program can read the rings the tracer opened.
type Kind struct{ Store *Store }

// Decode implements sink.Factory.
func (Kind) Decode(decode func(v any) error) (any, error) {
	var c Config
	if err := decode(&c); err != nil {
		return nil, err
	}
	if c.Frames < 0 || c.Frames > MaxFrames {
		return nil, fmt.Errorf("recent frames %d: want 1 to %d (0: %d)", c.Frames, MaxFrames, DefaultFrames)
	}
	if c.WireBytes < -1 || c.WireBytes > MaxWireBytes {
		return nil, fmt.Errorf("recent wire_bytes %d: want -1 (none) to %d (0: %d)", c.WireBytes, MaxWireBytes, DefaultWireBytes)
	}
	if c.Frames == 0 {
		c.Frames = DefaultFrames
	}
	if c.WireBytes == 0 {
		c.WireBytes = DefaultWireBytes
	}
	return c, nil
}

// Open implements sink.Factory.
func (k Kind) Open(_ context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, fmt.Errorf("recent sink %q: configuration of type %T", o.Name, cfg)
	}
	if k.Store == nil {
		return nil, errors.New("recent sink: the kind was registered without a Store")
	}
	r := NewRing(o.Name, c)
	r.store = k.Store
	k.Store.add(r)
	return r, nil
}

// Frame is one frame as the ring kept it.
type Frame struct {
	Seq       uint64 // the ring's running number: later frames have higher ones
	Time      time.Time
	Dir       event.Direction // DirIn: read from the connection; DirOut: written to it
	ConnID    uint64
	Transport string
	Local     netip.AddrPort
	Remote    netip.AddrPort
	Method    string // "" for a response
	Status    int    // 0 for a request
	// ReportStatus is the status code of a REPORT's Status header (RFC
	// 4975 §7.1.2), 0 for other frames or when the header was not captured.
	ReportStatus int
	TransactID   string
	MessageID    string
	ContentType  string
	FromSession  string
	ToSession    string
	Flag         byte
	Size         int64
	Head         []byte // the frame's first bytes as captured, at most wire_bytes
}

// slot is one place of the ring. It is kept small (168 bytes, was 280): a
// full ring is larger than a core's cache, so each Put writes cold memory,
// and the bytes it writes are most of its cost. The byte fields lie in the
// ring's arena, at the slot's place (Ring.bytes). (Sharing one record per
// connection between its frames would make the slot smaller still, but
// its reference count is written by the read loops of both ends of a
// chat, on two cores: in a benchmark it cost more than it saved.)
type slot struct {
	seq        uint64
	nanos      int64          // the frame's time, Unix nanoseconds
	conn       event.ConnInfo // Transport interned
	size       int64
	fromX, toX *sessionIndex // the sessions' index entries (nil for ""): their keys, and eviction needs no map lookup
	status     int32
	// ends are the ends of the transact-id, method, Message-ID,
	// Content-Type and wire head in the slot's bytes, one after the other.
	ends         [5]uint32
	reportStatus int16
	dir          event.Direction
	flag         byte
	used         bool
}

// sessionIndex is the seqs of a session's frames still in the ring, oldest
// first.
type sessionIndex struct {
	key  string
	seqs []uint64
	base []uint64 // seqs' array from its start (len 0): evictions take from seqs' front
}

// Ring is a recent sink: a fixed number of slots overwritten oldest first.
// Put copies the frame into a slot under a mutex held for that copy only
// (no I/O, no waiting on a reader's work beyond copying one session's
// frames out): it never blocks on anything slow and drops nothing; a full
// ring evicts its oldest frame.
type Ring struct {
	name      string
	wireBytes int
	store     *Store

	mu       sync.Mutex
	slots    []slot
	arenas   [][]byte // the slots' bytes, slotBytes each, bufChunk slots an arena, allocated at first use
	next     uint64   // seq of the next frame
	sessions map[string]*sessionIndex
	recent   [4]*sessionIndex // the sessions indexed last, checked before the map (a chat's frames share their pair)
	nextRec  int              // the entry of recent replaced next
	closed   bool

	evicted atomic.Uint64
	ignored atomic.Uint64 // connection events (the ring keeps frames only)
	late    atomic.Uint64 // Puts after Close
}

// NewRing makes a ring with c's bounds (zero fields take the defaults). It
// belongs to no Store; Kind.Open makes the ones the tracer uses.
func NewRing(name string, c Config) *Ring {
	if c.Frames <= 0 {
		c.Frames = DefaultFrames
	}
	if c.WireBytes == 0 {
		c.WireBytes = DefaultWireBytes
	}
	if c.WireBytes < 0 {
		c.WireBytes = 0
	}
	return &Ring{name: name, wireBytes: c.WireBytes, slots: make([]slot, c.Frames),
		arenas: make([][]byte, (c.Frames+bufChunk-1)/bufChunk), sessions: map[string]*sessionIndex{}}
}

// Put implements sink.Sink: it keeps frames and counts connection events
// as ignored.
func (r *Ring) Put(e *event.Event) {
	f := e.Frame
	if f == nil {
		r.ignored.Add(1)
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.late.Add(1)
		return
	}
	seq := r.next
	r.next++
	i := int(seq % uint64(len(r.slots)))
	s := &r.slots[i]
	if s.used {
		r.unindex(s)
		r.evicted.Add(1)
	}
	s.used, s.seq, s.nanos, s.dir = true, seq, e.Time.UnixNano(), f.Dir
	s.conn = e.Conn
	s.conn.Transport = internTransport(e.Conn.Transport)
	s.status, s.flag, s.size = int32(f.Status), f.Flag, f.Size
	b := r.bytes(i)[:0]
	b = append(b, cut(f.TransactID, maxTID)...)
	s.ends[0] = uint32(len(b))
	b = append(b, cut(f.Method, maxMethod)...)
	s.ends[1] = uint32(len(b))
	b = append(b, cut(f.MessageID, maxMsgID)...)
	s.ends[2] = uint32(len(b))
	b = append(b, cut(f.ContentType, maxCType)...)
	s.ends[3] = uint32(len(b))
	wire := f.Wire
	if int64(len(wire)) > f.Size && f.Size >= 0 {
		wire = wire[:f.Size]
	}
	b = append(b, cut(wire, r.wireBytes)...)
	s.ends[4] = uint32(len(b))
	s.reportStatus = 0
	if string(f.Method) == "REPORT" {
		s.reportStatus = int16(reportStatus(f.Wire))
	}
	s.fromX = r.index(f.FromSession, seq)
	s.toX = nil
	if f.ToSession != f.FromSession {
		s.toX = r.index(f.ToSession, seq)
	}
	r.mu.Unlock()
}

// bufChunk is the number of slots whose bytes are allocated together, at
// the first use of one of them: a ring filling up allocates once per
// bufChunk frames, and an unused ring holds no buffers.
const bufChunk = 64

// slotBytes is the room of a slot's bytes.
func (r *Ring) slotBytes() int { return maxTID + maxMethod + maxMsgID + maxCType + r.wireBytes }

// bytes is slot i's room (its arena allocated at first use). Called with
// r.mu held.
func (r *Ring) bytes(i int) []byte {
	sz := r.slotBytes()
	a := r.arenas[i/bufChunk]
	if a == nil {
		n := min(bufChunk, len(r.slots)-i/bufChunk*bufChunk)
		a = make([]byte, n*sz)
		r.arenas[i/bufChunk] = a
	}
	k := i % bufChunk * sz
	return a[k : k+sz : k+sz]
}

func cut(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func internTransport(t string) string {
	switch t {
	case "msrp":
		return "msrp"
	case "msrps":
		return "msrps"
	case "":
		return ""
	}
	return "other"
}

// index adds seq to id's frames and returns the index's copy of id.
func (r *Ring) index(id string, seq uint64) *sessionIndex {
	if id == "" {
		return nil
	}
	var x *sessionIndex
	for _, c := range r.recent {
		if c != nil && c.key == id {
			x = c
			break
		}
	}
	if x == nil {
		if x = r.sessions[id]; x == nil {
			key := string([]byte(id)) // a copy: the event's strings are the relay's
			x = &sessionIndex{key: key}
			r.sessions[key] = x
		}
		r.recent[r.nextRec] = x
		r.nextRec = (r.nextRec + 1) % len(r.recent)
	}
	// Evictions take seqs from the front and frames append at the back:
	// at the end of the array, move them back to its start when at least
	// half of it is free, else move them to an array twice their number.
	// A session's frames so cost at most one copy of a seq each, and no
	// allocation once its number of frames in the ring is steady.
	if n := len(x.seqs); n == cap(x.seqs) {
		if n <= cap(x.base)/2 {
			x.seqs = append(x.base[:0], x.seqs...)
		} else {
			b := make([]uint64, n, 2*n+8)
			copy(b, x.seqs)
			x.seqs, x.base = b, b[:0]
		}
	}
	x.seqs = append(x.seqs, seq)
	return x
}

// keyOf is x's session id, "" for nil.
func (x *sessionIndex) keyOf() string {
	if x == nil {
		return ""
	}
	return x.key
}

// unindex removes the evicted slot s from its sessions' frames: it is
// their oldest, evictions go in seq order.
func (r *Ring) unindex(s *slot) {
	// An entry stays in the map while it holds a seq, so the slot's
	// pointers are the map's entries (no lookup by id per eviction).
	for _, x := range [2]*sessionIndex{s.fromX, s.toX} {
		if x == nil || len(x.seqs) == 0 || x.seqs[0] != s.seq {
			continue // cannot happen; a wrong index must not panic the relay
		}
		x.seqs = x.seqs[1:]
		if len(x.seqs) == 0 {
			delete(r.sessions, x.key)
			for i, c := range r.recent {
				if c == x {
					r.recent[i] = nil // a later frame of id must make a new index entry
				}
			}
		}
	}
}

// reportStatus is the status code of the Status header in a REPORT's head,
// "Status: 000 481 ..." (RFC 4975 §9: status = "Status:" SP namespace SP
// status-code [SP comment]), or 0.
func reportStatus(wire []byte) int {
	end := bytes.Index(wire, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(wire)
	}
	h := wire[:end]
	for len(h) > 0 {
		i := bytes.Index(h, []byte("\r\n"))
		line := h
		if i >= 0 {
			line, h = h[:i], h[i+2:]
		} else {
			h = nil
		}
		const name = "status:"
		if len(line) < len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
			continue
		}
		v := bytes.TrimLeft(line[len(name):], " \t")
		if len(v) < 7 || v[3] != ' ' {
			return 0
		}
		code := 0
		for _, c := range v[4:7] {
			if c < '0' || c > '9' {
				return 0
			}
			code = code*10 + int(c-'0')
		}
		return code
	}
	return 0
}

// SessionFrames returns the frames in the ring that the relay session id
// sent or received (FromSession or ToSession), oldest first.
func (r *Ring) SessionFrames(id string) []Frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	x := r.sessions[id]
	if x == nil {
		return nil
	}
	out := make([]Frame, 0, len(x.seqs))
	for _, seq := range x.seqs {
		i := int(seq % uint64(len(r.slots)))
		if s := &r.slots[i]; !s.used || s.seq != seq {
			continue
		}
		out = append(out, r.frame(i))
	}
	return out
}

// Session is a session the ring holds frames of.
type Session struct {
	ID          string
	Frames      int
	First, Last time.Time
}

// Sessions lists the sessions the ring holds frames of, the most recently
// active first, at most max (max <= 0: all).
func (r *Ring) Sessions(max int) []Session {
	r.mu.Lock()
	out := make([]Session, 0, len(r.sessions))
	for _, x := range r.sessions {
		n := uint64(len(r.slots))
		first, last := &r.slots[x.seqs[0]%n], &r.slots[x.seqs[len(x.seqs)-1]%n]
		out = append(out, Session{ID: x.key, Frames: len(x.seqs), First: time.Unix(0, first.nanos), Last: time.Unix(0, last.nanos)})
	}
	r.mu.Unlock()
	sortSessions(out)
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

func (r *Ring) frame(i int) Frame {
	s := &r.slots[i]
	b := r.bytes(i)
	e := s.ends
	f := Frame{Seq: s.seq, Time: time.Unix(0, s.nanos), Dir: s.dir, ConnID: s.conn.ID, Transport: s.conn.Transport,
		Local: s.conn.Local, Remote: s.conn.Remote, Status: int(s.status), ReportStatus: int(s.reportStatus),
		TransactID: string(b[:e[0]]), Method: string(b[e[0]:e[1]]), MessageID: string(b[e[1]:e[2]]),
		ContentType: string(b[e[2]:e[3]]), FromSession: s.fromX.keyOf(), ToSession: s.toX.keyOf(), Flag: s.flag, Size: s.size}
	if e[4] > e[3] {
		f.Head = bytes.Clone(b[e[3]:e[4]])
	}
	return f
}

// Len is the number of frames held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int(min(r.next, uint64(len(r.slots))))
}

// Stats implements sink.Sink: Sent counts frames taken into the ring
// (evicted ones included), Dropped the Puts after Close.
func (r *Ring) Stats() sink.Stats {
	r.mu.Lock()
	taken, held, sessions := r.next, min(r.next, uint64(len(r.slots))), len(r.sessions)
	r.mu.Unlock()
	return sink.Stats{Name: r.name, Type: "recent", Sent: taken, Dropped: r.late.Load(), State: sink.StateOK,
		Counters: []sink.Counter{
			{Name: "evicted", Value: r.evicted.Load()},
			{Name: "frames_held", Value: held},
			{Name: "ignored_events", Value: r.ignored.Load()},
			{Name: "sessions_held", Value: uint64(sessions)},
		}}
}

// Close implements sink.Sink: the ring leaves its Store (the web view no
// longer reads it) and drops later Puts.
func (r *Ring) Close(context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	if r.store != nil {
		r.store.remove(r)
	}
	return nil
}
