package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/internal/admin"
)

// The admin API's commands. Their JSON output is the API's answer as it
// is (docs/ADMIN.md); tables show the same fields.

func cmdTrace(ctx context.Context, e *env, args []string) error {
	var q traceFlags
	cl, err := e.parse(args, -1, q.define)
	if err != nil {
		return err
	}
	if len(cl.pos) == 0 {
		return usagef("trace: say status, on, off, list, stop, session, message, correlation, ip, top, failures or auth-failures")
	}
	sub, pos := cl.pos[0], cl.pos[1:]
	allowed, ok := traceSubFlags[sub]
	if !ok {
		return usagef("trace: unknown subcommand %q", sub)
	}
	var bad []string
	cl.fs.Visit(func(f *flag.Flag) {
		if q.own(f.Name) && !strings.Contains(" "+allowed+" ", " "+f.Name+" ") {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return usagef("trace %s does not take %s", sub, strings.Join(bad, ", "))
	}
	needArgs := map[string]int{"stop": 1, "session": 1, "message": 1, "correlation": 1, "ip": 1}[sub]
	if len(pos) != needArgs {
		if needArgs == 0 {
			return usagef("trace %s: unexpected arguments %q", sub, pos)
		}
		return usagef("trace %s: want %d argument, got %d", sub, needArgs, len(pos))
	}
	switch sub {
	case "status":
		return traceStatus(ctx, e)
	case "on", "off":
		if q.session != "" || q.user != "" || q.cidr != "" {
			if sub == "off" {
				return usagef("trace off switches the global switch; end a dynamic trace with trace stop ID")
			}
			return traceStart(ctx, e, &q)
		}
		if q.forSet || len(q.to) > 0 {
			return usagef("trace on --for/--to: give --session, --user or --cidr")
		}
		return traceSwitch(ctx, e, sub == "on")
	case "list":
		return traceList(ctx, e)
	case "stop":
		return traceStop(ctx, e, pos[0])
	}
	return traceQuery(ctx, e, sub, pos, &q)
}

// traceFlags are the flags of every trace subcommand.
type traceFlags struct {
	session, user, cidr string
	forDur              time.Duration
	forSet              bool
	to                  []string
	since, untilT       string
	port                uint
	limit, n            int
	body                bool
}

// traceSubFlags are the flags each trace subcommand takes (beyond the
// common ones).
var traceSubFlags = map[string]string{
	"status": "", "off": "", "list": "", "stop": "",
	"on":            "session user cidr for to",
	"session":       "limit body",
	"message":       "limit body",
	"correlation":   "limit body",
	"ip":            "since until port limit body",
	"top":           "since until n",
	"failures":      "since until",
	"auth-failures": "since until",
}

func (q *traceFlags) own(name string) bool {
	switch name {
	case "session", "user", "cidr", "for", "to", "since", "until", "port", "limit", "n", "body":
		return true
	}
	return false
}

func (q *traceFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&q.session, "session", "", "")
	fs.StringVar(&q.user, "user", "", "")
	fs.StringVar(&q.cidr, "cidr", "", "")
	fs.Func("for", "", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		q.forDur, q.forSet = d, true
		return nil
	})
	fs.Func("to", "", func(s string) error {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				q.to = append(q.to, p)
			}
		}
		return nil
	})
	fs.StringVar(&q.since, "since", "1h", "")
	fs.StringVar(&q.untilT, "until", "", "")
	fs.UintVar(&q.port, "port", 0, "")
	fs.IntVar(&q.limit, "limit", 10000, "")
	fs.IntVar(&q.n, "n", 10, "")
	fs.BoolVar(&q.body, "body", false, "")
}

// api makes one admin API request within --timeout; a 2xx answer is
// returned and, when v is not nil, decoded into it.
func (e *env) api(ctx context.Context, method, path string, body, v any) ([]byte, error) {
	c, err := e.admin()
	if err != nil {
		return nil, err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	raw, err := c.do(ctx, method, path, body)
	if err != nil {
		return raw, err
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("admin API at %s: %s %s: bad JSON in the answer: %v", c.base, method, path, err)
		}
	}
	return raw, nil
}

// answer prints the API's answer as it is with --json, else as table does.
func (e *env) answer(raw []byte, table func() error) error {
	if e.opts.json {
		return writeRawJSON(e.stdout, raw)
	}
	return table()
}

