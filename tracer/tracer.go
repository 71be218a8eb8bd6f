// Package tracer owns what happens to the relay's events: the runtime
// switch, rules (filter expression → sinks) and the fan-out to HEP and pcap.
//
// A Tracer implements event.Observer. Observe never blocks the relay: HEP
// packets go to each collector client's bounded queue, pcap records to the
// pcap sink's bounded queue; what does not fit is dropped and counted.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/msrpscope/msrpscope/filters"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// sink is one destination. put is called from Observe: it must not block
// and must copy what it keeps of e.
type sink interface {
	put(e *event.Event)
	stats() SinkStats
	close() error
}

// SinkStats are one sink's counters.
type SinkStats struct {
	Name    string
	Type    string
	Sent    uint64 // records handed on (HEP packets written, pcap records written)
	Dropped uint64 // records lost: queue full, encoding failed, collector unreachable
	Errors  uint64
}

// RuleStats counts what one rule matched.
type RuleStats struct {
	Name    string
	Matched uint64
}

// Stats is a snapshot of the tracer's counters.
type Stats struct {
	Enabled bool
	Rules   []RuleStats
	Sinks   []SinkStats
}

type rule struct {
	name     string
	f        *filters.Filter // nil: match everything
	connOnly bool            // the verdict depends on the connection alone: cached
	bit      uint64          // this rule's bit in connState.verdicts (connOnly rules)
	events   bool
	frames   bool
	sinks    uint64 // bit i: sink i
	matched  atomic.Uint64
}

// Tracer routes events to sinks by rules. Create it with New.
type Tracer struct {
	enabled atomic.Bool
	rules   []*rule
	sinks   []sink
	log     *slog.Logger
	shards  [64]connShard
}

// connState is what the tracer remembers of a live connection: cached
// verdicts of connection-level rules and the TLS peer subject.
type connState struct {
	computed      bool
	verdicts      uint64
	local, remote netip.AddrPort // what the verdicts were computed for
	tlsSubject    string
}

type connShard struct {
	mu sync.Mutex
	m  map[uint64]*connState
}

// New compiles the rules and opens the sinks they use. Sinks no rule names
// are not opened. Errors name the rule or sink and, for expressions, the
// position.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Tracer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tracer{log: log}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*connState)
	}
	// Sinks in a stable order: the ones rules use.
	used := map[string]bool{}
	for i, rc := range cfg.Rules {
		if rc.Name == "" {
			return nil, cfgErr("rule %d: no name", i+1)
		}
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
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) > 64 {
		return nil, cfgErr("more than 64 sinks")
	}
	index := map[string]int{}
	for _, n := range names {
		s, err := openSink(ctx, n, cfg.Sinks[n], log)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("sink %q: %w", n, err)
		}
		index[n] = len(t.sinks)
		t.sinks = append(t.sinks, s)
	}
	nConn := 0
	for _, rc := range cfg.Rules {
		r := &rule{name: rc.Name, events: rc.Events, frames: rc.Frames}
		if rc.Match != "" {
			f, err := filters.Compile(rc.Match)
			if err != nil {
				t.Close()
				return nil, fmt.Errorf("%w: rule %q: %w", ErrConfig, rc.Name, err)
			}
			r.f = f
			r.connOnly = f.Uses().ConnectionOnly()
		}
		if r.connOnly {
			if nConn == 64 {
				r.connOnly = false // more than 64 cacheable rules: evaluate the rest each time
			} else {
				r.bit = 1 << nConn
				nConn++
			}
		}
		for _, s := range rc.To {
			r.sinks |= 1 << index[s]
		}
		t.rules = append(t.rules, r)
	}
	t.enabled.Store(cfg.Enabled)
	return t, nil
}

// CheckConfig compiles the rules and checks the sinks without opening them.
func CheckConfig(cfg Config) error {
	for _, rc := range cfg.Rules {
		if rc.Match == "" {
			continue
		}
		if _, err := filters.Compile(rc.Match); err != nil {
			return fmt.Errorf("%w: rule %q: %w", ErrConfig, rc.Name, err)
		}
	}
	for name, sc := range cfg.Sinks {
		if err := checkSink(sc); err != nil {
			return fmt.Errorf("sink %q: %w", name, err)
		}
	}
	for _, rc := range cfg.Rules {
		for _, s := range rc.To {
			if _, ok := cfg.Sinks[s]; !ok {
				return cfgErr("rule %q: unknown sink %q", rc.Name, s)
			}
		}
	}
	return nil
}

// SetEnabled turns tracing on or off at run time.
func (t *Tracer) SetEnabled(on bool) { t.enabled.Store(on) }

// Enabled reports the switch's state.
func (t *Tracer) Enabled() bool { return t.enabled.Load() }

// Observe implements event.Observer.
func (t *Tracer) Observe(e *event.Event) {
	terminal := e.Kind == event.Closed || e.Kind == event.ConnectFailed
	if !t.enabled.Load() {
		if terminal {
			t.forget(e.Conn.ID)
		}
		return
	}
	// The filters' closures make an Input escape: a pooled one keeps Observe allocation-free.
	in := inputPool.Get().(*filters.Input)
	defer func() {
		*in = filters.Input{} // its strings alias the event's buffers: do not keep them alive
		inputPool.Put(in)
	}()
	fill(in, e)
	verdicts := t.connView(e, in, terminal)
	isFrame := e.Frame != nil
	var mask uint64
	for _, r := range t.rules {
		if isFrame && !r.frames || !isFrame && !r.events {
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
			r.matched.Add(1)
		}
	}
	for i, s := range t.sinks {
		if mask&(1<<i) != 0 {
			s.put(e)
		}
	}
}

var inputPool = sync.Pool{New: func() any { return new(filters.Input) }}

// connView looks up (or creates) the connection's state under its shard
// lock: it records the TLS peer subject, sets in.TLSSubject, and returns the
// connection-level verdicts, evaluated once per connection (again when its
// addresses or TLS subject become known: connect-start has no local
// address yet).
func (t *Tracer) connView(e *event.Event, in *filters.Input, terminal bool) uint64 {
	id := e.Conn.ID
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[id]
	if st == nil {
		if terminal {
			// Nothing to remember: evaluate without caching.
			return t.connVerdicts(in)
		}
		st = &connState{}
		sh.m[id] = st
	}
	if e.Kind == event.TLSHandshake && e.TLS != nil && st.tlsSubject != e.TLS.PeerSubject {
		st.tlsSubject, st.computed = e.TLS.PeerSubject, false
	}
	in.TLSSubject = st.tlsSubject
	if !st.computed || st.local != e.Conn.Local || st.remote != e.Conn.Remote {
		st.verdicts, st.computed = t.connVerdicts(in), true
		st.local, st.remote = e.Conn.Local, e.Conn.Remote
	}
	v := st.verdicts
	if terminal {
		delete(sh.m, id)
	}
	return v
}

func (t *Tracer) connVerdicts(in *filters.Input) uint64 {
	var v uint64
	for _, r := range t.rules {
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
		in.Session = f.SessionID
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
	s := Stats{Enabled: t.enabled.Load()}
	for _, r := range t.rules {
		s.Rules = append(s.Rules, RuleStats{Name: r.name, Matched: r.matched.Load()})
	}
	for _, sk := range t.sinks {
		s.Sinks = append(s.Sinks, sk.stats())
	}
	return s
}

// Close stops every sink, writing out what is queued (pcap) or flushing
// to connected collectors (HEP) as far as their own bounds allow.
func (t *Tracer) Close() error {
	var errs []error
	for _, s := range t.sinks {
		if err := s.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
