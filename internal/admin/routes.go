package admin

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	defaultLimit = 100
	maxLimit     = 1000
	maxTraceFor  = 24 * time.Hour
	defTraceFor  = 10 * time.Minute
	maxBody      = 64 << 10
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /metrics", s.metrics)

	mux.HandleFunc("GET /api/v1/tracing", s.tracingStatus)
	mux.HandleFunc("POST /api/v1/tracing/on", s.setTracing(true))
	mux.HandleFunc("POST /api/v1/tracing/off", s.setTracing(false))
	mux.HandleFunc("GET /api/v1/rules", s.rules)
	mux.HandleFunc("POST /api/v1/rules/{name}/on", s.setRule(true))
	mux.HandleFunc("POST /api/v1/rules/{name}/off", s.setRule(false))
	mux.HandleFunc("GET /api/v1/sinks", s.sinks)

	mux.HandleFunc("GET /api/v1/traces", s.traces)
	mux.HandleFunc("POST /api/v1/traces", s.startTrace)
	mux.HandleFunc("DELETE /api/v1/traces/{id}", s.stopTrace)

	mux.HandleFunc("GET /api/v1/sessions", s.sessions)
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", s.killSession)
	mux.HandleFunc("GET /api/v1/connections", s.connections)
	mux.HandleFunc("DELETE /api/v1/connections/{id}", s.killConnection)
	mux.HandleFunc("GET /api/v1/stats", s.stats)
	mux.HandleFunc("POST /api/v1/reload", s.reload)
	s.uiRoutes(mux)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		public := r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || (r.URL.Path == "/metrics" && !s.cfg.MetricsAuth)
		if strings.HasPrefix(r.URL.Path, "/ui/") {
			// The web view: the bearer header or the token cookie; a
			// browser without either is sent to the login page.
			if !uiPublic(r.URL.Path) && !s.uiAuthorized(r) {
				uiDenied(w, r)
				return
			}
			public = true
		}
		if !public && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="msrpscope"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h, pattern := mux.Handler(r)
		if pattern == "" {
			// No route (404) or not this method (405): answer in JSON,
			// keeping the mux's status and Allow header.
			rec := &statusOnly{h: w.Header()}
			h.ServeHTTP(rec, r)
			if rec.code < 400 { // a redirect to the cleaned path
				h.ServeHTTP(w, r)
				return
			}
			writeError(w, rec.code, strings.ToLower(http.StatusText(rec.code)))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// statusOnly records a status code and discards the body.
type statusOnly struct {
	h    http.Header
	code int
}

func (s *statusOnly) Header() http.Header { return s.h }
func (s *statusOnly) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusOnly) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(p), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