func traceStatus(ctx context.Context, e *env) error {
	var st admin.TracingStatus
	raw, err := e.api(ctx, http.MethodGet, "/api/v1/tracing", nil, &st)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error {
		fmt.Fprintf(e.stdout, "tracing: %s\n\n", onOff(st.Enabled))
		if err := rulesTable(e, st.Rules); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout)
		return tracesTable(e, st.Traces)
	})
}

func traceSwitch(ctx context.Context, e *env, on bool) error {
	var r struct {
		Enabled bool `json:"enabled"`
	}
	raw, err := e.api(ctx, http.MethodPost, "/api/v1/tracing/"+onOff(on), nil, &r)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error {
		_, err := fmt.Fprintf(e.stdout, "tracing: %s\n", onOff(r.Enabled))
		return err
	})
}

func traceStart(ctx context.Context, e *env, q *traceFlags) error {
	n := 0
	for _, v := range []string{q.session, q.user, q.cidr} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return usagef("trace on: give one of --session, --user and --cidr")
	}
	body := map[string]any{}
	switch {
	case q.session != "":
		body["session"] = q.session
	case q.user != "":
		body["user"] = q.user
	default:
		body["cidr"] = q.cidr
	}
	if q.forSet {
		body["for"] = q.forDur.String()
	}
	if len(q.to) > 0 {
		body["sinks"] = q.to
	}
	var tr admin.Trace
	raw, err := e.api(ctx, http.MethodPost, "/api/v1/traces", body, &tr)
	if err != nil {
		return fmt.Errorf("trace on: %w", err)
	}
	return e.answer(raw, func() error { return tracesTable(e, []admin.Trace{tr}) })
}

func traceList(ctx context.Context, e *env) error {
	var r struct {
		Traces []admin.Trace `json:"traces"`
	}
	raw, err := e.api(ctx, http.MethodGet, "/api/v1/traces", nil, &r)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error { return tracesTable(e, r.Traces) })
}

func traceStop(ctx context.Context, e *env, id string) error {
	if _, err := e.api(ctx, http.MethodDelete, "/api/v1/traces/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("trace stop %s: %w", id, err)
	}
	if e.opts.json {
		return writeJSON(e.stdout, map[string]string{"stopped": id})
	}
	_, err := fmt.Fprintf(e.stdout, "trace %s stopped\n", id)
	return err
}

func tracesTable(e *env, traces []admin.Trace) error {
	if len(traces) == 0 {
		fmt.Fprintln(e.stdout, "no dynamic traces")
		return nil
	}
	now := time.Now()
	t := newTable(e.stdout, "TRACE", "FOLLOWS", "UNTIL", "LEFT", "SINKS", "MATCHED")
	for _, tr := range traces {
		var follows string
		switch {
		case tr.Session != "":
			follows = "session " + tr.Session
		case tr.User != "":
			follows = "user " + tr.User
		case tr.CIDR != "":
			follows = "cidr " + tr.CIDR
		}
		t.row(tr.ID, follows, ts(tr.Until), until(tr.Until, now), strings.Join(tr.Sinks, ","), num(tr.Matched))
	}
	return t.flush()
}

func rulesTable(e *env, rules []admin.Rule) error {
	if len(rules) == 0 {
		fmt.Fprintln(e.stdout, "no rules")
		return nil
	}
	t := newTable(e.stdout, "RULE", "ENABLED", "MATCHED")
	for _, r := range rules {
		t.row(r.Name, onOff(r.Enabled), num(r.Matched))
	}
	return t.flush()
}

func cmdRules(ctx context.Context, e *env, args []string) error {
	if _, err := e.parse(args, 0, nil); err != nil {
		return err
	}
	var r struct {
		Rules []admin.Rule `json:"rules"`
	}
	raw, err := e.api(ctx, http.MethodGet, "/api/v1/rules", nil, &r)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error { return rulesTable(e, r.Rules) })
}

func cmdRule(ctx context.Context, e *env, args []string) error {
	cl, err := e.parse(args, 2, nil)
	if err != nil {
		return err
	}
	name, sw := cl.pos[0], cl.pos[1]
	if sw != "on" && sw != "off" {
		return usagef("rule %s: say on or off, not %q", name, sw)
	}
	raw, err := e.api(ctx, http.MethodPost, "/api/v1/rules/"+url.PathEscape(name)+"/"+sw, nil, nil)
	if err != nil {
		return fmt.Errorf("rule %s: %w", name, err)
	}
	return e.answer(raw, func() error {
		_, err := fmt.Fprintf(e.stdout, "rule %s: %s\n", name, sw)
		return err
	})
}

