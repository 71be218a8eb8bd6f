// Package storagetest holds the frames the query tests store and read back on 18.16 and on 26.7
// (chDB): a relayed chat session, AUTH challenges and failures, a message across two relays.
package storagetest

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/storage"
)

// Base is the fixture's first frame time.
var Base = time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC)

// Addresses in the fixture.
var (
	Relay    = netip.MustParseAddr("127.0.0.1")
	Alice    = netip.MustParseAddr("10.0.0.1")
	Bob      = netip.MustParseAddr("10.0.0.2")
	Attacker = netip.MustParseAddr("192.0.2.7")
	RelayB   = netip.MustParseAddr("2001:db8::b")
)

// Session ids, correlation ids and the Message-ID the fixture uses. Hostile holds SQL a query
// must treat as a value.
const (
	SessionA = "sA"
	SessionB = "sB"
	MsgID    = "m1"
	Hostile  = `x' OR 1=1 OR session_id != '`
)

// Correlation is the session's correlation id.
var Correlation = string(storage.CorrelationID(nil, SessionA, SessionB, 0))

// Frames returns the fixture: frames of node relay-a (alice on conn 1, bob on conn 2, an attacker
// on conn 3) and of node relay-b (the next hop of message m1 on conn 7), each with its own time.
func Frames() []storage.Frame {
	var out []storage.Frame
	n := 0
	add := func(node string, conn uint64, remote netip.Addr, rport uint16, dir, method string, status uint16, tid string, f storage.Frame) {
		f.TS = Base.Add(time.Duration(n) * 1500 * time.Microsecond)
		if n == 20 {
			// one frame a second later, whole second plus microseconds, for the time range tests
			f.TS = Base.Add(time.Second)
		}
		n++
		f.Node, f.ConnID, f.RemoteIP, f.RemotePort = node, conn, remote, rport
		f.LocalIP, f.LocalPort = Relay, 2855
		if node == "relay-b" {
			f.LocalIP = RelayB
			f.LocalPort = 2856
		}
		f.Direction, f.Method, f.Status, f.TransactID = dir, method, status, tid
		f.Transport = "msrp"
		if method != "" {
			f.Flag = "$"
		}
		if f.CorrelationID == "" {
			f.CorrelationID = string(storage.CorrelationID(nil, f.SessionID, f.PeerSessionID, conn))
		}
		if f.Size == 0 {
			f.Size = 60
		}
		f.BatchID = 1
		out = append(out, f)
	}
	sess := storage.Frame{SessionID: SessionA, PeerSessionID: SessionB}
	resp := storage.Frame{SessionID: SessionB, PeerSessionID: SessionA}
	// AUTH: a challenge, then credentials accepted.
	add("relay-a", 1, Alice, 40001, "in", "AUTH", 0, "a1", storage.Frame{})
	add("relay-a", 1, Alice, 40001, "out", "", 401, "a1", storage.Frame{AuthResponse: true})
	add("relay-a", 1, Alice, 40001, "in", "AUTH", 0, "a2", storage.Frame{AuthUser: "alice"})
	add("relay-a", 1, Alice, 40001, "out", "", 200, "a2", storage.Frame{AuthResponse: true})
	// The attacker: two AUTHs with bad credentials, and one with a hostile user name.
	add("relay-a", 3, Attacker, 5555, "in", "AUTH", 0, "x1", storage.Frame{AuthUser: "bob"})
	add("relay-a", 3, Attacker, 5555, "out", "", 403, "x1", storage.Frame{AuthResponse: true})
	add("relay-a", 3, Attacker, 5555, "in", "AUTH", 0, "x2", storage.Frame{AuthUser: "bob"})
	add("relay-a", 3, Attacker, 5555, "out", "", 401, "x2", storage.Frame{AuthResponse: true})
	add("relay-a", 3, Attacker, 5555, "in", "AUTH", 0, "x3", storage.Frame{AuthUser: Hostile})
	add("relay-a", 3, Attacker, 5555, "out", "", 403, "x3", storage.Frame{AuthResponse: true})
	// alice SENDs m1 to bob through the relay; bob answers 200 and REPORTs.
	m1 := sess
	m1.MessageID, m1.ByteRange, m1.ContentType, m1.Body, m1.Size = MsgID, "1-5/5", "text/plain", "hello", 180
	add("relay-a", 1, Alice, 40001, "in", "SEND", 0, "s1", m1)
	add("relay-a", 1, Alice, 40001, "out", "", 200, "s1", resp)
	add("relay-a", 2, Bob, 40002, "out", "SEND", 0, "t1", m1)
	add("relay-a", 2, Bob, 40002, "in", "", 200, "t1", resp)
	rep := resp
	rep.MessageID, rep.ByteRange, rep.ContentType, rep.Size = MsgID, "1-5/5", "message/imdn+xml", 120
	add("relay-a", 2, Bob, 40002, "in", "REPORT", 0, "r1", rep)
	add("relay-a", 1, Alice, 40001, "out", "REPORT", 0, "r2", rep)
	// m2 to a session that is gone: 481.
	m2 := sess
	m2.MessageID, m2.Size = "m2", 90
	add("relay-a", 1, Alice, 40001, "in", "SEND", 0, "s2", m2)
	add("relay-a", 1, Alice, 40001, "out", "", 481, "s2", resp)
	// m1 at the next relay.
	hop := storage.Frame{SessionID: "sC", PeerSessionID: "sD", MessageID: MsgID, ByteRange: "1-5/5", ContentType: "text/plain", Size: 180}
	add("relay-b", 7, Relay, 2855, "in", "SEND", 0, "h1", hop)
	add("relay-b", 7, Relay, 2855, "out", "", 200, "h1", storage.Frame{SessionID: "sD", PeerSessionID: "sC"})
	// A SEND a second later (frame 20).
	late := sess
	late.MessageID, late.Size = "m3", 70
	add("relay-a", 1, Alice, 40001, "in", "SEND", 0, "s3", late)
	return out
}

