package storage

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The read side: the queries msrpctl and the dashboards run over the frames table, built per
// server flavor with every user-given value bound as a parameter, never spliced into the SQL.
//
// On modern servers a value is a server-side query parameter ({name:Type}); 18.16 has no query
// parameters (protocol revision 54412 < 54459), so there it is @name, bound by clickhouse-go
// client-side as a quoted string literal and converted by a function of the server's (toUInt64,
// IPv6StringToNum, ...). Integers that shape the statement (LIMIT) are formatted from Go ints.

// Query is one read statement for one flavor.
type Query struct {
	SQL string
	// Params are the bound values by name, in ClickHouse's text form (before the escaping
	// clickhouse-go applies on the wire).
	Params map[string]string
}

// Args returns Params as clickhouse-go named arguments, for conn.Query(ctx, q.SQL, q.Args()...).
func (q Query) Args() []any {
	names := make([]string, 0, len(q.Params))
	for n := range q.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = ch.Named(n, q.Params[n])
	}
	return args
}

// Queries builds the read statements for a schema. Cluster schemas read through the Distributed
// tables, which have the single-server names.
type Queries struct {
	Schema Schema
}

// builder accumulates one statement's parameters.
type builder struct {
	flavor Flavor
	params map[string]string
}

func (q Queries) builder() *builder {
	return &builder{flavor: q.Schema.Flavor, params: map[string]string{}}
}

// param binds value under name and returns the SQL expression of type typ that reads it. typ is
// one of String, UInt16, UInt64, IPv6, Time; a Time value is a time.Time given to timeParams.
func (b *builder) param(name, typ, value string) string {
	b.params[name] = value
	if b.flavor == Modern {
		return "{" + name + ":" + typ + "}"
	}
	switch typ {
	case "String":
		return "@" + name
	case "IPv6":
		return "IPv6StringToNum(@" + name + ")"
	default:
		return "to" + typ + "(@" + name + ")"
	}
}

func (b *builder) query(sql string) Query { return Query{SQL: sql, Params: b.params} }

// addr16 is the address as IPv6 text (IPv4 as IPv4-mapped), the form both flavors store.
func addr16(a netip.Addr) string { return netip.AddrFrom16(a.As16()).String() }

// timeRange is the condition from <= ts < to; a zero time leaves its side open.
func (b *builder) timeRange(from, to time.Time) string {
	var conds []string
	for _, side := range []struct {
		name string
		t    time.Time
		op   string
	}{{"from", from, ">"}, {"to", to, "<"}} {
		if side.t.IsZero() {
			continue
		}
		t := side.t.UTC().Truncate(time.Microsecond)
		if b.flavor == Modern {
			op := side.op
			if op == ">" {
				op = ">="
			}
			conds = append(conds, fmt.Sprintf("ts %s %s", op,
				b.param(side.name, "DateTime64(6, 'UTC')", t.Format("2006-01-02 15:04:05.000000"))))
			continue
		}
		// 18.16: whole seconds in ts (DateTime), microseconds in ts_us.
		sec := "toDateTime(" + b.param(side.name+"_s", "UInt32", strconv.FormatInt(t.Unix(), 10)) + ")"
		us := b.param(side.name+"_us", "UInt32", strconv.Itoa(t.Nanosecond()/1000))
		usOp := ">="
		if side.op == "<" {
			usOp = "<"
		}
		conds = append(conds, fmt.Sprintf("(ts %s %s OR ts = %s AND ts_us %s %s)", side.op, sec, sec, usOp, us))
	}
	if len(conds) == 0 {
		return "1"
	}
	return strings.Join(conds, " AND ")
}

// frameSelect is the select list every frames query returns, the same aliases on both flavors.
func (q Queries) frameSelect() string {
	ts, lip, rip := "toUnixTimestamp64Micro(ts)", "toString(local_ip)", "toString(remote_ip)"
	if q.Schema.Flavor != Modern {
		ts, lip, rip = "toInt64(toUInt32(ts)) * 1000000 + toInt64(ts_us)", "IPv6NumToString(local_ip)", "IPv6NumToString(remote_ip)"
	}
	return fmt.Sprintf(`SELECT %s AS ts_micros, direction, transport, %s AS local_addr, local_port, %s AS remote_addr,
    remote_port, conn_id, session_id, peer_session_id, correlation_id, transact_id, method, status,
    message_id, byte_range, content_type, auth_user, auth_response, flag, size, body, node
FROM %s`, ts, lip, rip, q.Schema.name(TableFrames))
}

// FrameColumnsOut are the result columns of the frames queries, in order.
var FrameColumnsOut = []string{"ts_micros", "direction", "transport", "local_addr", "local_port", "remote_addr",
	"remote_port", "conn_id", "session_id", "peer_session_id", "correlation_id", "transact_id", "method", "status",
	"message_id", "byte_range", "content_type", "auth_user", "auth_response", "flag", "size", "body", "node"}

const frameOrder = "\nORDER BY ts_micros, node, conn_id, direction"

func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return "\nLIMIT " + strconv.Itoa(n)
}

