package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/internal/testenv"
)

// chromiumFlags are the headless flags the web view test runs Chromium with.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"}

// chromium runs Debian's chromium with args and its own profile; it fails
// the test on error and returns stdout.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append(append(append([]string(nil), chromiumFlags...), "--user-data-dir="+t.TempDir()), args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// sessionOf is the session-id of a Use-Path URI, msrp://host:port/ID;tcp.
func sessionOf(t *testing.T, use string) string {
	t.Helper()
	m := regexp.MustCompile(`^msrps?://[^/]+/([^;]+);`).FindStringSubmatch(use)
	if m == nil {
		t.Fatalf("no session-id in %q", use)
	}
	return m[1]
}

// The web view in a real browser: msrpscope runs with the embedded
// default's recent sink (and a pcap sink in a temporary directory) and a
// token; two clients chat through it, with a SEND to a session that does
// not exist (481) and a failure REPORT; headless Chromium logs in through
// /ui/login?token= and loads the session's ladder.
func TestWebViewInChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "chromium not found (apt-get install chromium)")
	}
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	const token = "web-view-token"
	pcapDir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	cfg := "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\n" +
		"admin:\n  addr: \"127.0.0.1:0\"\n  token: " + token + "\n" +
		"sinks:\n  pcap:\n    type: pcap\n    dir: \"" + pcapDir + "\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelayRun(t, cfgPath)
	admin := "http://" + r.logs.wait(t, regexp.MustCompile(`msg="admin listening" addr=(\S+)`))[1]

	c := chatWithFailures(t, r)
	sessA, sendTIDs, failTID := c.sessA, c.sendTIDs, c.failTID

	// Chromium: log in with the token, land on the session's ladder.
	sessURL := admin + "/ui/login?token=" + token + "&next=" + url.QueryEscape("/ui/session/"+sessA)
	dom := chromium(t, bin, "--dump-dom", sessURL)
	for _, tid := range append(sendTIDs, failTID) {
		if !strings.Contains(dom, tid) {
			t.Errorf("the page lacks transact-id %s", tid)
		}
	}
	for _, want := range []string{`<svg class="ladder"`, "peer A", "peer B", "relay", r.addr,
		`class="label fail">481 No Such Session`, `class="label fail">REPORT 413`, `class="label req">SEND`,
		`class="label ok">200 OK`, `class="label req">AUTH`, "Frames from <b>recent</b>", "Live: user <b>demo</b>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if n := strings.Count(dom, `<tr id="f`); n < 3*4+2+2+4 {
		t.Errorf("%d frames listed; want at least %d (AUTH, 3 SENDs relayed, the 481, the REPORT, the SEND back)", n, 3*4+2+2+4)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	sessions := chromium(t, bin, "--dump-dom", admin+"/ui/login?token="+token)
	if !strings.Contains(sessions, `href="/ui/session/`+sessA+`"`) || !strings.Contains(sessions, `id="live-sessions"`) {
		t.Errorf("the sessions page lacks session %s:\n%s", sessA, sessions)
	}
	if dom := chromium(t, bin, "--dump-dom", admin+"/ui/session/"+sessA); strings.Contains(dom, "hello B") || !strings.Contains(dom, "Log in") {
		t.Errorf("without the token the page shows more than the login form:\n%s", dom)
	}

	dir := t.TempDir()
	if keep := os.Getenv("MSRPSCOPE_UI_SCREENSHOT_DIR"); keep != "" { // to look at it, or keep it from CI
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		dir = keep
	}
	shot := filepath.Join(dir, "ui.png")
	// Tall enough for the whole ladder (22 rows of 42 px under a header):
	// at 900 px the 481 and the REPORT sat at the fold, and a run whose
	// frames came in another order drew them below it (0 red pixels).
	chromium(t, bin, "--screenshot="+shot, "--window-size=1280,1800", sessURL)
	checkScreenshot(t, shot, true)
	list := filepath.Join(dir, "ui-sessions.png")
	chromium(t, bin, "--screenshot="+list, "--window-size=1280,900", admin+"/ui/login?token="+token)
	checkScreenshot(t, list, false)
	t.Logf("screenshots: %s, %s", shot, list)

	// The default rule sent the same frames to the pcap sink.
	r.stop(t)
	if p := pcapText(t, pcapDir); !strings.Contains(p, failTID) || !strings.Contains(p, sendTIDs[0]) {
		t.Errorf("the pcap files lack the session's frames (%d bytes)", len(p))
	}
}

// chat is what chatWithFailures did.
type chat struct {
	sessA    string   // A's relay session
	sendTIDs []string // A's three SENDs to B
	failTID  string   // A's SEND to a session that does not exist (481)
}

// chatWithFailures runs two clients through the relay: A AUTHs, sends B
// three SENDs, one SEND to a session the relay does not have (481); B
// sends A a failure REPORT (413), then a SEND. The clients stay connected
// until the test ends.
func chatWithFailures(t *testing.T, r *running) chat {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	var cs [2]*msrpclient.Client
	var uses [2]string
	for i := range cs {
		c, err := msrpclient.Dial(ctx, r.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if uses[i], _, err = c.Auth(ctx, r.uri, "demo", "demo-secret", 0); err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	a, b := cs[0], cs[1]
	sessA := sessionOf(t, uses[0])
	receive := func(c *msrpclient.Client, body string) {
		t.Helper()
		for {
			select {
			case got := <-c.Incoming():
				if string(got.Body) == body {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%q not delivered", body)
			}
		}
	}
	var sendTIDs []string
	for i := range 3 {
		body := fmt.Sprintf("hello B, #%d", i)
		res, err := a.Send(ctx, []string{uses[0], uses[1], b.LocalURI()}, msrpclient.Message{Body: []byte(body), ContentType: "text/plain"})
		if err != nil {
			t.Fatalf("SEND %d: %v", i, err)
		}
		sendTIDs = append(sendTIDs, res.Chunks[0].TransactID)
		receive(b, body)
	}
	// A SEND to a session this relay does not have: 481 from the relay.
	bogus := strings.Replace(uses[1], sessionOf(t, uses[1]), "nosuchsession0000", 1)
	res, err := a.Send(ctx, []string{uses[0], bogus, b.LocalURI()}, msrpclient.Message{Body: []byte("lost"), ContentType: "text/plain"})
	if err == nil || res == nil || len(res.Chunks) == 0 || res.Chunks[0].Code != 481 {
		t.Fatalf("SEND to a gone session: %+v, %v; want 481", res, err)
	}
	failTID := res.Chunks[0].TransactID
	// B reports a failure to A (RFC 4975 §7.1.2), then a SEND: once A has
	// that SEND, the relay has written the REPORT before it.
	if _, _, err := b.Request(ctx, "REPORT", []string{uses[1], uses[0], a.LocalURI()}, []msrpclient.Header{
		{Name: "Message-ID", Value: "m-report-1"}, {Name: "Byte-Range", Value: "1-4/4"}, {Name: "Status", Value: "000 413 Stop sending"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Send(ctx, []string{uses[1], uses[0], a.LocalURI()}, msrpclient.Message{Body: []byte("back"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	receive(a, "back")

	return chat{sessA: sessA, sendTIDs: sendTIDs, failTID: failTID}
}

// checkScreenshot decodes the PNG and wants a page, not a blank: many
// colours, and (wantRed) the failure red of the ladder.
func checkScreenshot(t *testing.T, path string, wantRed bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	bd := img.Bounds()
	if bd.Dx() < 800 || bd.Dy() < 600 {
		t.Fatalf("screenshot is %v", bd)
	}
	colours := map[[3]uint32]bool{}
	red := 0
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
			if isRed(r>>8, g>>8, b>>8) {
				red++
			}
		}
	}
	if len(colours) < 16 {
		t.Errorf("screenshot has %d colours: blank?", len(colours))
	}
	if wantRed && red < 50 {
		t.Errorf("screenshot has %d red pixels: no failure drawn in red?", red)
	}
}

// isRed is the failure colour (#c21818) and its anti-aliased shades.
func isRed(r, g, b uint32) bool { return r > 150 && g < 90 && b < 90 }
