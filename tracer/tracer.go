// Package tracer owns what happens to the relay's events: the runtime
// switch, rules (filter expression → sinks), reloading them, and the fan-out to sinks.
//
// A Tracer implements event.Observer. Observe never blocks the relay: each
// sink's Put copies the record into its own bounded queue or drops it and
// counts (package tracer/sink, where sink kinds register).
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/msrpscope/msrpscope/filters"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// RuleStats counts what one rule matched. The count of a rule, and its
// run-time switch, survive a reload that keeps its name.
type RuleStats struct {
	Name    string
	Enabled bool // its run-time switch (SetRuleEnabled); true unless turned off
	Matched uint64
}

// ErrNoRule is wrapped by SetRuleEnabled's error for a name no rule has.
var ErrNoRule = errors.New("tracer: no such rule")

// ruleState is what a rule's name keeps across reloads: its count and its
// run-time switch. The count is split in padded cells chosen by connection
// id: the read loops of two connections on two cores add to different
// cache lines, and neither invalidates the line off is read from.
type ruleState struct {
	off     atomic.Bool
	_       [cacheLine - 1]byte
	matched [matchCells]paddedCount
}

// cacheLine is the size the counters are padded to (64 bytes on amd64 and
// arm64; a larger line only shares one between cells).
const cacheLine = 64

// matchCells is the number of cells a rule's count is split in.
const matchCells = 8

type paddedCount struct {
	n atomic.Uint64
	_ [cacheLine - 8]byte
}

// count adds one match of an event of connection id.
func (s *ruleState) count(id uint64) { s.matched[id%matchCells].n.Add(1) }

// total is the rule's count.
func (s *ruleState) total() uint64 {
	var n uint64
	for i := range s.matched {
		n += s.matched[i].n.Load()
	}
	return n
}

// Stats is a snapshot of the tracer's counters.
type Stats struct {
	Enabled    bool   // the global switch (Enabled() is also true while a dynamic trace is active)
	Generation uint64 // rule set generation: 1 after New, +1 per successful Reload
	Rules      []RuleStats
	Sinks      []sink.Stats // the sinks of the current rule set, by name
}

// drainTimeout bounds how long a sink removed by Reload may take to write
// out what it has queued before the rest is dropped.
const drainTimeout = 30 * time.Second

type rule struct {
	name     string
	f        *filters.Filter // nil: match everything
	connOnly bool            // the verdict depends on the connection alone: cached
	bit      uint64          // this rule's bit in connState.verdicts (connOnly rules)
	events   bool
	frames   bool
	sinks    uint64     // bit i: ruleSet.sinks[i]
	st       *ruleState // shared by the rules of one name across reloads
}

// openSink is an opened sink with the configuration it was opened from.
type openSink struct {
	name string
	typ  string
	qsz  int
	cfg  any // what the kind's Decode returned
	s    sink.Sink
}

// ruleSet is an immutable compiled configuration: Observe reads it through
// an atomic pointer, Reload replaces it whole.
type ruleSet struct {
	gen   uint64
	rules []*rule
	sinks []*openSink // sorted by name; at most 64
	// filtered: some rule has an expression. When none has, a frame's
	// verdicts need neither its filter input nor its connection's state
	// (the TLS subject and cached verdicts serve expressions only), and
	// Observe skips both.
	filtered bool
}

// Tracer routes events to sinks by rules. Create it with New.
type Tracer struct {
	enabled  atomic.Bool
	switched atomic.Bool // SetEnabled was called: the configuration's enabled no longer applies
	set      atomic.Pointer[ruleSet]
	traces   atomic.Pointer[traceSet]
	// sessionUser resolves a relay session to its user, for user traces.
	sessionUser atomic.Pointer[func(sessionID string) string]
	shards      [64]connShard

	mu       sync.Mutex // serializes Reload and Close; guards the fields below
	rules    map[string]*ruleState
	log      *slog.Logger
	closed   bool
	closing  sync.WaitGroup // removed sinks draining
	traceSeq uint64         // last id AddTrace chose
}

// connState is what the tracer remembers of a live connection: cached
// verdicts of connection-level rules and the TLS peer subject.
type connState struct {
	gen           uint64 // rule set generation the verdicts were computed for; 0: none
	verdicts      uint64
	local, remote netip.AddrPort // what the verdicts were computed for
	tlsSubject    string
}

type connShard struct {
	mu sync.Mutex
	m  map[uint64]*connState
}

// New compiles the rules and opens the sinks they use (sinks no rule names
// are decoded and checked, not opened). Errors name the rule or sink and,
// for expressions, the position. The sinks live until Close; ctx bounds
// their opening only.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Tracer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tracer{log: log, rules: map[string]*ruleState{}}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*connState)
	}
	t.set.Store(&ruleSet{})
	t.traces.Store(noTraces)
	if err := t.Reload(ctx, cfg); err != nil {
		return nil, err
	}
	return t, nil
}

