package admin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The web view: server-rendered HTML under /ui/, read-only, on the admin
// listener. A browser authenticates with the admin token once (a form or
// /ui/login?token=...); the answer sets the cookie tokenCookie, which the
// /ui/ routes accept besides the bearer header (the JSON API does not).

//go:embed ui
var uiFiles embed.FS

const (
	tokenCookie  = "token"
	maxLadder    = 2000 // frames drawn; the table lists the same
	recentListed = 50
	flowTimeout  = 10 * time.Second
)

var uiTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Truncate(time.Second).String()
	},
	"ts":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000 UTC") },
	"path": func(id string) string { return "/ui/session/" + url.PathEscape(id) },
}).ParseFS(uiFiles, "ui/*.html"))

func (s *Server) uiRoutes(mux *http.ServeMux) {
	static, _ := fs.Sub(uiFiles, "ui/static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/sessions", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui/login", s.uiLogin)
	mux.HandleFunc("POST /ui/login", s.uiLogin)
	mux.HandleFunc("GET /ui/logout", s.uiLogout)
	mux.HandleFunc("GET /ui/sessions", s.uiSessions)
	mux.HandleFunc("GET /ui/connections", s.uiConnections)
	mux.HandleFunc("GET /ui/session", func(w http.ResponseWriter, r *http.Request) { // the look-up form
		id := strings.TrimSpace(r.URL.Query().Get("id"))
		if id == "" {
			http.Redirect(w, r, "/ui/sessions", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/ui/session/"+url.PathEscape(id), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui/session/{id}", s.uiSession)
}

// uiPublic are the /ui/ paths served without the token: the login page
// and logout, the style sheet and the script.
func uiPublic(path string) bool {
	return path == "/ui/login" || path == "/ui/logout" || strings.HasPrefix(path, "/ui/static/")
}

// tokenOK compares a presented token with the configured one in constant
// time (over digests, so the length does not leak either).
func (s *Server) tokenOK(tok string) bool {
	if s.token == nil {
		return true
	}
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], s.token[:]) == 1
}

// uiAuthorized is authorized, or the token cookie.
func (s *Server) uiAuthorized(r *http.Request) bool {
	if s.authorized(r) {
		return true
	}
	c, err := r.Cookie(tokenCookie)
	return err == nil && c.Value != "" && s.tokenOK(c.Value)
}

// uiHeaders are set on every web view answer: nothing from elsewhere, no
// framing, no referrer (the login URL may carry the token).
func uiHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// uiDenied sends a browser without the token to the login page.
func uiDenied(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

type uiLoginPage struct {
	uiPage
	Next  string
	Wrong bool
}

type uiPage struct {
	Title string
	Nav   string
}

func (s *Server) render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := uiTemplates.ExecuteTemplate(&b, name, data); err != nil {
		s.deps.Log.Error("admin: web view template", "template", name, "error", err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	uiHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// safeNext keeps a post-login redirect on the web view.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/ui/sessions"
	}
	return next
}

// uiLogin shows the token form (GET without token), or checks a token
// (the form's POST, or GET ?token=) and sets the cookie.
func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	next := safeNext(r.Form.Get("next"))
	tok := r.Form.Get("token")
	if r.Method == http.MethodGet && tok == "" {
		s.render(w, http.StatusOK, "login.html", uiLoginPage{uiPage: uiPage{Title: "Log in"}, Next: next})
		return
	}
	if s.token == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if !s.tokenOK(tok) {
		s.deps.Log.Warn("admin: web view login with a wrong token", "remote", r.RemoteAddr)
		s.render(w, http.StatusUnauthorized, "login.html", uiLoginPage{uiPage: uiPage{Title: "Log in"}, Next: next, Wrong: true})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/ui/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLSCert != ""})
	uiHeaders(w)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLSCert != ""})
	uiHeaders(w)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

type uiSessionsPage struct {
	uiPage
	Relay     bool
	Sessions  []Session
	Source    string
	Recent    []FlowSession
	RecentErr string
}

