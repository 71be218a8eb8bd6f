// Package recent is the "recent" trace sink: a bounded in-memory ring of the
// last traced frames, indexed by relay session, which the admin web view reads.
package recent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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
	seq        uint64         // the shard's running number (its index's)
	gseq       uint64         // the ring's (Frame.Seq)
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
//
// An entry whose last frame is evicted goes to its shard's free list and
// serves the next new session, its arrays reused (with many sessions, each
// with a few frames in the ring, entries come and go at the frame rate: 3
// allocations each were most of a Put's garbage). key lies in keyBuf, which
// a later session's id overwrites: what leaves the shard's lock copies it
// (Frame, Session).
type sessionIndex struct {
	key    string // a view of keyBuf
	keyBuf []byte
	seqs   []uint64
	base   []uint64 // seqs' array from its start (len 0): evictions take from seqs' front
}

// freeIndexes bounds a shard's free list of index entries; an entry whose
// seqs array grew beyond freeIndexSeqs is not kept.
const (
	freeIndexes   = 256
	freeIndexSeqs = 64
)

// Ring is a recent sink: a fixed number of slots overwritten oldest first,
// split into shards (ringShards of them for a ring of at least
// shardFrames frames, else one), each under its own mutex. Put copies the
// frame into a slot of the first shard whose lock is free, starting from
// the next one in turn (frames spread evenly: the shards together hold
// about the ring's last Frames frames), with the lock held for that copy
// only. It waits on a lock only as a last resort: a goroutine waiting
// there parks, and a contended lock ends in a convoy that parks every
// relay goroutine tracing, each with its read and write buffers. When
// every shard is held at once (their holders preempted on a saturated CPU)
// it yields once, tries again, then waits for one (counter busy). A full
// ring evicts its oldest frames.
type Ring struct {
	name      string
	wireBytes int
	store     *Store
	shards    []*shard

	turn    atomic.Uint32 // the shard the next Put tries first
	seq     atomic.Uint64 // frames taken: the next Frame.Seq
	closed  atomic.Bool
	evicted atomic.Uint64
	ignored atomic.Uint64 // connection events (the ring keeps frames only)
	late    atomic.Uint64 // Puts after Close
	busy    atomic.Uint64 // frames that found every shard held and waited for one

	testHookWait func() // tests: called by a Put that found every shard held, before it waits
}

// ringShards is the number of shards of a ring of at least shardFrames
// frames.
const (
	ringShards  = 4
	shardFrames = 1024
)

// shard is a part of a Ring: its slots and the index of their sessions.
type shard struct {
	wireBytes int

	mu       sync.Mutex
	slots    []slot
	arenas   [][]byte // the slots' bytes, slotBytes each, bufChunk slots an arena, allocated at first use
	next     uint64   // seq of the next frame
	sessions map[string]*sessionIndex
	recent   [4]*sessionIndex // the sessions indexed last, checked before the map (a chat's frames share their pair)
	free     []*sessionIndex  // entries of sessions gone from the ring, for new ones (at most freeIndexes)
	nextRec  int              // the entry of recent replaced next
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
	n := 1
	if c.Frames >= shardFrames {
		n = ringShards
	}
	return newRing(name, c, n)
}

// newRing makes a ring of n shards with c's bounds, defaults applied.
func newRing(name string, c Config, n int) *Ring {
	r := &Ring{name: name, wireBytes: c.WireBytes}
	for i := range n {
		frames := c.Frames / n
		if i < c.Frames%n {
			frames++
		}
		r.shards = append(r.shards, &shard{wireBytes: c.WireBytes, slots: make([]slot, frames),
			arenas: make([][]byte, (frames+bufChunk-1)/bufChunk), sessions: map[string]*sessionIndex{}})
	}
	return r
}

// Put implements sink.Sink: it keeps frames and counts connection events
// as ignored.
func (r *Ring) Put(e *event.Event) {
	f := e.Frame
	if f == nil {
		r.ignored.Add(1)
		return
	}
	if r.closed.Load() {
		r.late.Add(1)
		return
	}
	sh := r.lock()
	if sh.put(e, r.seq.Add(1)-1) {
		r.evicted.Add(1)
	}
	sh.mu.Unlock()
}

