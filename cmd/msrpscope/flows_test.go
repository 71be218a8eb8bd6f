package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/admin"
	"github.com/msrpscope/msrpscope/internal/clickhouse"
	"github.com/msrpscope/msrpscope/internal/recent"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// With a clickhouse sink the web view reads a session's flow from a real
// ClickHouse (18.16): the frames a relay run stored there, drawn with the
// failures in red; a session ClickHouse has no rows of comes from the rings.
func TestWebViewFromClickHouse(t *testing.T) {
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", "demo-secret")
	ch := clickhouse.Start(t, clickhouse.Options{})
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	cfg := "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\nadmin:\n  addr: \"\"\n" +
		"sinks:\n  ch:\n    type: clickhouse\n    addr: \"" + ch.Addr() + "\"\n    batch_age: 100ms\n    node: relay-web\n" +
		"tracing:\n  rules:\n    - {name: all, events: true, frames: true, to: [ch]}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelayRun(t, cfgPath)
	c := chatWithFailures(t, r)
	r.stop(t) // the sink inserts what it holds before the run ends

	fc, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	rings := recent.NewStore()
	flows, ok := flowsFor(fc, rings).(*chFlows)
	if !ok {
		t.Fatalf("flows for a clickhouse sink: %T", flowsFor(fc, rings))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frames, err := flows.SessionFrames(ctx, c.sessA)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(frames, func(a, b admin.FlowFrame) int { return a.Time.Compare(b.Time) }) {
		t.Error("frames not in time order")
	}
	type key struct{ tid, dir, method string }
	seen := map[key]int{}
	for _, f := range frames {
		seen[key{f.TransactID, f.Dir, f.Method}]++
		if f.Node != "relay-web" || !f.Local.IsValid() || !f.Remote.IsValid() || f.Size <= 0 || f.FromSession == "" {
			t.Errorf("frame %+v", f)
		}
		if f.Status == 481 && (f.TransactID != c.failTID || f.Dir != "out" || !f.Failed()) {
			t.Errorf("481 %+v", f)
		}
	}
	for _, tid := range c.sendTIDs {
		// A's SEND and the 200 to it (the relay forwards with its own transact-id).
		if seen[key{tid, "in", "SEND"}] != 1 || seen[key{tid, "out", ""}] != 1 {
			t.Errorf("SEND %s: %v", tid, seen)
		}
	}
	out := 0
	for k := range seen {
		if k.dir == "out" && k.method == "SEND" {
			out++
		}
	}
	if out != 3+1 { // to B, and B's back to A
		t.Errorf("%d SENDs relayed, want 4: %v", out, seen)
	}
	if seen[key{c.failTID, "in", "SEND"}] != 1 || seen[key{c.failTID, "out", ""}] != 1 {
		t.Errorf("the failed SEND %s: %v", c.failTID, seen)
	}

	// The page over those frames.
	srv, err := admin.New(admin.Config{Addr: "127.0.0.1:0"}, admin.Deps{Flows: flows})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + srv.Addr().String() + "/ui/session/" + c.sessA)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range append([]string{"relay relay-web", `class="label fail">481 No Such Session`, "clickhouse (sink ch)"}, c.sendTIDs...) {
		if !strings.Contains(string(page), want) {
			t.Errorf("page (%d) lacks %q", resp.StatusCode, want)
		}
	}

	// A session ClickHouse has no rows of yet: the rings answer.
	s, err := recent.Kind{Store: rings}.Open(ctx, recent.Config{Frames: 8}, sink.Options{Name: "recent"})
	if err != nil {
		t.Fatal(err)
	}
	s.Put(&event.Event{Kind: event.FrameIn, Time: time.Now(), Frame: &event.FrameInfo{Dir: event.DirIn,
		TransactID: []byte("ringtid"), Method: []byte("SEND"), FromSession: "only-in-ring", Size: 10}})
	got, err := flows.SessionFrames(ctx, "only-in-ring")
	if err != nil || len(got) != 1 || got[0].TransactID != "ringtid" {
		t.Errorf("fallback to the ring: %+v, %v", got, err)
	}
}
