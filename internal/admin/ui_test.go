package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testFlows is an in-test Flows: the frames of each session.
type testFlows struct {
	frames map[string][]FlowFrame
	err    error
}

func (f *testFlows) SessionFrames(_ context.Context, id string) ([]FlowFrame, error) {
	return f.frames[id], f.err
}
func (f *testFlows) Source() string { return "test" }
func (f *testFlows) RecentSessions(context.Context, int) ([]FlowSession, error) {
	var out []FlowSession
	for id, fs := range f.frames {
		out = append(out, FlowSession{ID: id, Frames: len(fs), First: fs[0].Time, Last: fs[len(fs)-1].Time})
	}
	return out, nil
}

var (
	uiT0     = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	aliceAP  = netip.MustParseAddrPort("127.0.0.1:40001")
	bobAP    = netip.MustParseAddrPort("127.0.0.1:40002")
	listenAP = netip.MustParseAddrPort("127.0.0.1:2855")
)

// flow is A's SEND relayed to B, B's 200 relayed back, a SEND to a gone
// session answered 481 by the relay, and a failure REPORT.
func flow() []FlowFrame {
	at := func(ms float64) time.Time { return uiT0.Add(time.Duration(ms * float64(time.Millisecond))) }
	in := func(ms float64, remote netip.AddrPort, conn uint64) FlowFrame {
		return FlowFrame{Time: at(ms), Dir: "in", ConnID: conn, Local: listenAP, Remote: remote, FromSession: "SA", ToSession: "SB"}
	}
	out := func(ms float64, remote netip.AddrPort, conn uint64) FlowFrame {
		f := in(ms, remote, conn)
		f.Dir = "out"
		return f
	}
	f := []FlowFrame{in(0, aliceAP, 1), out(1.5, bobAP, 2), in(2.25, bobAP, 2), out(3, aliceAP, 1), in(10, aliceAP, 1), out(10.5, aliceAP, 1), out(11, aliceAP, 1)}
	for i, m := range []string{"SEND", "SEND", "", "", "SEND", "", "REPORT"} {
		f[i].Method = m
		f[i].TransactID = fmt.Sprintf("tid%d", i)
		f[i].Size = int64(100 + i)
		if m == "" {
			f[i].Status = 200
		}
	}
	f[5].Status = 481
	f[6].ReportStatus = 481
	f[0].Head = "MSRP tid0 SEND\r\n<script>alert(1)</script>"
	return f
}

func TestLadder(t *testing.T) {
	l := buildLadder(flow())
	var cols []string
	for _, c := range l.Cols {
		cols = append(cols, c.Label+" "+c.Addr)
	}
	if got := strings.Join(cols, " | "); got != "peer A 127.0.0.1:40001 | relay 127.0.0.1:2855 | peer B 127.0.0.1:40002" {
		t.Fatalf("columns %s", got)
	}
	a, relay, b := l.Cols[0].X, l.Cols[1].X, l.Cols[2].X
	for i, c := range []struct {
		from, to int
		class    string
		what     string
		rel      string
	}{
		{a, relay, "req", "SEND", "+0.000 ms"},
		{relay, b, "req", "SEND", "+1.500 ms"},
		{b, relay, "ok", "200 OK", "+2.250 ms"},
		{relay, a, "ok", "200 OK", "+3.000 ms"},
		{a, relay, "req", "SEND", "+10.000 ms"},
		{relay, a, "fail", "481 No Such Session", "+10.500 ms"},
		{relay, a, "fail", "REPORT 481", "+11.000 ms"},
	} {
		r := l.Rows[i]
		// The arrow ends 4 units short of the receiver's lifeline.
		if r.X1 != c.from || r.X2 != c.to+4 && r.X2 != c.to-4 || (r.X2 > r.X1) != (c.to > c.from) {
			t.Errorf("row %d: arrow %d → %d, want %d → %d", i, r.X1, r.X2, c.from, c.to)
		}
		if r.Class != c.class || r.What != c.what || r.Rel != c.rel || r.TID != fmt.Sprintf("tid%d", i) {
			t.Errorf("row %d: %s %q %s %s, want %s %q %s", i, r.Class, r.What, r.Rel, r.TID, c.class, c.what, c.rel)
		}
		if i > 0 && r.Y <= l.Rows[i-1].Y {
			t.Errorf("row %d not below row %d", i, i-1)
		}
	}
	if l.Rows[0].Abs != "10:00:00.000000" || l.Rows[2].Abs != "10:00:00.002250" {
		t.Errorf("absolute times %s, %s", l.Rows[0].Abs, l.Rows[2].Abs)
	}

	// A chain: the next relay (a dialled connection's remote) is a peer on the right.
	next := netip.MustParseAddrPort("127.0.0.2:2856")
	out := netip.MustParseAddrPort("127.0.0.1:51000")
	l = buildLadder([]FlowFrame{
		{Time: uiT0, Dir: "in", Local: listenAP, Remote: aliceAP, Method: "SEND"},
		{Time: uiT0.Add(time.Millisecond), Dir: "out", Local: out, Remote: next, Method: "SEND"},
	})
	if len(l.Cols) != 4 || l.Cols[0].Addr != aliceAP.String() || !l.Cols[1].Relay || !l.Cols[2].Relay || l.Cols[3].Addr != next.String() {
		t.Errorf("chain columns %+v", l.Cols)
	}
}