// ColumnValue is f's value for an insert column of the schema's flavor, as the writer sends it
// (old servers: ts in whole seconds, ts_us, 16-byte addresses).
func ColumnValue(f storage.Frame, col string, old bool) any {
	switch col {
	case "ts":
		if old {
			return time.Unix(f.TS.Unix(), 0).UTC()
		}
		return f.TS
	case "ts_us":
		return uint32(f.TS.Nanosecond() / 1000)
	case "local_ip", "remote_ip":
		a := f.LocalIP
		if col == "remote_ip" {
			a = f.RemoteIP
		}
		b := a.As16()
		if old {
			return string(b[:])
		}
		return netip.AddrFrom16(b).String()
	case "direction":
		return f.Direction
	case "transport":
		return f.Transport
	case "local_port":
		return f.LocalPort
	case "remote_port":
		return f.RemotePort
	case "conn_id":
		return f.ConnID
	case "session_id":
		return f.SessionID
	case "peer_session_id":
		return f.PeerSessionID
	case "correlation_id":
		return f.CorrelationID
	case "transact_id":
		return f.TransactID
	case "method":
		return f.Method
	case "status":
		return f.Status
	case "message_id":
		return f.MessageID
	case "byte_range":
		return f.ByteRange
	case "content_type":
		return f.ContentType
	case "auth_user":
		return f.AuthUser
	case "auth_response":
		if f.AuthResponse {
			return uint8(1)
		}
		return uint8(0)
	case "flag":
		return f.Flag
	case "size":
		return f.Size
	case "body":
		return f.Body
	case "node":
		return f.Node
	case "batch_id":
		return f.BatchID
	}
	panic("storagetest: unknown frame column " + col)
}