type errorBody struct {
	Error   string   `json:"error"`
	Reasons []string `json:"reasons,omitempty"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Del("Content-Length")
	writeJSON(w, code, errorBody{Error: msg})
}

// writeErr maps an interface's error to a status.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func unavailable(w http.ResponseWriter, what string) {
	writeError(w, http.StatusServiceUnavailable, what+" is not available in this process")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var reasons []string
	if s.deps.Readiness != nil {
		reasons = s.deps.Readiness.NotReady()
	}
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "not ready", Reasons: reasons})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.deps.Metrics == nil {
		unavailable(w, "metrics")
		return
	}
	s.deps.Metrics.ServeHTTP(w, r)
}

// TracingStatus is GET /api/v1/tracing.
type TracingStatus struct {
	Enabled bool    `json:"enabled"`
	Rules   []Rule  `json:"rules"`
	Traces  []Trace `json:"traces"`
}

func (s *Server) tracingStatus(w http.ResponseWriter, _ *http.Request) {
	t := s.deps.Tracing
	if t == nil {
		unavailable(w, "tracing")
		return
	}
	st := TracingStatus{Enabled: t.Enabled(), Rules: nonNil(t.Rules()), Traces: []Trace{}}
	if s.deps.Traces != nil {
		st.Traces = nonNil(s.deps.Traces.Traces())
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) setTracing(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := s.deps.Tracing
		if t == nil {
			unavailable(w, "tracing")
			return
		}
		t.SetEnabled(on)
		s.deps.Log.Info("admin: tracing switched", "enabled", on, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]bool{"enabled": t.Enabled()})
	}
}

func (s *Server) rules(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Tracing == nil {
		unavailable(w, "tracing")
		return
	}
	writeJSON(w, http.StatusOK, map[string][]Rule{"rules": nonNil(s.deps.Tracing.Rules())})
}

func (s *Server) setRule(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := s.deps.Tracing
		if t == nil {
			unavailable(w, "tracing")
			return
		}
		name := r.PathValue("name")
		if err := t.SetRuleEnabled(name, on); err != nil {
			writeErr(w, fmt.Errorf("rule %q: %w", name, err))
			return
		}
		s.deps.Log.Info("admin: rule switched", "rule", name, "enabled", on, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]any{"rule": name, "enabled": on})
	}
}

func (s *Server) sinks(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Tracing == nil {
		unavailable(w, "tracing")
		return
	}
	writeJSON(w, http.StatusOK, map[string][]Sink{"sinks": nonNil(s.deps.Tracing.Sinks())})
}

func (s *Server) traces(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Traces == nil {
		unavailable(w, "dynamic tracing")
		return
	}
	writeJSON(w, http.StatusOK, map[string][]Trace{"traces": nonNil(s.deps.Traces.Traces())})
}

// traceRequest is POST /api/v1/traces' body.
type traceRequest struct {
	Session string   `json:"session"`
	User    string   `json:"user"`
	CIDR    string   `json:"cidr"`
	For     string   `json:"for"` // a Go duration: "10m"; default 10m, at most 24h
	Sinks   []string `json:"sinks"`
}

func (s *Server) startTrace(w http.ResponseWriter, r *http.Request) {
	if s.deps.Traces == nil {
		unavailable(w, "dynamic tracing")
		return
	}
	var req traceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	spec := TraceSpec{Session: req.Session, User: req.User, For: defTraceFor, Sinks: req.Sinks}
	n := 0
	for _, v := range []string{req.Session, req.User, req.CIDR} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		writeError(w, http.StatusBadRequest, "give exactly one of session, user and cidr")
		return
	}
	if req.CIDR != "" {
		p, err := parsePrefix(req.CIDR)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		spec.CIDR = p
	}
	if req.For != "" {
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 || d > maxTraceFor {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("for: %q is not a duration between 1s and %s", req.For, maxTraceFor))
			return
		}
		spec.For = d
	}
	tr, err := s.deps.Traces.StartTrace(spec)
	if err != nil {
		writeErr(w, fmt.Errorf("start trace: %w", err))
		return
	}
	s.deps.Log.Info("admin: dynamic trace started", "trace", tr.ID, "session", tr.Session, "user", tr.User,
		"cidr", tr.CIDR, "until", tr.Until, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, tr)
}

func (s *Server) stopTrace(w http.ResponseWriter, r *http.Request) {
	if s.deps.Traces == nil {
		unavailable(w, "dynamic tracing")
		return
	}
	id := r.PathValue("id")
	if err := s.deps.Traces.StopTrace(id); err != nil {
		writeErr(w, fmt.Errorf("trace %q: %w", id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parsePrefix takes a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// listQuery is the paging and filters of the session and connection lists.
type listQuery struct {
	limit     int
	cursor    string
	user      string
	session   string
	remote    netip.Prefix
	transport string
}

func parseList(r *http.Request) (listQuery, error) {
	v := r.URL.Query()
	q := listQuery{limit: defaultLimit, cursor: v.Get("cursor"), user: v.Get("user"), session: v.Get("session"),
		transport: v.Get("transport")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return q, fmt.Errorf("limit: %q is not a number from 1 to %d", s, maxLimit)
		}
		q.limit = n
	}
	if s := v.Get("remote"); s != "" {
		p, err := parsePrefix(s)
		if err != nil {
			return q, fmt.Errorf("remote: %w", err)
		}
		q.remote = p
	}
	return q, nil
}

func (q *listQuery) remoteOK(ap netip.AddrPort) bool {
	return !q.remote.IsValid() || q.remote.Contains(ap.Addr().Unmap())
}

// page is a list answer: items sorted by ID; next is the cursor of the
// following page, absent on the last.
type page[T any] struct {
	Items []T    `json:"items"`
	Total int    `json:"total"` // items matching the filters, on every page
	Next  string `json:"next,omitempty"`
}

func paginate[T any](items []T, q listQuery, key func(T) string, cmpKey func(a, b string) int) page[T] {
	slices.SortFunc(items, func(a, b T) int { return cmpKey(key(a), key(b)) })
	total := len(items)
	if q.cursor != "" {
		i, _ := slices.BinarySearchFunc(items, q.cursor, func(t T, c string) int {
			if cmpKey(key(t), c) <= 0 {
				return -1
			}
			return 1
		})
		items = items[i:]
	}
	p := page[T]{Items: items, Total: total}
	if len(items) > q.limit {
		p.Items = items[:q.limit]
		p.Next = key(items[q.limit-1])
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	return p
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	if s.deps.Relay == nil {
		unavailable(w, "the relay")
		return
	}
	q, err := parseList(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var items []Session
	for x := range s.deps.Relay.Sessions() {
		if (q.user == "" || x.User == q.user) && (q.session == "" || x.ID == q.session) &&
			(q.transport == "" || x.Transport == q.transport) && q.remoteOK(x.Remote) {
			items = append(items, x)
		}
	}
	writeJSON(w, http.StatusOK, paginate(items, q, func(x Session) string { return x.ID }, strings.Compare))
}

func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	if s.deps.Relay == nil {
		unavailable(w, "the relay")
		return
	}
	q, err := parseList(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if q.cursor != "" {
		if _, err := strconv.ParseUint(q.cursor, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cursor: %q is not a connection ID", q.cursor))
			return
		}
	}
	var items []Connection
	for x := range s.deps.Relay.Connections() {
		if (q.user == "" || slices.Contains(x.Users, q.user)) && (q.session == "" || slices.Contains(x.Sessions, q.session)) &&
			(q.transport == "" || x.Transport == q.transport) && q.remoteOK(x.Remote) {
			items = append(items, x)
		}
	}
	writeJSON(w, http.StatusOK, paginate(items, q, func(x Connection) string { return strconv.FormatUint(x.ID, 10) },
		func(a, b string) int {
			x, _ := strconv.ParseUint(a, 10, 64)
			y, _ := strconv.ParseUint(b, 10, 64)
			return cmp.Compare(x, y)
		}))
}

func (s *Server) killSession(w http.ResponseWriter, r *http.Request) {
	if s.deps.Relay == nil {
		unavailable(w, "the relay")
		return
	}
	id := r.PathValue("id")
	if err := s.deps.Relay.KillSession(id); err != nil {
		writeErr(w, fmt.Errorf("session %q: %w", id, err))
		return
	}
	s.deps.Log.Info("admin: session killed", "session", id, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) killConnection(w http.ResponseWriter, r *http.Request) {
	if s.deps.Relay == nil {
		unavailable(w, "the relay")
		return
	}
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a connection ID", r.PathValue("id")))
		return
	}
	if err := s.deps.Relay.KillConnection(id); err != nil {
		writeErr(w, fmt.Errorf("connection %d: %w", id, err))
		return
	}
	s.deps.Log.Info("admin: connection killed", "conn", id, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Relay == nil {
		unavailable(w, "the relay")
		return
	}
	writeJSON(w, http.StatusOK, s.deps.Relay.Stats())
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.deps.Reloader == nil {
		unavailable(w, "reload")
		return
	}
	if err := s.deps.Reloader.Reload(r.Context()); err != nil {
		writeErr(w, fmt.Errorf("reload: %w", err))
		return
	}
	s.deps.Log.Info("admin: configuration reloaded", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
