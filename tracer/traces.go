package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// Trace is a dynamic trace: set at run time (admin API), it sends what it
// matches to its sinks until its deadline, whether the global switch is on
// or off, and survives reloads (until the process ends). Its criteria are
// ANDed; at least one is set.
type Trace struct {
	ID string // "" lets AddTrace choose one
	// Session matches frames whose sender's or receiver's relay session
	// (event.FrameInfo.FromSession, ToSession) is this id.
	Session string
	// User matches frames whose sender's or receiver's relay session
	// belongs to this user, as the function given to SetSessionUser says.
	User string
	// Remote matches connection events and frames of connections whose
	// remote address is in this prefix.
	Remote netip.Prefix
	// Until is when the trace ends (by the events' own times).
	Until time.Time
	// To names the sinks; each must be open (used by a rule of the current
	// configuration). A sink a later reload removes is skipped.
	To []string
}

// TraceStats is an active trace and what it matched.
type TraceStats struct {
	Trace
	Matched uint64
}

type dynTrace struct {
	Trace
	until   int64 // Until in Unix nanoseconds
	matched atomic.Uint64
}

// traceSet is immutable; AddTrace and RemoveTrace replace it (under t.mu).
type traceSet struct {
	list  []*dynTrace
	until int64 // the latest deadline, Unix nanoseconds; 0: no trace
}

var noTraces = &traceSet{}

// AddTrace starts a dynamic trace and returns its id.
func (t *Tracer) AddTrace(tr Trace) (string, error) {
	if tr.Session == "" && tr.User == "" && !tr.Remote.IsValid() {
		return "", errors.New("tracer: a trace needs a session, a user or a remote prefix")
	}
	if tr.User != "" && t.sessionUser.Load() == nil {
		return "", errors.New("tracer: a user trace needs SetSessionUser (no relay sessions known)")
	}
	if !tr.Until.After(time.Now()) {
		return "", errors.New("tracer: a trace's end must be in the future")
	}
	if len(tr.To) == 0 {
		return "", errors.New("tracer: a trace needs sinks")
	}
	tr.Remote = tr.Remote.Masked()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return "", errors.New("tracer: closed")
	}
	set := t.set.Load()
	for _, n := range tr.To {
		if !slices.ContainsFunc(set.sinks, func(o *openSink) bool { return o.name == n }) {
			return "", fmt.Errorf("tracer: trace sink %q is not open (no rule uses it)", n)
		}
	}
	old := t.pruneTraces()
	if tr.ID == "" {
		t.traceSeq++
		tr.ID = "trace-" + strconv.FormatUint(t.traceSeq, 10)
	}
	for _, d := range old.list {
		if d.ID == tr.ID {
			return "", fmt.Errorf("tracer: trace %q exists", tr.ID)
		}
	}
	tr.To = slices.Clone(tr.To)
	d := &dynTrace{Trace: tr, until: tr.Until.UnixNano()}
	t.storeTraces(append(slices.Clone(old.list), d))
	return tr.ID, nil
}

// RemoveTrace ends a dynamic trace; it reports whether it was active.
func (t *Tracer) RemoveTrace(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.pruneTraces()
	i := slices.IndexFunc(old.list, func(d *dynTrace) bool { return d.ID == id })
	if i < 0 {
		return false
	}
	t.storeTraces(slices.Delete(slices.Clone(old.list), i, i+1))
	return true
}

// ListTraces returns the active traces (expired ones are forgotten).
func (t *Tracer) ListTraces() []TraceStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts := t.pruneTraces()
	out := make([]TraceStats, 0, len(ts.list))
	for _, d := range ts.list {
		tr := d.Trace
		tr.To = slices.Clone(tr.To)
		out = append(out, TraceStats{Trace: tr, Matched: d.matched.Load()})
	}
	return out
}

// pruneTraces drops expired traces; called with t.mu held.
func (t *Tracer) pruneTraces() *traceSet {
	ts := t.traces.Load()
	now := time.Now().UnixNano()
	if !slices.ContainsFunc(ts.list, func(d *dynTrace) bool { return d.until <= now }) {
		return ts
	}
	return t.storeTraces(slices.DeleteFunc(slices.Clone(ts.list), func(d *dynTrace) bool { return d.until <= now }))
}

func (t *Tracer) storeTraces(list []*dynTrace) *traceSet {
	ts := &traceSet{list: list}
	for _, d := range list {
		ts.until = max(ts.until, d.until)
	}
	if len(list) == 0 {
		ts = noTraces
	}
	t.traces.Store(ts)
	return ts
}

// SetSessionUser gives the tracer a way to learn which user a relay
// session belongs to (events carry session ids only): user traces call it
// for the frames they examine, and only while one is active. It must be
// safe for concurrent use and not block; "" means unknown.
func (t *Tracer) SetSessionUser(f func(sessionID string) string) {
	t.sessionUser.Store(&f)
}

// active reports whether some trace may still match at now.
func (ts *traceSet) active(now int64) bool { return now < ts.until }

// traceMask returns the sinks of set that the traces matching e name.
func (t *Tracer) traceMask(set *ruleSet, ts *traceSet, e *event.Event) uint64 {
	at := e.Time.UnixNano()
	var mask uint64
	for _, d := range ts.list {
		if at >= d.until {
			continue
		}
		if d.Remote.IsValid() && !d.Remote.Contains(e.Conn.Remote.Addr().Unmap()) {
			continue
		}
		if d.Session != "" && (e.Frame == nil || e.Frame.FromSession != d.Session && e.Frame.ToSession != d.Session) {
			continue
		}
		if d.User != "" && !t.userMatches(e.Frame, d.User) {
			continue
		}
		var m uint64
		for _, n := range d.To {
			for i, o := range set.sinks {
				if o.name == n {
					m |= 1 << i
				}
			}
		}
		if m != 0 {
			mask |= m
			d.matched.Add(1)
		}
	}
	return mask
}

// userMatches reports whether f's sender's or receiver's session belongs
// to user.
func (t *Tracer) userMatches(f *event.FrameInfo, user string) bool {
	p := t.sessionUser.Load()
	if f == nil || p == nil {
		return false
	}
	of := *p
	return f.FromSession != "" && of(f.FromSession) == user || f.ToSession != "" && of(f.ToSession) == user
}