// InsertSQL is a SQL INSERT of frames into a modern schema's frames table, with the writer's
// column list and values (a test-only path for engines the writer cannot reach, like chDB).
func InsertSQL(s storage.Schema, frames []storage.Frame) string {
	cols := s.FrameColumns()
	var b strings.Builder
	b.WriteString(s.InsertFrames())
	b.WriteString(" VALUES")
	for i, f := range frames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n(")
		for j, c := range cols {
			if j > 0 {
				b.WriteString(", ")
			}
			switch v := ColumnValue(f, c, false).(type) {
			case string:
				b.WriteString(quote(v))
			case time.Time:
				b.WriteString(quote(v.UTC().Format("2006-01-02 15:04:05.000000")))
			default:
				fmt.Fprint(&b, v)
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Expectations: what each query must return over frames, computed here in Go.

// Select returns the frames keep accepts, in the queries' order (time, node, conn, direction).
func Select(frames []storage.Frame, keep func(storage.Frame) bool) []storage.Frame {
	var out []storage.Frame
	for _, f := range frames {
		if keep(f) {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.TS.Equal(b.TS) {
			return a.TS.Before(b.TS)
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		if a.ConnID != b.ConnID {
			return a.ConnID < b.ConnID
		}
		return a.Direction < b.Direction
	})
	return out
}

// MessageFrames is the expectation of Queries.MessageFrames: frames with the Message-ID and the
// responses in their transactions.
func MessageFrames(frames []storage.Frame, id string) []storage.Frame {
	type tx struct {
		node string
		conn uint64
		tid  string
	}
	txs := map[tx]bool{}
	for _, f := range frames {
		if f.MessageID == id {
			txs[tx{f.Node, f.ConnID, f.TransactID}] = true
		}
	}
	return Select(frames, func(f storage.Frame) bool {
		return f.MessageID == id || f.Method == "" && txs[tx{f.Node, f.ConnID, f.TransactID}]
	})
}

// InPrefix says whether f's local or remote address is in p.
func InPrefix(f storage.Frame, p netip.Prefix) bool {
	return p.Contains(f.LocalIP) || p.Contains(f.RemoteIP)
}

// Key is a frame's identity for comparisons: what the queries return, printed.
func Key(f storage.Frame) string {
	return fmt.Sprintf("%s %s %d %s %s:%d %s:%d %s/%s/%s %s %s %d %s %s %s %s %v %s %d %q",
		f.TS.UTC().Format("15:04:05.000000"), f.Node, f.ConnID, f.Direction, f.LocalIP, f.LocalPort, f.RemoteIP,
		f.RemotePort, f.SessionID, f.PeerSessionID, f.CorrelationID, f.TransactID, f.Method, f.Status, f.MessageID,
		f.ByteRange, f.ContentType, f.AuthUser, f.AuthResponse, f.Flag, f.Size, f.Body)
}

// Keys is Key of each frame.
func Keys(frames []storage.Frame) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = Key(f)
	}
	return out
}

// Case is one query over the fixture and what it must return, rows printed.
type Case struct {
	Name  string
	Kind  string // frames, talkers, failures, auth: how rows print
	Query storage.Query
	Want  []string
	// Run runs the same query through a Reader (clickhouse-go) and prints its rows.
	Run func(ctx context.Context, r *storage.Reader) ([]string, error)
}

// Cases are the query cases over frames for the queries q builds.
func Cases(q storage.Queries, frames []storage.Frame) []Case {
	var cases []Case
	framesCase := func(name string, query storage.Query, want []storage.Frame, run func(context.Context, *storage.Reader) ([]storage.Frame, error)) {
		cases = append(cases, Case{Name: name, Kind: "frames", Query: query, Want: Keys(want),
			Run: func(ctx context.Context, r *storage.Reader) ([]string, error) {
				got, err := run(ctx, r)
				return Keys(got), err
			}})
	}
	framesCase("session A", q.SessionFrames(SessionA, 0),
		Select(frames, func(f storage.Frame) bool { return f.SessionID == SessionA || f.PeerSessionID == SessionA }),
		func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) {
			return r.SessionFrames(ctx, SessionA, 0)
		})
	framesCase("session A limit 3", q.SessionFrames(SessionA, 3),
		Select(frames, func(f storage.Frame) bool { return f.SessionID == SessionA || f.PeerSessionID == SessionA })[:3],
		func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) {
			return r.SessionFrames(ctx, SessionA, 3)
		})
	framesCase("session hostile", q.SessionFrames(Hostile, 0), nil,
		func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) {
			return r.SessionFrames(ctx, Hostile, 0)
		})
	framesCase("correlation", q.CorrelationFrames(Correlation, 0),
		Select(frames, func(f storage.Frame) bool { return f.CorrelationID == Correlation }),
		func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) {
			return r.CorrelationFrames(ctx, Correlation, 0)
		})
	framesCase("message m1 across relays", q.MessageFrames(MsgID, 0), MessageFrames(frames, MsgID),
		func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) {
			return r.MessageFrames(ctx, MsgID, 0)
		})
	for _, tc := range []struct {
		name string
		f    storage.TrafficFilter
	}{
		{"traffic bob", storage.TrafficFilter{Prefix: netip.PrefixFrom(Bob, 32)}},
		{"traffic 192.0.2.0/24", storage.TrafficFilter{Prefix: netip.MustParsePrefix("192.0.2.0/24")}},
		{"traffic 10.0.0.0/8 port 2855", storage.TrafficFilter{Prefix: netip.MustParsePrefix("10.0.0.0/8"), LocalPort: 2855}},
		{"traffic 2001:db8::/32", storage.TrafficFilter{Prefix: netip.MustParsePrefix("2001:db8::/32")}},
		{"traffic port 2856", storage.TrafficFilter{LocalPort: 2856}},
		{"traffic from frame 1", storage.TrafficFilter{From: Base.Add(1500 * time.Microsecond), To: Base.Add(4500 * time.Microsecond)}},
		{"traffic from the late second", storage.TrafficFilter{From: Base.Add(time.Second)}},
		{"traffic before the late second", storage.TrafficFilter{To: Base.Add(time.Second), Limit: 100}},
		{"traffic 1us after the late second", storage.TrafficFilter{From: Base.Add(time.Second + time.Microsecond)}},
	} {
		f := tc.f
		want := Select(frames, func(fr storage.Frame) bool {
			return (!f.Prefix.IsValid() || InPrefix(fr, f.Prefix)) && (f.LocalPort == 0 || fr.LocalPort == f.LocalPort) &&
				(f.From.IsZero() || !fr.TS.Before(f.From)) && (f.To.IsZero() || fr.TS.Before(f.To))
		})
		framesCase(tc.name, q.Traffic(f), want,
			func(ctx context.Context, r *storage.Reader) ([]storage.Frame, error) { return r.Traffic(ctx, f) })
	}

	from, to := Base, Base.Add(time.Hour)
	cases = append(cases, Case{Name: "top talkers", Kind: "talkers", Query: q.TopTalkers(from, to, 3), Want: talkers(frames, 3),
		Run: func(ctx context.Context, r *storage.Reader) ([]string, error) {
			ts, err := r.TopTalkers(ctx, from, to, 3)
			var out []string
			for _, t := range ts {
				out = append(out, fmt.Sprintf("%s %d %d", t.Addr, t.Frames, t.Bytes))
			}
			return out, err
		}})
	cases = append(cases, Case{Name: "failures", Kind: "failures", Query: q.Failures(from, to), Want: failures(frames),
		Run: func(ctx context.Context, r *storage.Reader) ([]string, error) {
			fs, err := r.Failures(ctx, from, to)
			var out []string
			for _, f := range fs {
				out = append(out, fmt.Sprintf("%d %s %d", f.Status, f.Direction, f.Responses))
			}
			return out, err
		}})
	cases = append(cases, Case{Name: "auth failures", Kind: "auth", Query: q.AuthFailures(from, to), Want: authFailures(frames),
		Run: func(ctx context.Context, r *storage.Reader) ([]string, error) {
			as, err := r.AuthFailures(ctx, from, to)
			var out []string
			for _, a := range as {
				out = append(out, fmt.Sprintf("%s %s %d", a.User, a.Addr, a.Failures))
			}
			return out, err
		}})
	return cases
}