// plan is a checked configuration, before its sinks are opened.
type plan struct {
	rules []Rule
	flts  []*filters.Filter // per rule; nil: match everything
	sinks map[string]decodedSink
	used  []string // sinks some rule names, sorted
}

type decodedSink struct {
	typ string
	qsz int
	cfg any
	f   sink.Factory
}

// check validates cfg without I/O: the rules, their expressions, and every
// sink's block through its kind's Decode. New, Reload and CheckConfig all
// call it.
func check(cfg Config) (*plan, error) {
	p := &plan{rules: cfg.Rules, sinks: map[string]decodedSink{}}
	names := make([]string, 0, len(cfg.Sinks))
	for n := range cfg.Sinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sc := cfg.Sinks[n]
		f, ok := sink.Lookup(sc.Type)
		if !ok {
			return nil, cfgErr("sink %q: unknown type %q (known: %v)", n, sc.Type, sink.Types())
		}
		if sc.Queue < 0 {
			return nil, cfgErr("sink %q: queue must not be negative", n)
		}
		decode := sc.Decode
		if decode == nil {
			decode = func(any) error { return nil }
		}
		dc, err := f.Decode(decode)
		if err != nil {
			return nil, fmt.Errorf("%w: sink %q: %w", ErrConfig, n, err)
		}
		qsz := sc.Queue
		if qsz == 0 {
			qsz = sink.DefaultQueueSize
		}
		p.sinks[n] = decodedSink{typ: sc.Type, qsz: qsz, cfg: dc, f: f}
	}
	used := map[string]bool{}
	seen := map[string]bool{}
	for i, rc := range cfg.Rules {
		if rc.Name == "" {
			return nil, cfgErr("rule %d: no name", i+1)
		}
		if seen[rc.Name] {
			return nil, cfgErr("rule %q: name used twice", rc.Name)
		}
		seen[rc.Name] = true
		if !rc.Events && !rc.Frames {
			return nil, cfgErr("rule %q: neither events nor frames", rc.Name)
		}
		if len(rc.To) == 0 {
			return nil, cfgErr("rule %q: no sinks in to", rc.Name)
		}
		for _, s := range rc.To {
			if _, ok := cfg.Sinks[s]; !ok {
				return nil, cfgErr("rule %q: unknown sink %q", rc.Name, s)
			}
			used[s] = true
		}
		var f *filters.Filter
		if rc.Match != "" {
			var err error
			if f, err = filters.Compile(rc.Match); err != nil {
				return nil, fmt.Errorf("%w: rule %q: %w", ErrConfig, rc.Name, err)
			}
		}
		p.flts = append(p.flts, f)
	}
	if len(used) > 64 {
		return nil, cfgErr("rules use %d sinks, at most 64", len(used))
	}
	for n := range used {
		p.used = append(p.used, n)
	}
	sort.Strings(p.used)
	return p, nil
}

// CheckConfig checks cfg as New and Reload do, without opening anything:
// no files, no network.
func CheckConfig(cfg Config) error {
	_, err := check(cfg)
	return err
}

// Reload replaces the rules and sinks with cfg's. A sink whose type, queue
// and decoded configuration are unchanged is kept (the same instance, its
// queued records untouched); removed sinks are closed in the background
// after writing out what they hold (at most drainTimeout); new ones are
// opened (ctx bounds their opening only). Events observed after Reload
// returns use the new rules. On any error nothing changes. The global
// switch takes cfg.Enabled unless SetEnabled was called since the start.
func (t *Tracer) Reload(ctx context.Context, cfg Config) error {
	p, err := check(cfg)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tracer: reload after close")
	}
	old := t.set.Load()
	kept := map[*openSink]bool{}
	var opened []*openSink
	ns := &ruleSet{gen: old.gen + 1}
	index := map[string]int{}
	for _, n := range p.used {
		d := p.sinks[n]
		var keep *openSink
		for _, o := range old.sinks {
			if o.name == n && o.typ == d.typ && o.qsz == d.qsz && reflect.DeepEqual(o.cfg, d.cfg) {
				keep = o
				kept[o] = true
				break
			}
		}
		if keep == nil {
			s, err := d.f.Open(context.WithoutCancel(ctx), d.cfg, sink.Options{Name: n, QueueSize: d.qsz, Logger: t.log})
			if err == nil {
				err = ctx.Err()
			}
			if err != nil {
				if s != nil {
					_ = s.Close(context.Background())
				}
				for _, o := range opened {
					_ = o.s.Close(context.Background())
				}
				return fmt.Errorf("sink %q: %w", n, err)
			}
			keep = &openSink{name: n, typ: d.typ, qsz: d.qsz, cfg: d.cfg, s: s}
			opened = append(opened, keep)
		}
		index[n] = len(ns.sinks)
		ns.sinks = append(ns.sinks, keep)
	}
	nConn := 0
	for i, rc := range p.rules {
		r := &rule{name: rc.Name, f: p.flts[i], events: rc.Events, frames: rc.Frames}
		ns.filtered = ns.filtered || r.f != nil
		if r.f != nil && r.f.Uses().ConnectionOnly() && nConn < 64 {
			// More than 64 cacheable rules: the rest are evaluated each time.
			r.connOnly, r.bit = true, 1<<nConn
			nConn++
		}
		for _, s := range rc.To {
			r.sinks |= 1 << index[s]
		}
		if r.st = t.rules[rc.Name]; r.st == nil {
			r.st = new(ruleState)
			t.rules[rc.Name] = r.st
		}
		ns.rules = append(ns.rules, r)
	}
	t.set.Store(ns)
	if !t.switched.Load() {
		t.enabled.Store(cfg.Enabled)
	}
	for _, o := range old.sinks {
		if !kept[o] {
			t.drain(o)
		}
	}
	return nil
}

