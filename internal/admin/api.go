package admin

import (
	"context"
	"errors"
	"iter"
	"net/netip"
	"time"
)

// The interfaces below are what the admin API needs; cmd adapts the relay
// and the tracer to them. An error wrapping ErrNotFound becomes 404, one
// wrapping ErrInvalid 400, any other 500.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid request")
)

// Tracing is the tracer's global and per-rule switches and its counters.
type Tracing interface {
	Enabled() bool
	SetEnabled(on bool)
	Rules() []Rule
	// SetRuleEnabled turns one rule on or off; ErrNotFound when no rule
	// has that name.
	SetRuleEnabled(name string, on bool) error
	Sinks() []Sink
}

// Rule is one tracing rule and how often it matched.
type Rule struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	Matched uint64 `json:"matched"`
}

// Sink is one trace sink's state and every counter it has.
type Sink struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	State      string `json:"state"` // e.g. "ok", "degraded", "down"
	LastError  string `json:"last_error,omitempty"`
	Sent       uint64 `json:"sent"`
	Dropped    uint64 `json:"dropped"`
	Errors     uint64 `json:"errors"`
	Queued     int64  `json:"queued"`
	Spooled    uint64 `json:"spooled"`
	SpoolBytes int64  `json:"spool_bytes"`
	// Counters are the sink kind's own (e.g. HEP "datagrams", ClickHouse
	// "batches").
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// Traces are dynamic traces: one session, one user or one remote CIDR
// traced until a deadline, even while the global switch is off.
type Traces interface {
	Traces() []Trace
	// StartTrace starts a trace; ErrInvalid for an unknown sink.
	StartTrace(spec TraceSpec) (Trace, error)
	// StopTrace ends a trace early; ErrNotFound when no trace has that ID.
	StopTrace(id string) error
}

// TraceSpec says what a dynamic trace follows: exactly one of Session,
// User and CIDR.
type TraceSpec struct {
	Session string
	User    string
	CIDR    netip.Prefix // valid when set
	For     time.Duration
	Sinks   []string // empty: every configured sink
}

// Trace is a running dynamic trace.
type Trace struct {
	ID      string    `json:"id"`
	Session string    `json:"session,omitempty"`
	User    string    `json:"user,omitempty"`
	CIDR    string    `json:"cidr,omitempty"`
	Until   time.Time `json:"until"`
	Sinks   []string  `json:"sinks"`
	Matched uint64    `json:"matched"`
}

// Relay lists and kills the relay's sessions and connections and reports
// its statistics.
type Relay interface {
	// Sessions and Connections yield every current one, in any order; the
	// admin API filters, sorts and pages.
	Sessions() iter.Seq[Session]
	Connections() iter.Seq[Connection]
	// KillSession ends a session (and closes nothing else); ErrNotFound
	// when there is none with that ID.
	KillSession(id string) error
	// KillConnection closes a connection; ErrNotFound when there is none.
	KillConnection(id uint64) error
	// Stats is the relay's statistics, marshalled to JSON as they are.
	Stats() any
}

// Session is one relay session (an AUTHed Use-Path, RFC 4976 §5).
type Session struct {
	ID        string         `json:"id"`
	User      string         `json:"user"`
	ConnID    uint64         `json:"connection"`
	Transport string         `json:"transport"`
	Remote    netip.AddrPort `json:"remote"`
	Created   time.Time      `json:"created"`
	Expires   time.Time      `json:"expires"`
	FramesIn  uint64         `json:"frames_in"`
	FramesOut uint64         `json:"frames_out"`
	BytesIn   uint64         `json:"bytes_in"`
	BytesOut  uint64         `json:"bytes_out"`
}

// Connection is one TCP (or TLS) connection of the relay.
type Connection struct {
	ID         uint64         `json:"id"`
	Transport  string         `json:"transport"` // "msrp" or "msrps"
	Direction  string         `json:"direction"` // "in" (accepted) or "out" (dialled)
	Local      netip.AddrPort `json:"local"`
	Remote     netip.AddrPort `json:"remote"`
	TLSSubject string         `json:"tls_subject,omitempty"`
	Created    time.Time      `json:"created"`
	QueueDepth int            `json:"queue_depth"` // frames waiting to be written
	Users      []string       `json:"users,omitempty"`
	Sessions   []string       `json:"sessions,omitempty"`
}

// Reloader re-reads the configuration, as SIGHUP does.
type Reloader interface {
	Reload(ctx context.Context) error
}

// Readiness says why the process is not ready (listeners down, sinks
// failing); an empty answer means ready.
type Readiness interface {
	NotReady() []string
}

// Flows is where the web view reads a session's message flow: ClickHouse
// when configured, else the ring of recent frames (cmd chooses).
type Flows interface {
	// SessionFrames returns the frames the relay session id sent or
	// received (as FromSession or ToSession), in time order; a session
	// with none is an empty answer, not an error.
	SessionFrames(ctx context.Context, id string) ([]FlowFrame, error)
	// Source names where the frames come from ("clickhouse", "recent").
	Source() string
}

// RecentSessions is what a Flows may also offer: the sessions it holds
// frames of, ended ones included, the most recently active first.
type RecentSessions interface {
	RecentSessions(ctx context.Context, max int) ([]FlowSession, error)
}

// FlowSession is one session a Flows holds frames of.
type FlowSession struct {
	ID          string
	Frames      int
	First, Last time.Time
}

// FlowFrame is one traced frame as the web view draws it.
type FlowFrame struct {
	Time      time.Time
	Dir       string // "in": read by the relay (remote → local); "out": written (local → remote)
	ConnID    uint64
	Transport string
	Local     netip.AddrPort // the relay's socket
	Remote    netip.AddrPort // the peer's
	Node      string         // the relay instance (ClickHouse's node column); "" for this one
	Method    string         // "" for a response
	Status    int            // a response's status code
	// ReportStatus is a REPORT's Status header code (RFC 4975 §7.1.2), 0
	// when not known.
	ReportStatus int
	TransactID   string
	MessageID    string
	ContentType  string
	FromSession  string
	ToSession    string
	Flag         string // "$", "+" or "#"
	Size         int64
	Head         string // the frame's first bytes as traced, "" when not kept
}

// Failed reports whether the frame is a failure: a response with status
// 300 or above, or a REPORT whose Status is 300 or above.
func (f FlowFrame) Failed() bool {
	if f.Method == "" {
		return f.Status >= 300
	}
	return f.Method == "REPORT" && f.ReportStatus >= 300
}