// stored is an address as both flavors print it (IPv4 mapped), the queries' tie-break order.
func stored(a netip.Addr) string { return netip.AddrFrom16(a.As16()).String() }

func talkers(frames []storage.Frame, n int) []string {
	type agg struct {
		addr          netip.Addr
		frames, bytes uint64
	}
	m := map[netip.Addr]*agg{}
	for _, f := range frames {
		a := m[f.RemoteIP]
		if a == nil {
			a = &agg{addr: f.RemoteIP}
			m[f.RemoteIP] = a
		}
		a.frames++
		a.bytes += f.Size
	}
	var list []*agg
	for _, a := range m {
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if a.frames != b.frames {
			return a.frames > b.frames
		}
		if a.bytes != b.bytes {
			return a.bytes > b.bytes
		}
		return stored(a.addr) < stored(b.addr)
	})
	var out []string
	for i, a := range list {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("%s %d %d", a.addr, a.frames, a.bytes))
	}
	return out
}

func failures(frames []storage.Frame) []string {
	type key struct {
		status uint16
		dir    string
	}
	m := map[key]uint64{}
	for _, f := range frames {
		if f.Method == "" && f.Status >= 300 {
			m[key{f.Status, f.Direction}]++
		}
	}
	var keys []key
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if m[a] != m[b] {
			return m[a] > m[b]
		}
		if a.status != b.status {
			return a.status < b.status
		}
		return a.dir < b.dir
	})
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%d %s %d", k.status, k.dir, m[k]))
	}
	return out
}

