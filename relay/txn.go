package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// txn is a request the relay forwarded and awaits a response for
// (RFC 4976 §6.4.1, §6.4.3). Its transact-id is the one the relay made for
// the next hop; srcTID is the one the previous hop used.
type txn struct {
	tid    string
	dst    *conn // where the request went
	src    *conn // where it came from
	srcTID string
	method string
	// The relay sessions on the request's sender's and receiver's side
	// (event.FrameInfo), for its responses and REPORTs.
	fromSession, toSession string
	report                 msrp.ReportMode // Failure-Report of a SEND; ReportYes for others
	ourURI                 string          // our URI as the previous hop named it: From-Path of REPORTs
	fromPath               string          // From-Path of the request as received: To-Path of REPORTs
	messageID              string
	byteRange              msrp.ByteRange // as parsed (route.go); hasRange false: the SEND had none
	hasRange               bool
	bodyLen                int64
	flag                   byte
	deadline               time.Time
	sent                   time.Time // when its first byte began to be written (zero while not traced): its response's Paired
	bucket                 int64     // timing-wheel tick of its deadline once armed (0: not armed)
	wprev, wnext           *txn      // its slot's list in the wheel while armed
	done                   bool      // answered or expired; guarded by its txnShard's mu
	sh                     *txnShard // its table shard, set by register (arm and cancel hash no transact-id)

	// A forwarded transaction is pooled (0 allocations per forwarded
	// request): its strings are views of arena, valid until it is
	// recycled. refs counts who may still use it: the forward that made
	// it, and the table until finishLocked hands that reference to whoever
	// took it out (take, cancel, expired, takeAll, takeDst), who releases
	// it when done. The last release recycles it; gen counts recycles.
	arena  []byte
	refs   atomic.Int32
	gen    atomic.Uint32
	pooled bool // from newTxn (a txn literal, e.g. nextHopFailed's, is never recycled)
}

// txnFree recycles transactions: at most 4096 kept, each with an arena
// of usually under 256 bytes (one longer than 4 KiB is not kept).
var txnFree = freeList[txn]{max: 4096, new: func() *txn { return &txn{arena: make([]byte, 0, 256)} }}

// txnsLive counts pooled transactions handed out and not yet recycled
// (tests check it returns to zero: no reference leaked, none released twice).
var txnsLive atomic.Int64

// newTxn makes the transaction of forwarding q with the new transact-id
// tid, from the free list, holding two references (see txn.refs): the caller's
// and the table's (register).
func newTxn(tid []byte, f *msrp.Frame, q *request) *txn {
	x := txnFree.get()
	mid := f.Get(msrp.HdrMessageID)
	a := x.arena[:0]
	a = append(a, tid...)
	a = append(a, f.TransactID...)
	a = append(a, q.top...)
	a = append(a, q.fromPath...)
	a = append(a, mid...)
	if !q.isSEND {
		a = append(a, f.Method...)
	}
	x.arena = a
	arena := bstr(a) // a view: x's strings live as long as x is not recycled
	cut := func(n int) string {
		s := arena[:n]
		arena = arena[n:]
		return s
	}
	x.report, x.method, x.fromSession, x.toSession, x.byteRange, x.hasRange = q.mode, "SEND", q.from, q.to, q.br, q.hasBR
	x.dst, x.src, x.bodyLen, x.flag, x.deadline, x.sent, x.bucket, x.done = nil, nil, 0, 0, time.Time{}, time.Time{}, 0, false
	x.wprev, x.wnext, x.sh = nil, nil, nil
	x.tid = cut(len(tid))
	x.srcTID = cut(len(f.TransactID))
	x.ourURI = cut(len(q.top))
	x.fromPath = cut(len(q.fromPath))
	x.messageID = cut(len(mid))
	if !q.isSEND {
		x.method = arena
		x.report = msrp.ReportYes // responses to other methods are always expected
	}
	x.pooled = true
	x.refs.Store(2)
	txnsLive.Add(1)
	return x
}