func cmdSinks(ctx context.Context, e *env, args []string) error {
	if _, err := e.parse(args, 0, nil); err != nil {
		return err
	}
	var r struct {
		Sinks []admin.Sink `json:"sinks"`
	}
	raw, err := e.api(ctx, http.MethodGet, "/api/v1/sinks", nil, &r)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error {
		if len(r.Sinks) == 0 {
			_, err := fmt.Fprintln(e.stdout, "no sinks")
			return err
		}
		t := newTable(e.stdout, "SINK", "TYPE", "STATE", "SENT", "DROPPED", "ERRORS", "QUEUED", "SPOOLED", "SPOOL-BYTES", "COUNTERS", "LAST-ERROR")
		for _, s := range r.Sinks {
			t.row(s.Name, s.Type, s.State, num(s.Sent), num(s.Dropped), num(s.Errors), num(s.Queued), num(s.Spooled),
				num(s.SpoolBytes), counters(s.Counters), s.LastError)
		}
		return t.flush()
	})
}

// counters is a sink kind's own counters as k=v, sorted.
func counters(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// listFlags are the filters and paging of sessions and connections.
type listFlags struct {
	user, session, remote, transport, cursor string
	limit                                    int
	all                                      bool
}

func (l *listFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&l.user, "user", "", "")
	fs.StringVar(&l.session, "session", "", "")
	fs.StringVar(&l.remote, "remote", "", "")
	fs.StringVar(&l.transport, "transport", "", "")
	fs.StringVar(&l.cursor, "cursor", "", "")
	fs.IntVar(&l.limit, "limit", 0, "")
	fs.BoolVar(&l.all, "all", false, "")
}