func authFailures(frames []storage.Frame) []string {
	type tx struct {
		node string
		conn uint64
		tid  string
	}
	type attempt struct {
		user   string
		addr   netip.Addr
		status uint16
	}
	txs := map[tx]*attempt{}
	for _, f := range frames {
		k := tx{f.Node, f.ConnID, f.TransactID}
		a := txs[k]
		if a == nil {
			a = &attempt{}
			txs[k] = a
		}
		if f.Method == "AUTH" {
			a.user, a.addr = f.AuthUser, f.RemoteIP
		}
		if f.AuthResponse && f.Status > a.status {
			a.status = f.Status
		}
	}
	type key struct {
		user string
		addr netip.Addr
	}
	m := map[key]uint64{}
	for _, a := range txs {
		if a.status >= 400 && a.user != "" {
			m[key{a.user, a.addr}]++
		}
	}
	var keys []key
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if m[a] != m[b] {
			return m[a] > m[b]
		}
		if a.user != b.user {
			return a.user < b.user
		}
		return stored(a.addr) < stored(b.addr)
	})
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %s %d", k.user, k.addr, m[k]))
	}
	return out
}

// EventsInsertSQL is a SQL INSERT of connection events into a modern schema's events table,
// with the writer's column list and values.
func EventsInsertSQL(s storage.Schema, events []storage.ConnEvent) string {
	var b strings.Builder
	b.WriteString(s.InsertEvents())
	b.WriteString(" VALUES")
	for i, e := range events {
		if i > 0 {
			b.WriteByte(',')
		}
		vals := map[string]string{
			"ts": quote(e.TS.UTC().Format("2006-01-02 15:04:05.000000")), "event": quote(e.Event), "reason": quote(e.Reason),
			"error": quote(e.Error), "direction": quote(e.Direction), "transport": quote(e.Transport),
			"local_ip": quote(stored(e.LocalIP)), "local_port": fmt.Sprint(e.LocalPort),
			"remote_ip": quote(stored(e.RemoteIP)), "remote_port": fmt.Sprint(e.RemotePort),
			"conn_id": fmt.Sprint(e.ConnID), "tls_subject": quote(e.TLSSubject), "node": quote(e.Node),
			"batch_id": fmt.Sprint(e.BatchID),
		}
		b.WriteString("\n(")
		for j, c := range s.EventColumns() {
			if j > 0 {
				b.WriteString(", ")
			}
			v, ok := vals[c]
			if !ok {
				panic("storagetest: unknown event column " + c)
			}
			b.WriteString(v)
		}
		b.WriteByte(')')
	}
	return b.String()
}