// drain closes a sink no rule set uses any more, in the background: an
// Observe that loaded the old set may still Put to it (the sink drops and
// counts that). Called with t.mu held.
func (t *Tracer) drain(o *openSink) {
	t.closing.Add(1)
	go func() {
		defer t.closing.Done()
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := o.s.Close(ctx); err != nil {
			t.log.Warn("closing a removed trace sink", slog.String("sink", o.name), slog.String("error", err.Error()))
		}
	}()
}

// SetEnabled turns tracing on or off at run time. The state stays until
// the process ends: a reload no longer applies the configuration's enabled.
func (t *Tracer) SetEnabled(on bool) {
	t.switched.Store(true)
	t.enabled.Store(on)
}

// SetRuleEnabled turns one rule of the current configuration on or off at
// run time (a rule that is off matches nothing and counts nothing). The
// state stays with the rule's name until the process ends, across reloads.
// The error wraps ErrNoRule when no current rule has that name.
func (t *Tracer) SetRuleEnabled(name string, on bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.set.Load().rules {
		if r.name == name {
			r.st.off.Store(!on)
			return nil
		}
	}
	return fmt.Errorf("rule %q: %w", name, ErrNoRule)
}

// Enabled reports whether anything may be traced: the global switch is on
// or a dynamic trace is active. The relay asks it before capturing a frame.
func (t *Tracer) Enabled() bool {
	if t.enabled.Load() {
		return true
	}
	ts := t.traces.Load()
	return ts.until != 0 && ts.active(time.Now().UnixNano())
}

// Observe implements event.Observer.
func (t *Tracer) Observe(e *event.Event) {
	terminal := e.Kind == event.Closed || e.Kind == event.ConnectFailed
	ts := t.traces.Load()
	if !t.enabled.Load() {
		if terminal {
			t.forget(e.Conn.ID)
		}
		if ts.until != 0 && ts.active(e.Time.UnixNano()) {
			set := t.set.Load()
			if mask := t.traceMask(set, ts, e); mask != 0 {
				put(set, mask, e)
			}
		}
		return
	}
	set := t.set.Load()
	if e.Frame != nil && !set.filtered {
		// Rules without expressions (the embedded default's "everything"):
		// a frame's verdicts need nothing of it but its kind.
		t.observeUnfiltered(set, ts, e)
		return
	}
	// The filters' closures make an Input escape: a pooled one keeps Observe allocation-free.
	in := inputPool.Get().(*filters.Input)
	defer func() {
		*in = filters.Input{} // its strings alias the event's buffers: do not keep them alive
		inputPool.Put(in)
	}()
	fill(in, e)
	verdicts := t.connView(set, e, in, terminal)
	isFrame := e.Frame != nil
	var mask uint64
	for _, r := range set.rules {
		if isFrame && !r.frames || !isFrame && !r.events || r.st.off.Load() {
			continue
		}
		ok := true
		switch {
		case r.f == nil:
		case r.connOnly:
			ok = verdicts&r.bit != 0
		default:
			ok = r.f.Match(in)
		}
		if ok {
			mask |= r.sinks
			r.st.count(e.Conn.ID)
		}
	}
	if ts.until != 0 {
		mask |= t.traceMask(set, ts, e)
	}
	put(set, mask, e)
}

