package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/msrpscope/msrpscope/storage"
)

// Trace queries on ClickHouse, through storage's read API (storage/query.go).

// reader connects to ClickHouse and returns a storage.Reader; close ends
// the connection.
func (e *env) reader(ctx context.Context) (r *storage.Reader, closeFn func(), err error) {
	o := e.opts
	addrs := strings.Split(o.clickhouse, ",")
	for i, a := range addrs {
		addrs[i] = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(addrs[i]); err != nil {
			return nil, nil, usagef("--clickhouse %q: want host:port (the native protocol, 9000)", o.clickhouse)
		}
	}
	var tlsCfg *tls.Config
	if o.chTLS || o.chCACert != "" {
		if tlsCfg, err = (storage.TLSFiles{CA: o.chCACert}).Config(); err != nil {
			return nil, nil, fmt.Errorf("--ch-cacert: %w", err)
		}
	}
	conn, err := ch.Open(&ch.Options{
		Addr:         addrs,
		TLS:          tlsCfg,
		Auth:         ch.Auth{Database: "default", Username: o.chUser, Password: o.chPassword},
		DialTimeout:  min(o.timeout, 5*time.Second),
		ReadTimeout:  o.timeout,
		MaxOpenConns: 1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("ClickHouse at %s: %v", o.clickhouse, err)
	}
	r, err = storage.NewReader(conn, o.database)
	if err != nil {
		_ = conn.Close()
		return nil, nil, e.chError(err)
	}
	return r, func() { _ = conn.Close() }, nil
}

// chError says in one line what went wrong talking to ClickHouse.
func (e *env) chError(err error) error {
	return &plainError{e.chMessage(err).Error()}
}

func (e *env) chMessage(err error) error {
	addr := e.opts.clickhouse
	var ex *ch.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case 81: // UNKNOWN_DATABASE
			return fmt.Errorf("ClickHouse at %s: database %s does not exist (--database; has a clickhouse sink stored anything?)", addr, e.opts.database)
		case 60: // UNKNOWN_TABLE
			return fmt.Errorf("ClickHouse at %s: no traces table in database %s (--database; has a clickhouse sink stored anything?)", addr, e.opts.database)
		case 192, 193, 516: // UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED
			return fmt.Errorf("ClickHouse at %s refused the login (code %d): set --ch-user/--ch-password or MSRPSCOPE_CLICKHOUSE_USER/_PASSWORD", addr, ex.Code)
		}
		return fmt.Errorf("ClickHouse at %s: %s (code %d)", addr, ex.Message, ex.Code)
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return fmt.Errorf("ClickHouse at %s: its certificate is not trusted (%s): give its CA with --ch-cacert", addr, netReason(cve.Err))
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ch.ErrAcquireConnTimeout) {
		return fmt.Errorf("ClickHouse at %s unreachable: %s", addr, netReason(err))
	}
	return fmt.Errorf("ClickHouse at %s: %v", addr, err)
}

// timeArg is an absolute time (RFC 3339) or a duration before now ("1h").
func timeArg(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--%s %s: a duration back from now, not negative", name, s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s %q: want a duration back from now (1h, 30m) or a time (2026-12-01T10:00:00Z)", name, s)
}