// SessionFrames are a relay session's frames in time order: the frames it sent and the frames
// sent to it (session_id or peer_session_id).
func (q Queries) SessionFrames(sessionID string, max int) Query {
	b := q.builder()
	p := b.param("session", "String", sessionID)
	return b.query(q.frameSelect() + "\nWHERE session_id = " + p + " OR peer_session_id = " + p + frameOrder + limit(max))
}

// CorrelationFrames are the frames of one correlation id in time order.
func (q Queries) CorrelationFrames(correlationID string, max int) Query {
	b := q.builder()
	return b.query(q.frameSelect() + "\nWHERE correlation_id = " + b.param("correlation", "String", correlationID) +
		frameOrder + limit(max))
}

// MessageFrames are the frames of one message across hops and relays: every frame carrying the
// Message-ID (SEND chunks, REPORTs), and the responses in the same transactions (responses carry
// no Message-ID, RFC 4975 section 7.2), on every node.
func (q Queries) MessageFrames(messageID string, max int) Query {
	b := q.builder()
	p := b.param("message", "String", messageID)
	return b.query(q.frameSelect() + "\nWHERE message_id = " + p +
		"\n    OR method = '' AND (node, conn_id, transact_id) GLOBAL IN (SELECT node, conn_id, transact_id FROM " +
		q.Schema.name(TableFrames) + " WHERE message_id = " + p + ")" + frameOrder + limit(max))
}

// TrafficFilter selects frames for Traffic. Zero fields do not filter.
type TrafficFilter struct {
	Prefix    netip.Prefix // the local or the remote address in it (an address is a /32 or /128)
	LocalPort uint16
	From, To  time.Time // From <= ts < To
	Limit     int
}

// Traffic is the frames of an address, a CIDR or a local port in a time range, in time order.
func (q Queries) Traffic(f TrafficFilter) Query {
	b := q.builder()
	conds := []string{b.timeRange(f.From, f.To)}
	if f.Prefix.IsValid() {
		lo, hi := prefixRange(f.Prefix)
		pl, ph := b.param("lo", "IPv6", addr16(lo)), b.param("hi", "IPv6", addr16(hi))
		conds = append(conds, fmt.Sprintf("(remote_ip >= %s AND remote_ip <= %s OR local_ip >= %s AND local_ip <= %s)", pl, ph, pl, ph))
	}
	if f.LocalPort != 0 {
		conds = append(conds, "local_port = "+b.param("port", "UInt16", strconv.Itoa(int(f.LocalPort))))
	}
	return b.query(q.frameSelect() + "\nWHERE " + strings.Join(conds, " AND ") + frameOrder + limit(f.Limit))
}

// prefixRange is the first and last address of p as 16-byte addresses (IPv4 mapped).
func prefixRange(p netip.Prefix) (lo, hi netip.Addr) {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	a := p.Addr().As16()
	for i := bits; i < 128; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom16(p.Addr().As16()), netip.AddrFrom16(a)
}

// TopTalkers are the remote addresses with the most frames (then bytes) in a time range.
func (q Queries) TopTalkers(from, to time.Time, n int) Query {
	b := q.builder()
	ip := "toString(remote_ip)"
	if q.Schema.Flavor != Modern {
		ip = "IPv6NumToString(remote_ip)"
	}
	return b.query(fmt.Sprintf("SELECT %s AS remote_addr, count() AS frames, sum(size) AS bytes\nFROM %s\nWHERE %s\nGROUP BY remote_addr\nORDER BY frames DESC, bytes DESC, remote_addr%s",
		ip, q.Schema.name(TableFrames), b.timeRange(from, to), limit(n)))
}

// Failures counts failure responses (status 300 and above) by status and direction in a time range.
func (q Queries) Failures(from, to time.Time) Query {
	b := q.builder()
	return b.query(fmt.Sprintf("SELECT status, direction, count() AS responses\nFROM %s\nWHERE %s AND method = '' AND status >= 300\nGROUP BY status, direction\nORDER BY responses DESC, status, direction",
		q.Schema.name(TableFrames), b.timeRange(from, to)))
}

// AuthFailures counts failed AUTH attempts by user name and remote address in a time range: an
// AUTH carrying credentials (an Authorization header, RFC 4976 section 5.1) answered with 400 or
// above. The first AUTH of a client carries none and gets the 401 challenge: not a failure.
func (q Queries) AuthFailures(from, to time.Time) Query {
	b := q.builder()
	ip := "toString(rip)"
	if q.Schema.Flavor != Modern {
		ip = "IPv6NumToString(rip)"
	}
	return b.query(fmt.Sprintf(`SELECT user, %s AS remote_addr, count() AS failures
FROM
(
    SELECT anyIf(auth_user, method = 'AUTH') AS user, anyIf(remote_ip, method = 'AUTH') AS rip,
        maxIf(status, auth_response = 1) AS st
    FROM %s
    WHERE %s AND (method = 'AUTH' OR auth_response = 1)
    GROUP BY node, conn_id, transact_id
)
WHERE st >= 400 AND user != ''
GROUP BY user, remote_addr
ORDER BY failures DESC, user, remote_addr`, ip, q.Schema.name(TableFrames), b.timeRange(from, to)))
}

