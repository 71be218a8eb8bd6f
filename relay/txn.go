package relay

import (
	"sync"
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
	bucket                 int64 // timing-wheel bucket once armed
	done                   bool  // answered or expired; guarded by txnTable.mu
}

// newTxn makes the transaction of forwarding q with the new transact-id
// tid. Its strings are slices of one: two allocations per forwarded request.
func newTxn(tid []byte, f *msrp.Frame, q *request) *txn {
	var ab [1024]byte
	a := append(ab[:0], tid...)
	a = append(a, f.TransactID...)
	a = append(a, q.top...)
	a = append(a, q.fromPath...)
	mid := f.Get(msrp.HdrMessageID)
	a = append(a, mid...)
	if !q.isSEND {
		a = append(a, f.Method...)
	}
	arena := string(a)
	cut := func(n int) string {
		s := arena[:n]
		arena = arena[n:]
		return s
	}
	x := &txn{report: q.mode, method: "SEND", fromSession: q.from, toSession: q.to, byteRange: q.br, hasRange: q.hasBR}
	x.tid = cut(len(tid))
	x.srcTID = cut(len(f.TransactID))
	x.ourURI = cut(len(q.top))
	x.fromPath = cut(len(q.fromPath))
	x.messageID = cut(len(mid))
	if !q.isSEND {
		x.method = arena
		x.report = msrp.ReportYes // responses to other methods are always expected
	}
	return x
}

// txnTable holds forwarded transactions by transact-id, and the armed ones
// in buckets by deadline (a coarse timing wheel): an answered transaction
// leaves its bucket at once, so memory follows the transactions pending,
// not the rate times the timeout.
type txnTable struct {
	mu      sync.Mutex
	byTID   map[string]*txn
	buckets map[int64]map[*txn]struct{} // deadline / txnTick → armed transactions
}

// txnTick is the timing wheel's resolution: deadlines are rounded up to it.
const txnTick = 250 * time.Millisecond

func newTxnTable() *txnTable {
	return &txnTable{byTID: make(map[string]*txn), buckets: make(map[int64]map[*txn]struct{})}
}

// register makes x findable by its transact-id before the request is
// sent (a next hop may answer before the last byte); arm starts its timer
// once the last byte is out (RFC 4976 §6.4.1).
func (t *txnTable) register(x *txn) {
	t.mu.Lock()
	t.byTID[x.tid] = x
	t.mu.Unlock()
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

func (t *txnTable) arm(x *txn, deadline time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x.done {
		return
	}
	x.deadline = deadline
	x.bucket = (deadline.UnixNano() + int64(txnTick) - 1) / int64(txnTick)
	b := t.buckets[x.bucket]
	if b == nil {
		b = make(map[*txn]struct{})
		t.buckets[x.bucket] = b
	}
	b[x] = struct{}{}
}

// finishLocked marks x done and removes it from the table.
func (t *txnTable) finishLocked(x *txn) {
	x.done = true
	x.pending(-1)
	delete(t.byTID, x.tid)
	if b := t.buckets[x.bucket]; b != nil {
		delete(b, x)
	}
}

// cancel removes x if it is still pending and reports whether it was.
func (t *txnTable) cancel(x *txn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x.done {
		return false
	}
	t.finishLocked(x)
	return true
}

// take removes and returns the transaction tid that was sent on c.
func (t *txnTable) take(tid []byte, c *conn) *txn {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.byTID[string(tid)] // no allocation: map index by converted []byte
	if x == nil || x.dst != c || x.done {
		return nil
	}
	t.finishLocked(x)
	return x
}

// expired removes and returns the transactions whose deadline has passed.
func (t *txnTable) expired(now time.Time, out []*txn) []*txn {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := now.UnixNano() / int64(txnTick)
	for k, b := range t.buckets {
		if k > cur {
			continue
		}
		for x := range b {
			x.done = true
			x.pending(-1)
			delete(t.byTID, x.tid)
			out = append(out, x)
		}
		delete(t.buckets, k)
	}
	return out
}

// takeAll removes and returns every pending transaction, armed or not
// (a shutdown's end).
func (t *txnTable) takeAll(out []*txn) []*txn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, x := range t.byTID {
		out = append(out, x)
	}
	for _, x := range out {
		t.finishLocked(x)
	}
	return out
}

func (t *txnTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTID)
}

// takeDst removes and returns the pending transactions that were sent on
// c: c has closed, so no response to them can come. Only a connection
// that has any (pendingOut) is searched for them; one registered later
// finds c closed before it writes (forward) and fails on its own.
func (t *txnTable) takeDst(c *conn, out []*txn) []*txn {
	if c.pendingOut.Load() == 0 {
		return out
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(out)
	for _, x := range t.byTID {
		if x.dst == c {
			out = append(out, x)
		}
	}
	for _, x := range out[n:] {
		t.finishLocked(x)
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
		r.failTxn(x, 408, "Next hop connection closed")
	}
}