func TestFailed(t *testing.T) {
	for _, c := range []struct {
		f    FlowFrame
		want bool
	}{
		{FlowFrame{Status: 200}, false},
		{FlowFrame{Status: 299}, false},
		{FlowFrame{Status: 300}, true},
		{FlowFrame{Status: 481}, true},
		{FlowFrame{Method: "SEND"}, false},
		{FlowFrame{Method: "REPORT", ReportStatus: 200}, false},
		{FlowFrame{Method: "REPORT", ReportStatus: 413}, true},
		{FlowFrame{Method: "REPORT"}, false},
	} {
		if c.f.Failed() != c.want {
			t.Errorf("%+v: Failed %v", c.f, !c.want)
		}
	}
}

func startUI(t *testing.T, cfg Config, flows Flows) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	d := Deps{Relay: newRelay()}
	if flows != nil {
		d.Flows = flows
	}
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + s.Addr().String()
}

// get fetches path without following redirects, with the bearer token
// and cookies given.
func get(t *testing.T, method, u, bearer string, cookies []*http.Cookie, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestUIAuth(t *testing.T) {
	base := startUI(t, Config{Token: "s3cret"}, &testFlows{frames: map[string][]FlowFrame{"SA": flow()}})

	// Without the token: to the login page, remembering where to go.
	resp, _ := get(t, "GET", base+"/ui/session/SA", "", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fsession%2FSA" {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := get(t, "GET", base+"/ui/login?next=/ui/session/SA", "", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="next" value="/ui/session/SA"`) || !strings.Contains(body, `type="password"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get(t, "GET", base+"/ui/static/style.css", "", nil, nil); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Errorf("style sheet without token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// Wrong tokens: 401, no cookie.
	for _, tok := range []string{"wrong", "s3cre", "s3cret2"} {
		resp, _ := get(t, "GET", base+"/ui/login?token="+tok, "", nil, nil)
		if resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
			t.Errorf("login with %q: %d, cookies %v", tok, resp.StatusCode, resp.Cookies())
		}
		if resp, _ := get(t, "GET", base+"/ui/sessions", "", []*http.Cookie{{Name: tokenCookie, Value: tok}}, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("cookie %q: %d, want the login redirect", tok, resp.StatusCode)
		}
	}

	// The right token by GET and by the form: a cookie for /ui/, then the page.
	for _, login := range []func() *http.Response{
		func() *http.Response {
			r, _ := get(t, "GET", base+"/ui/login?token=s3cret&next=/ui/session/SA", "", nil, nil)
			return r
		},
		func() *http.Response {
			r, _ := get(t, "POST", base+"/ui/login", "", nil, url.Values{"token": {"s3cret"}, "next": {"/ui/session/SA"}})
			return r
		},
	} {
		resp := login()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/session/SA" {
			t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		cs := resp.Cookies()
		if len(cs) != 1 || cs[0].Name != tokenCookie || cs[0].Value != "s3cret" || !cs[0].HttpOnly ||
			cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/ui/" {
			t.Fatalf("cookie %+v", cs)
		}
		resp, body := get(t, "GET", base+"/ui/session/SA", "", cs, nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "tid4") {
			t.Fatalf("with the cookie: %d", resp.StatusCode)
		}
		// The cookie is for the web view only: the API wants the header.
		if resp, _ := get(t, "GET", base+"/api/v1/sessions", "", cs, nil); resp.StatusCode != 401 {
			t.Errorf("API with the cookie: %d, want 401", resp.StatusCode)
		}
	}
	// The bearer header works on /ui/ too.
	if resp, _ := get(t, "GET", base+"/ui/connections", "s3cret", nil, nil); resp.StatusCode != 200 {
		t.Errorf("bearer on /ui/: %d", resp.StatusCode)
	}
	// After login, only places on the web view.
	for _, next := range []string{"//evil.example/ui/", "https://evil.example/", "/api/v1/sessions", "/ui/\\evil"} {
		resp, _ := get(t, "GET", base+"/ui/login?token=s3cret&next="+url.QueryEscape(next), "", nil, nil)
		if loc := resp.Header.Get("Location"); loc != "/ui/sessions" {
			t.Errorf("next %q: redirected to %q", next, loc)
		}
	}
	resp, _ = get(t, "GET", base+"/ui/logout", "", nil, nil)
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Errorf("logout cookie %+v", cs)
	}
}