// release drops one reference to x; the last one recycles it. Nothing of
// x (its strings included) may be used after the caller's release.
func (x *txn) release() {
	if x == nil || !x.pooled {
		return
	}
	switch n := x.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("relay: transaction released more often than referenced")
	}
	x.gen.Add(1)
	if raceEnabled {
		// Poison the strings: a use after recycling reads garbage, and
		// the race detector reports a read that is not ordered before
		// this write.
		for i := range x.arena {
			x.arena[i] = 'X'
		}
	}
	x.tid, x.srcTID, x.ourURI, x.fromPath, x.messageID, x.method = "", "", "", "", "", ""
	x.fromSession, x.toSession, x.dst, x.src, x.sh = "", "", nil, nil, nil
	if cap(x.arena) > 4<<10 {
		x.arena = nil // a rare long path: its arena is not kept
	}
	txnsLive.Add(-1)
	txnFree.put(x)
}

// txnTable holds forwarded transactions by transact-id, and the armed ones
// in buckets by deadline (a coarse timing wheel): an answered transaction
// leaves its bucket at once, so memory follows the transactions pending,
// not the rate times the timeout. It is split into txnShards shards by a
// hash of the transact-id, each under its own lock: every forwarded
// request and every response takes a shard's lock (register, arm, take),
// and one lock for all of them was a line every core wrote, and where
// hundreds of read loops parked under load with many connections.
type txnTable struct {
	shards [txnShards]txnShard
}

// txnShard is a part of a txnTable: the transactions whose transact-id
// hashes to it.
type txnShard struct {
	mu    sync.Mutex
	byTID map[string]*txn
	// wheel[tick % txnSlots] lists the armed transactions whose deadline
	// falls in that tick or in one a multiple of txnSlots later (a hashed
	// timing wheel: arming and answering are O(1) and allocate nothing).
	wheel [txnSlots]*txn
	swept int64    // the last tick expired has looked at
	_     [64]byte // the next shard's lock on another cache line
}

// txnShards is the number of shards of a txnTable (a power of two).
const txnShards = 16

// txnSlots is the wheel's size: 64 s of 250 ms ticks, beyond the default
// 30 s transaction_timeout; a longer timeout shares slots and is checked by
// its tick when its slot comes round.
const txnSlots = 256

// txnTick is the timing wheel's resolution: deadlines are rounded up to it.
const txnTick = 250 * time.Millisecond

func newTxnTable() *txnTable {
	t := &txnTable{}
	for i := range t.shards {
		t.shards[i].byTID = make(map[string]*txn)
	}
	return t
}

// shardOf is the shard of transact-id tid (FNV-1a: a peer's response may
// carry any bytes; a crafted one only lands in one shard).
func shardOf[S ~string | ~[]byte](t *txnTable, tid S) *txnShard {
	h := uint32(2166136261)
	for i := 0; i < len(tid); i++ {
		h ^= uint32(tid[i])
		h *= 16777619
	}
	return &t.shards[h%txnShards]
}

// shardOfTxn is x's shard: the one register recorded.
func (t *txnTable) shardOfTxn(x *txn) *txnShard {
	if x.sh != nil {
		return x.sh
	}
	return shardOf(t, x.tid)
}

// register makes x findable by its transact-id before the request is
// sent (a next hop may answer before the last byte); arm starts its timer
// once the last byte is out (RFC 4976 §6.4.1).
func (t *txnTable) register(x *txn) {
	sh := shardOf(t, x.tid)
	x.sh = sh
	sh.mu.Lock()
	sh.byTID[x.tid] = x
	sh.mu.Unlock()
	x.pending(1)
}

// pending counts x on its connections (graceful shutdown waits for them):
// on dst a response is awaited, on src one may have to go back.
func (x *txn) pending(d int32) {
	if x.dst != nil {
		x.dst.pendingOut.Add(d)
	}
	if x.src != nil {
		x.src.pendingIn.Add(d)
	}
}

// arm starts x's timer, recording the body length and flag of the chunk
// as sent (for a failure REPORT's Byte-Range, sendReport) under the
// shard's lock: a next hop may answer (take) the moment the end-line is
// out, before the forward returns.
func (t *txnTable) arm(x *txn, deadline time.Time, bodyLen int64, flag byte, sent time.Time) {
	sh := t.shardOfTxn(x)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if x.done {
		return
	}
	x.bodyLen, x.flag, x.sent = bodyLen, flag, sent
	x.deadline = deadline
	x.bucket = (deadline.UnixNano() + int64(txnTick) - 1) / int64(txnTick)
	if x.bucket <= sh.swept {
		x.bucket = sh.swept + 1 // a tick already swept would not be looked at again
	}
	slot := &sh.wheel[x.bucket%txnSlots]
	x.wprev, x.wnext = nil, *slot
	if *slot != nil {
		(*slot).wprev = x
	}
	*slot = x
}