// prefixArg is an address (a /32 or /128) or a CIDR.
func prefixArg(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, usagef("trace ip %q: not an address or CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, usagef("trace ip %q: not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func traceQuery(ctx context.Context, e *env, sub string, pos []string, q *traceFlags) error {
	now := time.Now().UTC()
	from, err := timeArg("since", q.since, now)
	if err != nil {
		return err
	}
	to, err := timeArg("until", q.untilT, now)
	if err != nil {
		return err
	}
	if q.limit < 1 {
		return usagef("--limit %d: want 1 or more", q.limit)
	}
	if q.n < 1 {
		return usagef("-n %d: want 1 or more", q.n)
	}
	if q.port > 65535 {
		return usagef("--port %d: not a port", q.port)
	}
	var prefix netip.Prefix
	if sub == "ip" {
		if prefix, err = prefixArg(pos[0]); err != nil {
			return err
		}
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	r, closeFn, err := e.reader(ctx)
	if err != nil {
		return err
	}
	defer closeFn()

	var frames []storage.Frame
	var what map[string]any
	switch sub {
	case "session":
		frames, err = r.SessionFrames(ctx, pos[0], q.limit)
		what = map[string]any{"session": pos[0]}
	case "message":
		frames, err = r.MessageFrames(ctx, pos[0], q.limit)
		what = map[string]any{"message_id": pos[0]}
	case "correlation":
		frames, err = r.CorrelationFrames(ctx, pos[0], q.limit)
		what = map[string]any{"correlation_id": pos[0]}
	case "ip":
		frames, err = r.Traffic(ctx, storage.TrafficFilter{Prefix: prefix, LocalPort: uint16(q.port), From: from, To: to, Limit: q.limit})
		what = map[string]any{"ip": prefix.String(), "since": from.Format(time.RFC3339)}
		if !to.IsZero() {
			what["until"] = to.Format(time.RFC3339)
		}
		if q.port != 0 {
			what["port"] = q.port
		}
	case "top":
		return talkers(ctx, e, r, from, to, q.n)
	case "failures":
		return failures(ctx, e, r, from, to)
	case "auth-failures":
		return authFailures(ctx, e, r, from, to)
	}
	if err != nil {
		return e.chError(err)
	}
	truncated := len(frames) >= q.limit
	if e.opts.json {
		out := make([]frameJSON, len(frames))
		for i, f := range frames {
			out[i] = toJSON(f, q.body)
		}
		what["frames"] = out
		what["truncated"] = truncated
		return writeJSON(e.stdout, what)
	}
	title := sub + " " + pos[0]
	if sub == "ip" {
		title = fmt.Sprintf("ip %s since %s", prefix, from.Format(time.RFC3339))
	}
	if err := ladder(e, title, frames, q.body); err != nil {
		return err
	}
	if truncated {
		fmt.Fprintf(e.stdout, "first %d frames shown (--limit)\n", len(frames))
	}
	return nil
}

// tsLayout is RFC 3339 with always six fractional digits (the stored
// precision), so that the times sort as strings too.
const tsLayout = "2006-01-02T15:04:05.000000Z07:00"

// frameJSON is one stored frame in --json output.
type frameJSON struct {
	TS            string `json:"ts"`
	Node          string `json:"node"`
	Direction     string `json:"direction"`
	Transport     string `json:"transport"`
	Local         string `json:"local"`
	Remote        string `json:"remote"`
	ConnID        uint64 `json:"conn_id"`
	SessionID     string `json:"session_id,omitempty"`
	PeerSessionID string `json:"peer_session_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	TransactID    string `json:"transact_id"`
	Method        string `json:"method,omitempty"`
	Status        uint16 `json:"status,omitempty"`
	MessageID     string `json:"message_id,omitempty"`
	ByteRange     string `json:"byte_range,omitempty"`
	ContentType   string `json:"content_type,omitempty"`
	AuthUser      string `json:"auth_user,omitempty"`
	AuthResponse  bool   `json:"auth_response,omitempty"`
	Flag          string `json:"flag,omitempty"`
	Size          uint64 `json:"size"`
	Body          string `json:"body,omitempty"`
}

func toJSON(f storage.Frame, body bool) frameJSON {
	j := frameJSON{
		TS: f.TS.UTC().Format(tsLayout), Node: f.Node, Direction: f.Direction, Transport: f.Transport,
		Local:  netip.AddrPortFrom(f.LocalIP, f.LocalPort).String(),
		Remote: netip.AddrPortFrom(f.RemoteIP, f.RemotePort).String(),
		ConnID: f.ConnID, SessionID: f.SessionID, PeerSessionID: f.PeerSessionID, CorrelationID: f.CorrelationID,
		TransactID: f.TransactID, Method: f.Method, Status: f.Status, MessageID: f.MessageID, ByteRange: f.ByteRange,
		ContentType: f.ContentType, AuthUser: f.AuthUser, AuthResponse: f.AuthResponse, Flag: f.Flag, Size: f.Size,
	}
	if body {
		j.Body = f.Body
	}
	return j
}

// ladder writes frames in order, one line each: time, direction, the
// sockets as sender -> receiver, method (with the continuation flag) or
// status, transact-id, size, Message-ID. A NODE column appears when the
// frames come from more than one relay.
func ladder(e *env, title string, frames []storage.Frame, body bool) error {
	if len(frames) == 0 {
		fmt.Fprintf(e.stdout, "%s: no frames stored\n", title)
		return nil
	}
	nodes := map[string]bool{}
	days := map[string]bool{}
	for _, f := range frames {
		nodes[f.Node] = true
		days[f.TS.UTC().Format(time.DateOnly)] = true
	}
	layout := "15:04:05.000000"
	date := frames[0].TS.UTC().Format(time.DateOnly) + " UTC"
	if len(days) > 1 {
		layout, date = "2006-01-02 15:04:05.000000", "UTC"
	}
	fmt.Fprintf(e.stdout, "%s: %d frames (%s)\n", title, len(frames), date)
	header := []string{"TIME", "DIR", "CONN", "FROM", "", "TO", "FRAME", "TRANSACT-ID", "SIZE", "MESSAGE-ID"}
	if len(nodes) > 1 {
		header = append([]string{"NODE"}, header...)
	}
	if body {
		header = append(header, "BODY")
	}
	t := newTable(e.stdout, header...)
	for _, f := range frames {
		local := netip.AddrPortFrom(f.LocalIP, f.LocalPort).String()
		remote := netip.AddrPortFrom(f.RemoteIP, f.RemotePort).String()
		from, to := remote, local // in: the peer wrote it to the relay
		if f.Direction == "out" {
			from, to = local, remote
		}
		cols := []string{f.TS.UTC().Format(layout), f.Direction, num(f.ConnID), from, "->", to, frameLabel(f),
			f.TransactID, num(f.Size), f.MessageID}
		if len(nodes) > 1 {
			cols = append([]string{f.Node}, cols...)
		}
		if body {
			cols = append(cols, strconv.Quote(f.Body))
		}
		t.row(cols...)
	}
	return t.flush()
}

// frameLabel is "SEND $" for a request, "200" for a response ("401 AUTH"
// for an answer to AUTH).
func frameLabel(f storage.Frame) string {
	if f.Method == "" {
		s := strconv.Itoa(int(f.Status))
		if f.AuthResponse {
			s += " (AUTH)"
		}
		return s
	}
	if f.Flag != "" {
		return f.Method + " " + f.Flag
	}
	return f.Method
}

func talkers(ctx context.Context, e *env, r *storage.Reader, from, to time.Time, n int) error {
	rows, err := r.TopTalkers(ctx, from, to, n)
	if err != nil {
		return e.chError(err)
	}
	if e.opts.json {
		type row struct {
			Addr   string `json:"addr"`
			Frames uint64 `json:"frames"`
			Bytes  uint64 `json:"bytes"`
		}
		out := make([]row, len(rows))
		for i, x := range rows {
			out[i] = row{x.Addr.String(), x.Frames, x.Bytes}
		}
		return writeJSON(e.stdout, map[string]any{"since": from.Format(time.RFC3339), "talkers": out})
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no frames stored in that time")
		return nil
	}
	t := newTable(e.stdout, "REMOTE", "FRAMES", "BYTES")
	for _, x := range rows {
		t.row(x.Addr.String(), num(x.Frames), num(x.Bytes))
	}
	return t.flush()
}

func failures(ctx context.Context, e *env, r *storage.Reader, from, to time.Time) error {
	rows, err := r.Failures(ctx, from, to)
	if err != nil {
		return e.chError(err)
	}
	if e.opts.json {
		type row struct {
			Status    uint16 `json:"status"`
			Direction string `json:"direction"`
			Responses uint64 `json:"responses"`
		}
		out := make([]row, len(rows))
		for i, x := range rows {
			out[i] = row{x.Status, x.Direction, x.Responses}
		}
		return writeJSON(e.stdout, map[string]any{"since": from.Format(time.RFC3339), "failures": out})
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no failure responses stored in that time")
		return nil
	}
	t := newTable(e.stdout, "STATUS", "DIR", "RESPONSES")
	for _, x := range rows {
		t.row(num(x.Status), x.Direction, num(x.Responses))
	}
	return t.flush()
}

func authFailures(ctx context.Context, e *env, r *storage.Reader, from, to time.Time) error {
	rows, err := r.AuthFailures(ctx, from, to)
	if err != nil {
		return e.chError(err)
	}
	if e.opts.json {
		type row struct {
			User     string `json:"user"`
			Addr     string `json:"addr"`
			Failures uint64 `json:"failures"`
		}
		out := make([]row, len(rows))
		for i, x := range rows {
			out[i] = row{x.User, x.Addr.String(), x.Failures}
		}
		return writeJSON(e.stdout, map[string]any{"since": from.Format(time.RFC3339), "auth_failures": out})
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no failed AUTHs stored in that time")
		return nil
	}
	t := newTable(e.stdout, "USER", "REMOTE", "FAILURES")
	for _, x := range rows {
		t.row(x.User, x.Addr.String(), num(x.Failures))
	}
	return t.flush()
}