// lock locks a shard and returns it: the first one free from the next in
// turn, taken without waiting (a waiting relay goroutine parks with its
// buffers, and a contended lock turns into a convoy). Every shard is held
// at once only when their holders were preempted: it yields once, tries
// again, then waits for one (counted as busy) rather than drop the frame.
func (r *Ring) lock() *shard {
	n := uint32(len(r.shards))
	if n == 1 {
		sh := r.shards[0]
		sh.mu.Lock() // a small ring (tests, a narrow rule): one lock
		return sh
	}
	first := r.turn.Add(1) % n
	for sweep := 0; ; sweep++ {
		for i := range n {
			if sh := r.shards[(first+i)%n]; sh.mu.TryLock() {
				return sh
			}
		}
		if sweep == 1 {
			r.busy.Add(1)
			if r.testHookWait != nil {
				r.testHookWait()
			}
			sh := r.shards[first]
			sh.mu.Lock()
			return sh
		}
		runtime.Gosched()
	}
}

// put copies the frame into the shard's next slot (sh.mu held), as the
// ring's frame gseq, and reports whether it evicted one.
func (sh *shard) put(e *event.Event, gseq uint64) (evicted bool) {
	f := e.Frame
	seq := sh.next
	sh.next++
	i := int(seq % uint64(len(sh.slots)))
	s := &sh.slots[i]
	if s.used {
		sh.unindex(s)
		evicted = true
	}
	s.used, s.seq, s.gseq, s.nanos, s.dir = true, seq, gseq, e.Time.UnixNano(), f.Dir
	s.conn = e.Conn
	s.conn.Transport = internTransport(e.Conn.Transport)
	s.status, s.flag, s.size = int32(f.Status), f.Flag, f.Size
	b := sh.bytes(i)[:0]
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
	b = append(b, cut(wire, sh.wireBytes)...)
	s.ends[4] = uint32(len(b))
	s.reportStatus = 0
	if string(f.Method) == "REPORT" {
		s.reportStatus = int16(reportStatus(f.Wire))
	}
	s.fromX = sh.index(f.FromSession, seq)
	s.toX = nil
	if f.ToSession != f.FromSession {
		s.toX = sh.index(f.ToSession, seq)
	}
	sh.prefetchSlot(int((seq + 1) % uint64(len(sh.slots))))
	return evicted
}

// prefetchSlot brings slot i (the shard's next) and the start of its
// bytes into the cache while other frames go to the other shards: a full
// ring is larger than the cache, and a store to memory that is not cached
// holds up the next locked instruction (the shard's unlock) until the line
// is read in. Called with sh.mu held.
func (sh *shard) prefetchSlot(i int) {
	prefetch(unsafe.Pointer(&sh.slots[i]), unsafe.Sizeof(slot{}))
	if a := sh.arenas[i/bufChunk]; a != nil {
		k := i % bufChunk * sh.slotBytes()
		prefetch(unsafe.Pointer(&a[k]), uintptr(min(sh.slotBytes(), prefetchBytes)))
	}
}

// prefetchBytes is how much of a slot's bytes prefetchSlot asks for: the
// fields and a small frame's head.
const prefetchBytes = 384

// bufChunk is the number of slots whose bytes are allocated together, at
// the first use of one of them: a ring filling up allocates once per
// bufChunk frames, and an unused ring holds no buffers.
const bufChunk = 64

// slotBytes is the room of a slot's bytes.
func (sh *shard) slotBytes() int { return maxTID + maxMethod + maxMsgID + maxCType + sh.wireBytes }