func TestUIPages(t *testing.T) {
	fl := &testFlows{frames: map[string][]FlowFrame{"SA": flow()}}
	base := startUI(t, Config{}, fl) // loopback, no token: none needed

	resp, body := get(t, "GET", base+"/ui/session/SA", "", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("session page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers %v", resp.Header)
	}
	for _, want := range []string{`<svg class="ladder"`, "peer A", "peer B", ">relay<", "127.0.0.1:2855",
		`class="label fail">481 No Such Session · 105 B<`, `class="tid fail">tid5<`, `class="label fail">REPORT 481 · 106 B<`,
		`<tr id="f6" class="fail">`, `class="label req">SEND · 100 B<`, `class="tid req">tid0<`, "&#43;10.500 ms", "10:00:00.010500",
		"&lt;script&gt;alert(1)&lt;/script&gt;", "Frames from <b>test</b>: 7."} {
		if !strings.Contains(body, want) {
			t.Errorf("session page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("a frame's bytes are not escaped")
	}

	resp, body = get(t, "GET", base+"/ui/sessions", "", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `href="/ui/session/s000"`) || !strings.Contains(body, `id="recent-sessions"`) ||
		!strings.Contains(body, `href="/ui/session/SA"`) {
		t.Errorf("sessions page: %d", resp.StatusCode)
	}
	resp, body = get(t, "GET", base+"/ui/connections", "", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "10.0.2.49:40000") {
		t.Errorf("connections page: %d", resp.StatusCode)
	}
	resp, _ = get(t, "GET", base+"/ui/", "", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/sessions" {
		t.Errorf("/ui/: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, "GET", base+"/ui/session?id=a%2Fb", "", nil, nil)
	if resp.Header.Get("Location") != "/ui/session/a%2Fb" {
		t.Errorf("look-up form: %s", resp.Header.Get("Location"))
	}

	// A live session without frames: 200; neither live nor traced: 404; an
	// id is escaped.
	if resp, body := get(t, "GET", base+"/ui/session/s001", "", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "Live: user <b>bob</b>") {
		t.Errorf("live session without frames: %d", resp.StatusCode)
	}
	resp, body = get(t, "GET", base+"/ui/session/%3Cb%3Ex", "", nil, nil)
	if resp.StatusCode != 404 || strings.Contains(body, "<b>x") {
		t.Errorf("unknown session: %d", resp.StatusCode)
	}
	fl.err = errors.New("clickhouse down")
	if resp, body := get(t, "GET", base+"/ui/session/SA", "", nil, nil); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "clickhouse down") {
		t.Errorf("flows failing: %d", resp.StatusCode)
	}

	// No flow source: the page says what to configure.
	base = startUI(t, Config{}, nil)
	if resp, body := get(t, "GET", base+"/ui/session/s001", "", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "configure a recent sink") {
		t.Errorf("no flows: %d %s", resp.StatusCode, body)
	}
}