// unwheel takes an armed x out of its slot's list.
func (sh *txnShard) unwheel(x *txn) {
	if x.bucket == 0 {
		return
	}
	if x.wprev != nil {
		x.wprev.wnext = x.wnext
	} else {
		sh.wheel[x.bucket%txnSlots] = x.wnext
	}
	if x.wnext != nil {
		x.wnext.wprev = x.wprev
	}
	x.wprev, x.wnext, x.bucket = nil, nil, 0
}

// finishLocked marks x done and removes it from the shard.
func (sh *txnShard) finishLocked(x *txn) {
	x.done = true
	x.pending(-1)
	delete(sh.byTID, x.tid)
	sh.unwheel(x)
}

// cancel removes x if it is still pending and reports whether it was.
func (t *txnTable) cancel(x *txn) bool {
	sh := t.shardOfTxn(x)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if x.done {
		return false
	}
	sh.finishLocked(x)
	return true
}

// take removes and returns the transaction tid that was sent on c.
func (t *txnTable) take(tid []byte, c *conn) *txn {
	sh := shardOf(t, tid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	x := sh.byTID[string(tid)] // no allocation: map index by converted []byte
	if x == nil || x.dst != c || x.done {
		return nil
	}
	sh.finishLocked(x)
	return x
}

// expired removes and returns the transactions whose deadline has passed.
func (t *txnTable) expired(now time.Time, out []*txn) []*txn {
	for i := range t.shards {
		out = t.shards[i].expired(now, out)
	}
	return out
}

func (sh *txnShard) expired(now time.Time, out []*txn) []*txn {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := now.UnixNano() / int64(txnTick)
	if cur <= sh.swept {
		return out
	}
	first := sh.swept + 1
	if cur-first >= txnSlots {
		first = cur - txnSlots + 1 // a long pause: every slot once
	}
	for k := first; k <= cur; k++ {
		for x := sh.wheel[k%txnSlots]; x != nil; {
			next := x.wnext
			if x.bucket <= cur {
				sh.unwheel(x)
				x.done = true
				x.pending(-1)
				delete(sh.byTID, x.tid)
				out = append(out, x)
			}
			x = next
		}
	}
	sh.swept = cur
	return out
}

// takeAll removes and returns every pending transaction, armed or not
// (a shutdown's end).
func (t *txnTable) takeAll(out []*txn) []*txn {
	for i := range t.shards {
		out = t.shards[i].take(out, nil)
	}
	return out
}

// take removes the shard's pending transactions that were sent on dst
// (nil: all) and appends them to out.
func (sh *txnShard) take(out []*txn, dst *conn) []*txn {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := len(out)
	for _, x := range sh.byTID {
		if dst == nil || x.dst == dst {
			out = append(out, x)
		}
	}
	for _, x := range out[n:] {
		sh.finishLocked(x)
	}
	return out
}

func (t *txnTable) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.byTID)
		sh.mu.Unlock()
	}
	return n
}

// takeDst removes and returns the pending transactions that were sent on
// c: c has closed, so no response to them can come. Only a connection
// that has any (pendingOut) is searched for them; one registered later
// finds c closed before it writes (forward) and fails on its own.
func (t *txnTable) takeDst(c *conn, out []*txn) []*txn {
	if c.pendingOut.Load() == 0 {
		return out
	}
	for i := range t.shards {
		out = t.shards[i].take(out, c)
	}
	return out
}

// failClosed fails at once the transactions awaiting a response on c,
// which closed (issue 15: not at the transaction timeout): a SEND's sender
// gets its failure REPORT, any other request a 408 response, as when the
// forward itself fails.
func (r *Relay) failClosed(c *conn) {
	for _, x := range r.txns.takeDst(c, nil) {
		r.stats.forwardFailed.Add(1)
		r.failTxn(x, 408, "Next hop connection closed", nil)
		x.release()
	}
}