// observeUnfiltered is Observe for a frame while no rule of set has an
// expression: every frame rule that is on matches.
func (t *Tracer) observeUnfiltered(set *ruleSet, ts *traceSet, e *event.Event) {
	var mask uint64
	for _, r := range set.rules {
		if r.frames && !r.st.off.Load() {
			mask |= r.sinks
			r.st.count(e.Conn.ID)
		}
	}
	if ts.until != 0 {
		mask |= t.traceMask(set, ts, e)
	}
	put(set, mask, e)
}

// put hands e once to each sink of set in mask.
func put(set *ruleSet, mask uint64, e *event.Event) {
	for i, s := range set.sinks {
		if mask&(1<<i) != 0 {
			s.s.Put(e)
		}
	}
}

var inputPool = sync.Pool{New: func() any { return new(filters.Input) }}

// connView looks up (or creates) the connection's state under its shard
// lock: it records the TLS peer subject, sets in.TLSSubject, and returns the
// connection-level verdicts of set, evaluated once per connection and rule
// set (again when its addresses or TLS subject become known: connect-start
// has no local address yet).
func (t *Tracer) connView(set *ruleSet, e *event.Event, in *filters.Input, terminal bool) uint64 {
	id := e.Conn.ID
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[id]
	if st == nil {
		if terminal {
			// Nothing to remember: evaluate without caching.
			return connVerdicts(set, in)
		}
		st = &connState{}
		sh.m[id] = st
	}
	if e.Kind == event.TLSHandshake && e.TLS != nil && st.tlsSubject != e.TLS.PeerSubject {
		st.tlsSubject, st.gen = e.TLS.PeerSubject, 0
	}
	in.TLSSubject = st.tlsSubject
	if st.gen != set.gen || st.local != e.Conn.Local || st.remote != e.Conn.Remote {
		st.verdicts, st.gen = connVerdicts(set, in), set.gen
		st.local, st.remote = e.Conn.Local, e.Conn.Remote
	}
	v := st.verdicts
	if terminal {
		delete(sh.m, id)
	}
	return v
}

func connVerdicts(set *ruleSet, in *filters.Input) uint64 {
	var v uint64
	for _, r := range set.rules {
		if r.connOnly && r.f.Match(in) {
			v |= r.bit
		}
	}
	return v
}

func (t *Tracer) shard(id uint64) *connShard { return &t.shards[id%uint64(len(t.shards))] }

func (t *Tracer) forget(id uint64) {
	sh := t.shard(id)
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
}

// fill sets in from e without copying: the strings alias e's slices,
// which stay valid for this Observe call.
func fill(in *filters.Input, e *event.Event) {
	c := &e.Conn
	in.RemoteIP, in.RemotePort = c.Remote.Addr(), c.Remote.Port()
	in.LocalIP, in.LocalPort = c.Local.Addr(), c.Local.Port()
	in.Transport = c.Transport
	if f := e.Frame; f != nil {
		in.Direction = f.Dir.String()
		in.Event = "frame"
		in.Method = bstr(f.Method)
		in.Status = f.Status
		// The filter language has one session field: the sender's session
		// where it has one here, else the receiver's.
		in.Session = f.FromSession
		if in.Session == "" {
			in.Session = f.ToSession
		}
		in.MessageID = bstr(f.MessageID)
		in.ContentType = bstr(f.ContentType)
		in.Size = f.Size
		return
	}
	in.Direction = c.Dir.String()
	in.Event = e.Kind.String()
}

// bstr views b as a string without copying; valid while b is.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Stats returns the counters.
func (t *Tracer) Stats() Stats {
	set := t.set.Load()
	s := Stats{Enabled: t.enabled.Load(), Generation: set.gen}
	for _, r := range set.rules {
		s.Rules = append(s.Rules, RuleStats{Name: r.name, Enabled: !r.st.off.Load(), Matched: r.st.total()})
	}
	for _, o := range set.sinks {
		s.Sinks = append(s.Sinks, o.s.Stats())
	}
	return s
}

// Close stops every sink, writing out what is queued (pcap) or flushing to
// connected collectors (HEP) within ctx, and waits for sinks removed by
// Reload to finish draining (within ctx). Observe after Close traces nothing;
// Stats then gives the sinks' final counts.
func (t *Tracer) Close(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	// No rules: nothing is put any more; the sinks stay for Stats' final counts.
	old := t.set.Load()
	t.set.Store(&ruleSet{gen: old.gen + 1, sinks: old.sinks})
	errs := make([]error, len(old.sinks))
	var wg sync.WaitGroup
	for i, o := range old.sinks {
		wg.Go(func() {
			if err := o.s.Close(ctx); err != nil {
				errs[i] = fmt.Errorf("sink %q: %w", o.name, err)
			}
		})
	}
	wg.Wait()
	drained := make(chan struct{})
	go func() { t.closing.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("removed sinks still draining: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}