func (s *Server) uiSessions(w http.ResponseWriter, r *http.Request) {
	p := uiSessionsPage{uiPage: uiPage{Title: "Sessions", Nav: "sessions"}, Relay: s.deps.Relay != nil}
	if s.deps.Relay != nil {
		for x := range s.deps.Relay.Sessions() {
			p.Sessions = append(p.Sessions, x)
		}
		slices.SortFunc(p.Sessions, func(a, b Session) int {
			return cmp.Or(b.Created.Compare(a.Created), strings.Compare(a.ID, b.ID))
		})
	}
	if s.deps.Flows != nil {
		p.Source = s.deps.Flows.Source()
		if rs, ok := s.deps.Flows.(RecentSessions); ok {
			ctx, cancel := context.WithTimeout(r.Context(), flowTimeout)
			defer cancel()
			var err error
			if p.Recent, err = rs.RecentSessions(ctx, recentListed); err != nil {
				p.RecentErr = err.Error()
			}
		}
	}
	s.render(w, http.StatusOK, "sessions.html", p)
}

type uiConnectionsPage struct {
	uiPage
	Relay       bool
	Connections []Connection
}

func (s *Server) uiConnections(w http.ResponseWriter, _ *http.Request) {
	p := uiConnectionsPage{uiPage: uiPage{Title: "Connections", Nav: "connections"}, Relay: s.deps.Relay != nil}
	if s.deps.Relay != nil {
		for x := range s.deps.Relay.Connections() {
			p.Connections = append(p.Connections, x)
		}
		slices.SortFunc(p.Connections, func(a, b Connection) int { return cmp.Compare(a.ID, b.ID) })
	}
	s.render(w, http.StatusOK, "connections.html", p)
}

type uiSessionPage struct {
	uiPage
	ID      string
	Live    *Session
	Source  string
	Err     string
	Frames  int // found
	Ladder  *ladder
	Refresh bool
}

func (s *Server) uiSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p := uiSessionPage{uiPage: uiPage{Title: "Session " + id, Nav: "sessions"}, ID: id, Refresh: r.URL.Query().Get("refresh") != ""}
	if s.deps.Relay != nil {
		for x := range s.deps.Relay.Sessions() {
			if x.ID == id {
				p.Live = &x
				break
			}
		}
	}
	if s.deps.Flows == nil {
		p.Err = "no flow source: configure a recent sink (or a clickhouse sink) and a rule sending frames to it"
		s.render(w, http.StatusOK, "session.html", p)
		return
	}
	p.Source = s.deps.Flows.Source()
	ctx, cancel := context.WithTimeout(r.Context(), flowTimeout)
	defer cancel()
	frames, err := s.deps.Flows.SessionFrames(ctx, id)
	if err != nil {
		s.deps.Log.Warn("admin: web view: session frames", "session", id, "error", err)
		p.Err = "reading the frames: " + err.Error()
		s.render(w, http.StatusBadGateway, "session.html", p)
		return
	}
	p.Frames = len(frames)
	if len(frames) > 0 {
		p.Ladder = buildLadder(frames)
	}
	code := http.StatusOK
	if p.Live == nil && len(frames) == 0 {
		code = http.StatusNotFound
	}
	s.render(w, code, "session.html", p)
}

// The ladder's geometry, in SVG user units (pixels at 100%).
const (
	ladderLeft   = 170 // the time column
	ladderColW   = 270
	ladderTop    = 56 // column headings
	ladderRowH   = 42
	ladderBottom = 12
)

// ladder is a session's message flow: a column per party, a row per frame.
type ladder struct {
	Width, Height int
	Cols          []ladderCol
	Rows          []ladderRow
	Shown, Total  int
}

type ladderCol struct {
	X            int
	Label, Addr  string
	Relay        bool
	LineY1, Line int // lifeline from LineY1 to Line
}

type ladderRow struct {
	N                 int // 1-based, the table's anchor
	Y, TextY, SubY    int
	X1, X2, MidX      int
	Rel, Abs          string
	What, TID, Size   string
	Label             string
	Class             string // "req", "ok", "fail"
	Dir               string
	From, To          string // column labels
	Frame             FlowFrame
	MessageID, Detail string
}

// party is one end of an arrow: the relay's socket of a connection, or the
// peer's socket.
type party struct {
	relay bool
	node  string
	addr  string
}