// Talker is one row of TopTalkers.
type Talker struct {
	Addr          netip.Addr
	Frames, Bytes uint64
}

// Failure is one row of Failures.
type Failure struct {
	Status    uint16
	Direction string
	Responses uint64
}

// AuthFailure is one row of AuthFailures.
type AuthFailure struct {
	User     string
	Addr     netip.Addr
	Failures uint64
}

// Reader runs the queries over a clickhouse-go connection.
type Reader struct {
	conn driver.Conn
	Q    Queries
}

// NewReader reads database over conn, choosing the flavor by the server's version.
func NewReader(conn driver.Conn, database string) (*Reader, error) {
	v, err := conn.ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("storage: server version: %w", err)
	}
	ver := fmt.Sprintf("%d.%d.%d", v.Version.Major, v.Version.Minor, v.Version.Patch)
	return &Reader{conn: conn, Q: Queries{Schema: Schema{Database: database, Flavor: FlavorOf(ver), Topology: Single}}}, nil
}

func (r *Reader) run(ctx context.Context, q Query, scan func(driver.Rows) error) error {
	rows, err := r.conn.Query(ctx, q.SQL, q.Args()...)
	if err != nil {
		return fmt.Errorf("storage: query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("storage: reading a row: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: query: %w", err)
	}
	return nil
}

func (r *Reader) frames(ctx context.Context, q Query) ([]Frame, error) {
	var out []Frame
	err := r.run(ctx, q, func(rows driver.Rows) error {
		var f Frame
		var micros int64
		var lip, rip string
		var authResp uint8
		if err := rows.Scan(&micros, &f.Direction, &f.Transport, &lip, &f.LocalPort, &rip, &f.RemotePort,
			&f.ConnID, &f.SessionID, &f.PeerSessionID, &f.CorrelationID, &f.TransactID, &f.Method, &f.Status,
			&f.MessageID, &f.ByteRange, &f.ContentType, &f.AuthUser, &authResp, &f.Flag, &f.Size, &f.Body,
			&f.Node); err != nil {
			return err
		}
		f.TS = time.UnixMicro(micros).UTC()
		f.AuthResponse = authResp == 1
		var err error
		if f.LocalIP, err = parseAddr(lip); err != nil {
			return err
		}
		if f.RemoteIP, err = parseAddr(rip); err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// parseAddr parses a stored address; IPv4-mapped addresses come back as IPv4.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q: %w", s, err)
	}
	return a.Unmap(), nil
}

// SessionFrames runs Queries.SessionFrames.
func (r *Reader) SessionFrames(ctx context.Context, sessionID string, max int) ([]Frame, error) {
	return r.frames(ctx, r.Q.SessionFrames(sessionID, max))
}

// CorrelationFrames runs Queries.CorrelationFrames.
func (r *Reader) CorrelationFrames(ctx context.Context, correlationID string, max int) ([]Frame, error) {
	return r.frames(ctx, r.Q.CorrelationFrames(correlationID, max))
}

// MessageFrames runs Queries.MessageFrames.
func (r *Reader) MessageFrames(ctx context.Context, messageID string, max int) ([]Frame, error) {
	return r.frames(ctx, r.Q.MessageFrames(messageID, max))
}

// Traffic runs Queries.Traffic.
func (r *Reader) Traffic(ctx context.Context, f TrafficFilter) ([]Frame, error) {
	return r.frames(ctx, r.Q.Traffic(f))
}

// TopTalkers runs Queries.TopTalkers.
func (r *Reader) TopTalkers(ctx context.Context, from, to time.Time, n int) ([]Talker, error) {
	var out []Talker
	err := r.run(ctx, r.Q.TopTalkers(from, to, n), func(rows driver.Rows) error {
		var t Talker
		var ip string
		if err := rows.Scan(&ip, &t.Frames, &t.Bytes); err != nil {
			return err
		}
		var err error
		t.Addr, err = parseAddr(ip)
		out = append(out, t)
		return err
	})
	return out, err
}

// Failures runs Queries.Failures.
func (r *Reader) Failures(ctx context.Context, from, to time.Time) ([]Failure, error) {
	var out []Failure
	err := r.run(ctx, r.Q.Failures(from, to), func(rows driver.Rows) error {
		var f Failure
		if err := rows.Scan(&f.Status, &f.Direction, &f.Responses); err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// AuthFailures runs Queries.AuthFailures.
func (r *Reader) AuthFailures(ctx context.Context, from, to time.Time) ([]AuthFailure, error) {
	var out []AuthFailure
	err := r.run(ctx, r.Q.AuthFailures(from, to), func(rows driver.Rows) error {
		var a AuthFailure
		var ip string
		if err := rows.Scan(&a.User, &ip, &a.Failures); err != nil {
			return err
		}
		var err error
		a.Addr, err = parseAddr(ip)
		out = append(out, a)
		return err
	})
	return out, err
}
