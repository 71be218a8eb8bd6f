package tracer

import (
	"context"
	"net/netip"
	"runtime/debug"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

func TestDynamicTraces(t *testing.T) {
	cfg := Config{Enabled: false,
		Rules: []Rule{{Name: "sends", Match: `method == "SEND"`, Frames: true, To: []string{"a"}},
			{Name: "never", Match: `method == "NOPE"`, Events: true, Frames: true, To: []string{"b"}}},
		Sinks: map[string]SinkConfig{"a": countTo("1"), "b": countTo("1"), "closed": countTo("1")}}
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	a, b := tr.sinkNamed("a").(*countSink), tr.sinkNamed("b").(*countSink)
	if tr.Enabled() {
		t.Fatal("enabled with the switch off and no trace")
	}
	until := time.Now().Add(time.Hour)
	for _, bad := range []Trace{
		{Until: until, To: []string{"b"}},
		{Session: "s9", Until: time.Now().Add(-time.Second), To: []string{"b"}},
		{Session: "s9", Until: until},
		{Session: "s9", Until: until, To: []string{"closed"}}, // configured, but no rule uses it: not open
	} {
		if _, err := tr.AddTrace(bad); err == nil {
			t.Errorf("AddTrace(%+v) accepted", bad)
		}
	}
	id, err := tr.AddTrace(Trace{Session: "s9", Until: until, To: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("not enabled with a trace active: the relay would not capture frames")
	}
	mine := frameEv(1, partnerA, relayAddr, event.DirIn, "REPORT", "")
	mine.Frame.ToSession = "s9"
	tr.Observe(mine)                                                       // the trace: to b
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s8")) // another session: nothing (the switch is off)
	tr.Observe(connEv(event.Accepted, 1, partnerA, relayAddr, "msrp"))     // a session trace takes frames only
	late := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s9")
	late.Time = until.Add(time.Second)
	tr.Observe(late) // after the deadline
	if a.got.Load() != 0 || b.got.Load() != 1 {
		t.Fatalf("switch off: a got %d, b got %d; want 0, 1", a.got.Load(), b.got.Load())
	}

	// A prefix trace takes connection events too; with the switch on, rules
	// and traces add up, each sink getting an event once.
	if _, err := tr.AddTrace(Trace{ID: "net", Remote: netip.MustParsePrefix("203.0.113.0/24"), Until: until, To: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.AddTrace(Trace{ID: "net", Remote: netip.MustParsePrefix("10.0.0.0/8"), Until: until, To: []string{"a"}}); err == nil {
		t.Fatal("a second trace with the id net was accepted")
	}
	tr.SetEnabled(true)
	tr.Observe(connEv(event.Accepted, 2, partnerA, relayAddr, "msrp"))     // net: a, b
	tr.Observe(frameEv(2, partnerA, relayAddr, event.DirIn, "SEND", "s9")) // sends, s9, net: a, b once each
	tr.Observe(frameEv(3, otherB, relayAddr, event.DirIn, "REPORT", ""))   // nothing
	if a.got.Load() != 2 || b.got.Load() != 3 {
		t.Fatalf("switch on: a got %d, b got %d; want 2, 3", a.got.Load(), b.got.Load())
	}

	// Traces survive a reload; the kept sinks are the same.
	if err := tr.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	list := tr.ListTraces()
	if len(list) != 2 || list[0].ID != id || list[0].Matched != 2 || list[1].ID != "net" || list[1].Matched != 2 {
		t.Fatalf("traces %+v", list)
	}
	if !tr.RemoveTrace(id) || tr.RemoveTrace(id) || !tr.RemoveTrace("net") {
		t.Fatal("RemoveTrace")
	}
	tr.SetEnabled(false)
	if tr.Enabled() {
		t.Fatal("enabled after the traces were removed")
	}
}

func TestObserveWithTraceAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; .ci/test runs this test without -race")
	}
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "sends", Match: `method == "SEND"`, Frames: true, To: []string{"a"}}},
		Sinks: map[string]SinkConfig{"a": countTo("1")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	if _, err := tr.AddTrace(Trace{Session: "s1", Until: time.Now().Add(time.Hour), To: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	f := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1")
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // a collection empties the Input pool
	if n := testing.AllocsPerRun(1000, func() { tr.Observe(f) }); n != 0 {
		t.Fatalf("%v allocations per Observe", n)
	}
	tr.SetEnabled(false)
	if n := testing.AllocsPerRun(1000, func() { tr.Observe(f) }); n != 0 {
		t.Fatalf("switch off, trace on: %v allocations per Observe", n)
	}
}