// buildLadder places the parties: the session's own peer (the remote end
// of its first frame's connection) on the left, then the relay's sockets,
// then the other peers (the far client, the next relay of a chain) in the
// order they appear; one row per frame in time order.
func buildLadder(frames []FlowFrame) *ladder {
	frames = slices.Clone(frames)
	slices.SortStableFunc(frames, func(a, b FlowFrame) int { return a.Time.Compare(b.Time) })
	total := len(frames)
	if len(frames) > maxLadder {
		frames = frames[:maxLadder]
	}
	local := func(f FlowFrame) party { return party{relay: true, node: f.Node, addr: f.Local.String()} }
	remote := func(f FlowFrame) party { return party{node: f.Node, addr: f.Remote.String()} }
	var order []party
	seen := map[party]bool{}
	add := func(p party) {
		if !seen[p] {
			seen[p] = true
			order = append(order, p)
		}
	}
	add(remote(frames[0]))
	for _, f := range frames {
		add(local(f))
	}
	for _, f := range frames {
		add(remote(f))
	}
	cols := make([]ladderCol, len(order))
	index := make(map[party]int, len(order))
	peer := 0
	for i, p := range order {
		index[p] = i
		c := ladderCol{X: ladderLeft + ladderColW/2 + i*ladderColW, Addr: p.addr, Relay: p.relay}
		switch {
		case p.relay:
			c.Label = "relay"
			if p.node != "" {
				c.Label = "relay " + p.node
			}
		default:
			c.Label = "peer " + peerName(peer)
			peer++
		}
		cols[i] = c
	}
	l := &ladder{Width: ladderLeft + len(cols)*ladderColW, Cols: cols, Shown: len(frames), Total: total}
	start := frames[0].Time
	for i, f := range frames {
		from, to := index[remote(f)], index[local(f)]
		if f.Dir == "out" {
			from, to = to, from
		}
		// The label above the arrow, the transact-id below it; the
		// relative time level with the label, the absolute with the id.
		y := ladderTop + ladderRowH*i + 22
		row := ladderRow{N: i + 1, Y: y, TextY: y - 6, SubY: y + 14, X1: cols[from].X, X2: cols[to].X, Frame: f, Dir: f.Dir,
			From: cols[from].Label + " " + cols[from].Addr, To: cols[to].Label + " " + cols[to].Addr,
			Rel: "+" + strconv.FormatFloat(float64(f.Time.Sub(start))/float64(time.Millisecond), 'f', 3, 64) + " ms",
			Abs: f.Time.UTC().Format("15:04:05.000000"), TID: f.TransactID, Size: sizeText(f.Size), MessageID: f.MessageID}
		row.MidX = (row.X1 + row.X2) / 2
		// Shorten the arrow so that its head stops at the lifeline.
		if row.X2 > row.X1 {
			row.X2 -= 4
		} else {
			row.X2 += 4
		}
		switch {
		case f.Method == "":
			row.What = strconv.Itoa(f.Status)
			if t := statusText(f.Status); t != "" {
				row.What += " " + t
			}
			row.Class = "ok"
		case f.Method == "REPORT" && f.ReportStatus != 0:
			row.What = "REPORT " + strconv.Itoa(f.ReportStatus)
			row.Class = "req"
		default:
			row.What = f.Method
			row.Class = "req"
		}
		if f.Failed() {
			row.Class = "fail"
		}
		row.Label = row.What + " · " + row.Size
		l.Rows = append(l.Rows, row)
	}
	l.Height = ladderTop + ladderRowH*len(l.Rows) + ladderBottom
	for i := range l.Cols {
		l.Cols[i].LineY1, l.Cols[i].Line = ladderTop-12, l.Height-4
	}
	return l
}

func peerName(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return "P" + strconv.Itoa(i+1)
}

func sizeText(n int64) string {
	if n < 10000 {
		return strconv.FormatInt(n, 10) + " B"
	}
	return fmt.Sprintf("%.1f kB", float64(n)/1000)
}

// statusText is the reason phrase of the MSRP status codes (RFC 4975 §10,
// RFC 4976 §5).
func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 408:
		return "Timeout"
	case 413:
		return "Stop Sending"
	case 415:
		return "Unsupported Media Type"
	case 423:
		return "Interval Out Of Bounds"
	case 481:
		return "No Such Session"
	case 501:
		return "Unknown Method"
	case 506:
		return "Session Already Bound"
	}
	return ""
}