func (l *listFlags) query(cursor string) string {
	v := url.Values{}
	for k, s := range map[string]string{"user": l.user, "session": l.session, "remote": l.remote,
		"transport": l.transport, "cursor": cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if l.limit > 0 {
		v.Set("limit", strconv.Itoa(l.limit))
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// listPage is a sessions or connections answer.
type listPage[T any] struct {
	Items []T    `json:"items"`
	Total int    `json:"total"`
	Next  string `json:"next,omitempty"`
}

// fetchList gets one page, or with --all every page from --cursor on.
func fetchList[T any](ctx context.Context, e *env, path string, args []string) (*listFlags, listPage[T], error) {
	var l listFlags
	var out listPage[T]
	if _, err := e.parse(args, 0, l.define); err != nil {
		return nil, out, err
	}
	ctx, cancel := e.withTimeout(ctx) // bounds every page together
	defer cancel()
	cursor := l.cursor
	for {
		var p listPage[T]
		if _, err := e.api(ctx, http.MethodGet, path+l.query(cursor), nil, &p); err != nil {
			return nil, out, err
		}
		out.Items = append(out.Items, p.Items...)
		out.Total, out.Next = p.Total, p.Next
		if !l.all || p.Next == "" {
			break
		}
		if p.Next == cursor {
			return nil, out, fmt.Errorf("GET %s: the API gave the same cursor %q twice", path, cursor)
		}
		cursor = p.Next
	}
	if out.Items == nil {
		out.Items = []T{}
	}
	return &l, out, nil
}

// pageFooter says how much of the list was shown and how to get the rest.
func pageFooter(e *env, shown, total int, next, what string) {
	if next != "" {
		fmt.Fprintf(e.stdout, "%d of %d %s; next page: --cursor %s (or --all)\n", shown, total, what, next)
	}
}

func cmdSessions(ctx context.Context, e *env, args []string) error {
	_, p, err := fetchList[admin.Session](ctx, e, "/api/v1/sessions", args)
	if err != nil {
		return err
	}
	if e.opts.json {
		return writeJSON(e.stdout, p)
	}
	if len(p.Items) == 0 {
		fmt.Fprintln(e.stdout, "no sessions")
		return nil
	}
	now := time.Now()
	t := newTable(e.stdout, "SESSION", "USER", "CONN", "TRANSPORT", "REMOTE", "AGE", "EXPIRES-IN", "FRAMES-IN", "FRAMES-OUT", "BYTES-IN", "BYTES-OUT")
	for _, s := range p.Items {
		t.row(s.ID, s.User, num(s.ConnID), s.Transport, s.Remote.String(), age(s.Created, now), until(s.Expires, now),
			num(s.FramesIn), num(s.FramesOut), num(s.BytesIn), num(s.BytesOut))
	}
	if err := t.flush(); err != nil {
		return err
	}
	pageFooter(e, len(p.Items), p.Total, p.Next, "sessions")
	return nil
}

func cmdConnections(ctx context.Context, e *env, args []string) error {
	_, p, err := fetchList[admin.Connection](ctx, e, "/api/v1/connections", args)
	if err != nil {
		return err
	}
	if e.opts.json {
		return writeJSON(e.stdout, p)
	}
	if len(p.Items) == 0 {
		fmt.Fprintln(e.stdout, "no connections")
		return nil
	}
	now := time.Now()
	t := newTable(e.stdout, "CONN", "TRANSPORT", "DIR", "LOCAL", "REMOTE", "TLS-SUBJECT", "AGE", "QUEUE", "USERS", "SESSIONS")
	for _, c := range p.Items {
		t.row(num(c.ID), c.Transport, c.Direction, c.Local.String(), c.Remote.String(), c.TLSSubject, age(c.Created, now),
			num(c.QueueDepth), strings.Join(c.Users, ","), strings.Join(c.Sessions, ","))
	}
	if err := t.flush(); err != nil {
		return err
	}
	pageFooter(e, len(p.Items), p.Total, p.Next, "connections")
	return nil
}

func cmdKill(ctx context.Context, e *env, args []string) error {
	cl, err := e.parse(args, 2, nil)
	if err != nil {
		return err
	}
	what, id := cl.pos[0], cl.pos[1]
	var path string
	switch what {
	case "session":
		path = "/api/v1/sessions/" + url.PathEscape(id)
	case "connection", "conn":
		what = "connection"
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			return usagef("kill connection: %q is not a connection ID (a number; see msrpctl connections)", id)
		}
		path = "/api/v1/connections/" + id
	default:
		return usagef("kill: say session ID or connection ID, not %q", what)
	}
	if _, err := e.api(ctx, http.MethodDelete, path, nil, nil); err != nil {
		return fmt.Errorf("kill %s %s: %w", what, id, err)
	}
	if e.opts.json {
		return writeJSON(e.stdout, map[string]string{"killed": what, "id": id})
	}
	fmt.Fprintf(e.stdout, "%s %s killed\n", what, id)
	return nil
}

func cmdStats(ctx context.Context, e *env, args []string) error {
	if _, err := e.parse(args, 0, nil); err != nil {
		return err
	}
	raw, err := e.api(ctx, http.MethodGet, "/api/v1/stats", nil, nil)
	if err != nil {
		return err
	}
	return e.answer(raw, func() error {
		kv, err := orderedObject(raw)
		if err != nil {
			return fmt.Errorf("stats: the admin API answered bad JSON: %v", err)
		}
		t := newTable(e.stdout, "STAT", "VALUE")
		for _, p := range kv {
			t.row(p[0], p[1])
		}
		return t.flush()
	})
}

// orderedObject is a JSON object's members in order, values as JSON text
// (strings unquoted).
func orderedObject(raw []byte) ([][2]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var out [][2]string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		s := string(v)
		var str string
		if json.Unmarshal(v, &str) == nil {
			s = str
		}
		out = append(out, [2]string{fmt.Sprint(k), s})
	}
	return out, nil
}

func cmdReload(ctx context.Context, e *env, args []string) error {
	if _, err := e.parse(args, 0, nil); err != nil {
		return err
	}
	raw, err := e.api(ctx, http.MethodPost, "/api/v1/reload", nil, nil)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return e.answer(raw, func() error {
		_, err := fmt.Fprintln(e.stdout, "configuration reloaded")
		return err
	})
}

// cmdHealth reports /readyz: exit 0 when ready, 1 with the reasons when not.
func cmdHealth(ctx context.Context, e *env, args []string) error {
	if _, err := e.parse(args, 0, nil); err != nil {
		return err
	}
	raw, err := e.api(ctx, http.MethodGet, "/readyz", nil, nil)
	var ae *apiError
	if err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable) {
		return err
	}
	if e.opts.json {
		if werr := writeRawJSON(e.stdout, raw); werr != nil {
			return werr
		}
	} else if err == nil {
		fmt.Fprintln(e.stdout, "ready")
	}
	if err != nil {
		return fmt.Errorf("not ready: %s", strings.TrimPrefix(ae.Message, "not ready: "))
	}
	return nil
}