// bytes is slot i's room (its arena allocated at first use). Called with
// sh.mu held.
func (sh *shard) bytes(i int) []byte {
	sz := sh.slotBytes()
	a := sh.arenas[i/bufChunk]
	if a == nil {
		n := min(bufChunk, len(sh.slots)-i/bufChunk*bufChunk)
		a = make([]byte, n*sz)
		sh.arenas[i/bufChunk] = a
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
func (r *shard) index(id string, seq uint64) *sessionIndex {
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
			if n := len(r.free); n > 0 {
				x = r.free[n-1]
				r.free[n-1] = nil
				r.free = r.free[:n-1]
			} else {
				x = &sessionIndex{}
			}
			// A copy: the event's strings are the relay's.
			x.keyBuf = append(x.keyBuf[:0], id...)
			x.key = unsafe.String(unsafe.SliceData(x.keyBuf), len(x.keyBuf))
			r.sessions[x.key] = x
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
		if n <= cap(x.base)/2 && cap(x.base) > 0 {
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

// keyOf is a copy of x's session id, "" for nil (x.key's bytes are
// reused once the session leaves the ring).
func (x *sessionIndex) keyOf() string {
	if x == nil {
		return ""
	}
	return strings.Clone(x.key)
}

// unindex removes the evicted slot s from its sessions' frames: it is
// their oldest, evictions go in seq order.
func (r *shard) unindex(s *slot) {
	// An entry stays in the map while it holds a seq, so the slot's
	// pointers are the map's entries (no lookup by id per eviction).
	for _, x := range [2]*sessionIndex{s.fromX, s.toX} {
		if x == nil || len(x.seqs) == 0 || x.seqs[0] != s.seq {
			continue // cannot happen; a wrong index must not panic the relay
		}
		x.seqs = x.seqs[1:]
		if len(x.seqs) > 8 {
			// The seqs ahead of the front, read by the session's next
			// evictions: their line may have left the cache meanwhile.
			prefetch(unsafe.Pointer(&x.seqs[8]), 8)
		}
		if len(x.seqs) == 0 {
			delete(r.sessions, x.key)
			for i, c := range r.recent {
				if c == x {
					r.recent[i] = nil // a later frame of id must make a new index entry
				}
			}
			if len(r.free) < freeIndexes {
				if cap(x.base) > freeIndexSeqs {
					x.seqs, x.base = nil, nil
				}
				x.seqs = x.base[:0]
				r.free = append(r.free, x)
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
	var out []Frame
	for _, sh := range r.shards {
		out = sh.sessionFrames(id, out)
	}
	if len(r.shards) > 1 {
		slices.SortFunc(out, func(a, b Frame) int { return cmp.Compare(a.Seq, b.Seq) })
	}
	return out
}

func (sh *shard) sessionFrames(id string, out []Frame) []Frame {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	x := sh.sessions[id]
	if x == nil {
		return out
	}
	for _, seq := range x.seqs {
		i := int(seq % uint64(len(sh.slots)))
		if s := &sh.slots[i]; !s.used || s.seq != seq {
			continue
		}
		out = append(out, sh.frame(i))
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
	byID := map[string]Session{}
	for _, sh := range r.shards {
		sh.mu.Lock()
		n := uint64(len(sh.slots))
		for _, x := range sh.sessions {
			first, last := &sh.slots[x.seqs[0]%n], &sh.slots[x.seqs[len(x.seqs)-1]%n]
			// x.key's bytes are reused once it leaves the ring: the
			// result and byID hold a copy (a map assignment stores its key).
			z, ok := byID[x.key]
			key := z.ID
			if !ok {
				key = strings.Clone(x.key)
			}
			y := Session{ID: key, Frames: len(x.seqs), First: time.Unix(0, first.nanos), Last: time.Unix(0, last.nanos)}
			if ok {
				y.Frames += z.Frames
				if z.First.Before(y.First) {
					y.First = z.First
				}
				if z.Last.After(y.Last) {
					y.Last = z.Last
				}
			}
			byID[key] = y
		}
		sh.mu.Unlock()
	}
	out := make([]Session, 0, len(byID))
	for _, x := range byID {
		out = append(out, x)
	}
	sortSessions(out)
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

func (sh *shard) frame(i int) Frame {
	s := &sh.slots[i]
	b := sh.bytes(i)
	e := s.ends
	f := Frame{Seq: s.gseq, Time: time.Unix(0, s.nanos), Dir: s.dir, ConnID: s.conn.ID, Transport: s.conn.Transport,
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
	n := 0
	for _, sh := range r.shards {
		sh.mu.Lock()
		n += int(min(sh.next, uint64(len(sh.slots))))
		sh.mu.Unlock()
	}
	return n
}

// Stats implements sink.Sink: Sent counts frames taken into the ring
// (evicted ones included), Dropped the Puts after Close; busy counts the
// frames that found every shard held and waited for one.
func (r *Ring) Stats() sink.Stats {
	held := uint64(r.Len())
	sessions := 0
	if len(r.shards) == 1 {
		sh := r.shards[0]
		sh.mu.Lock()
		sessions = len(sh.sessions)
		sh.mu.Unlock()
	} else {
		sessions = len(r.Sessions(0))
	}
	busy := r.busy.Load()
	return sink.Stats{Name: r.name, Type: "recent", Sent: r.seq.Load(), Dropped: r.late.Load(), State: sink.StateOK,
		Counters: []sink.Counter{
			{Name: "busy", Value: busy},
			{Name: "evicted", Value: r.evicted.Load()},
			{Name: "frames_held", Value: held},
			{Name: "ignored_events", Value: r.ignored.Load()},
			{Name: "sessions_held", Value: uint64(sessions)},
		}}
}

// Close implements sink.Sink: the ring leaves its Store (the web view no
// longer reads it) and drops later Puts.
func (r *Ring) Close(context.Context) error {
	r.closed.Store(true)
	if r.store != nil {
		r.store.remove(r)
	}
	return nil
}
