// Package sink is the tracer's plug-in point for destinations: the Sink
// interface, its Stats, the registry of sink kinds and the helpers they share.
//
// A sink kind (HEP, pcap, ClickHouse, ...) lives in its own package, imports
// this package and tracer/event only (plus its own codec), and is registered
// by the program under a type name, the way database/sql drivers are:
//
//	sink.Register("hep", hepsink.Kind{})
//
// The tracer then opens sinks of that type from configuration blocks it never
// interprets: each kind decodes and validates its own keys.
//
// Start-up policy, the same for every kind: a configuration error (a bad
// key or value, a file the configuration names that cannot be read, such as
// a CA, a key or a password file) stops the start, and Decode catches all it
// can offline, so -check-config sees it. A destination that is unreachable
// or unwritable (a collector down, a server refusing, a folder that cannot
// be created or written) does not: the sink starts degraded (State
// StateDegraded, LastError saying why), drops and counts what it cannot hand
// on, and retries on its own, with a growing wait; /readyz and the metrics
// read that state. The relay then runs with what works. A spool folder is
// not a destination but the sink's own state and its promise that nothing is
// lost: one that cannot be opened, or that another relay holds, stops the start.
package sink

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// DefaultQueueSize is the number of records that may wait for a sink when
// its configuration gives no queue size.
const DefaultQueueSize = 8192

// Sink is one destination of traces.
type Sink interface {
	// Put hands the sink one event the rules routed to it. It is called on
	// the relay's path: it never blocks, and it copies what it keeps (the
	// event and its slices are valid only during the call). What does not
	// fit is dropped and counted in Stats().Dropped.
	Put(e *event.Event)
	// Stats returns the sink's counters; safe for concurrent use.
	Stats() Stats
	// Close stops the sink after writing out what is queued; when ctx ends
	// first, what is still queued is dropped and Close returns ctx's error.
	// Put after Close drops (and counts).
	Close(ctx context.Context) error
}

// Sink states.
const (
	StateOK       = "ok"
	StateDegraded = "degraded" // the destination cannot be reached or written now: the last write (or the start's check) failed; LastError says why
)

// Stats are one sink's counters: the common ones and the kind's own.
type Stats struct {
	Name string // the sink's name in the configuration
	Type string // its kind's type name

	Sent       uint64 // records handed on (HEP packets written, pcap records written, rows inserted)
	Dropped    uint64 // records that will never be handed on: queue full, encoding failed, closed, lost in a failed write
	Errors     uint64 // failed writes, dials, encodings
	Queued     int    // records waiting now
	Spooled    uint64 // records waiting on disk (sinks with a spool; 0 otherwise)
	SpoolBytes uint64 // bytes of those

	State     string // StateOK or StateDegraded
	LastError string // the most recent error's text, "" if none

	// Counters are the kind's own counters (e.g. hep "reconnects", pcap
	// "rotations"), sorted by name.
	Counters []Counter
}

// Counter is one kind-specific counter.
type Counter struct {
	Name  string
	Value uint64
}

// Options are what the tracer gives every sink it opens besides the kind's
// own configuration.
type Options struct {
	Name      string // the sink's name in the configuration
	QueueSize int    // records that may wait for the sink; > 0 (the tracer applies DefaultQueueSize)
	Logger    *slog.Logger
}

// Factory is a sink kind.
type Factory interface {
	// Decode reads the kind's own configuration keys through decode, which
	// fills a value the way encoding/json's Unmarshal does from the sink's
	// configuration block (without the common keys type and queue) and
	// rejects unknown keys. Decode then validates what it read and returns
	// the decoded configuration: it does no I/O (it runs for -check-config
	// too). The value must be comparable with reflect.DeepEqual: a sink whose
	// decoded configuration is unchanged is kept across a reload.
	Decode(decode func(v any) error) (any, error)
	// Open starts a sink from a configuration Decode returned. It fails
	// only for a configuration error (see the package doc): a destination
	// it cannot reach or write starts the sink degraded, retrying.
	Open(ctx context.Context, cfg any, o Options) (Sink, error)
}

var (
	regMu    sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes a sink kind available under a type name. It panics if f is
// nil or the name is taken (a programming error, as with database/sql).
func Register(typ string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if f == nil {
		panic("sink: Register of a nil factory for type " + typ)
	}
	if _, dup := registry[typ]; dup {
		panic("sink: Register called twice for type " + typ)
	}
	registry[typ] = f
}

// Lookup returns the kind registered under typ.
func Lookup(typ string) (Factory, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	f, ok := registry[typ]
	return f, ok
}

// Types returns the registered type names, sorted.
func Types() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	ts := make([]string, 0, len(registry))
	for t := range registry {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}
