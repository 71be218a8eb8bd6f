package tracer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// A rule switched off at run time matches and counts nothing, the others
// go on; the state shows in Stats and survives a reload; an unknown name
// is ErrNoRule.
func TestRuleSwitch(t *testing.T) {
	cfg := Config{Enabled: true,
		Rules: []Rule{{Name: "one", Frames: true, To: []string{"a"}}, {Name: "two", Frames: true, To: []string{"b"}}},
		Sinks: map[string]SinkConfig{"a": countTo("1"), "b": countTo("1")}}
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	a, b := tr.sinkNamed("a").(*countSink), tr.sinkNamed("b").(*countSink)
	if err := tr.SetRuleEnabled("nosuch", false); !errors.Is(err, ErrNoRule) {
		t.Fatalf("unknown rule: %v", err)
	}
	if err := tr.SetRuleEnabled("one", false); err != nil {
		t.Fatal(err)
	}
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1"))
	if a.got.Load() != 0 || b.got.Load() != 1 {
		t.Fatalf("rule one off: a %d, b %d; want 0, 1", a.got.Load(), b.got.Load())
	}
	want := []RuleStats{{Name: "one", Enabled: false, Matched: 0}, {Name: "two", Enabled: true, Matched: 1}}
	check := func(when string) {
		t.Helper()
		st := tr.Stats()
		if len(st.Rules) != 2 || st.Rules[0] != want[0] || st.Rules[1] != want[1] {
			t.Fatalf("%s: rules %+v, want %+v", when, st.Rules, want)
		}
	}
	check("before reload")
	if err := tr.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	check("after reload")
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1"))
	if a.got.Load() != 0 || b.got.Load() != 2 {
		t.Fatalf("after reload: a %d, b %d; want 0, 2", a.got.Load(), b.got.Load())
	}
	if err := tr.SetRuleEnabled("one", true); err != nil {
		t.Fatal(err)
	}
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1"))
	if a.got.Load() != 1 || b.got.Load() != 3 {
		t.Fatalf("rule one on again: a %d, b %d; want 1, 3", a.got.Load(), b.got.Load())
	}
}

// A user trace, global switch off, takes the frames whose sender's or
// receiver's session is the user's, as the resolver says; the resolver is
// not asked while no user trace is active.
func TestUserTrace(t *testing.T) {
	cfg := Config{Enabled: false,
		Rules: []Rule{{Name: "all", Events: true, Frames: true, To: []string{"a"}}},
		Sinks: map[string]SinkConfig{"a": countTo("1")}}
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	a := tr.sinkNamed("a").(*countSink)
	until := time.Now().Add(time.Hour)
	if _, err := tr.AddTrace(Trace{User: "alice", Until: until, To: []string{"a"}}); err == nil {
		t.Fatal("user trace accepted without a resolver")
	}
	var asked atomic.Int64
	tr.SetSessionUser(func(sid string) string {
		asked.Add(1)
		return map[string]string{"sa": "alice", "sb": "bob"}[sid]
	})
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "sa"))
	if asked.Load() != 0 || a.got.Load() != 0 {
		t.Fatalf("no trace: resolver asked %d times, %d records", asked.Load(), a.got.Load())
	}
	id, err := tr.AddTrace(Trace{User: "alice", Until: until, To: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "sa")) // from alice
	toAlice := frameEv(2, partnerA, relayAddr, event.DirOut, "SEND", "sb")
	toAlice.Frame.ToSession = "sa"
	tr.Observe(toAlice)                                                  // bob to alice
	tr.Observe(frameEv(3, otherB, relayAddr, event.DirIn, "SEND", "sb")) // bob alone
	tr.Observe(connEv(event.Accepted, 4, partnerA, relayAddr, "msrp"))   // not a frame
	if a.got.Load() != 2 || asked.Load() == 0 {
		t.Fatalf("user trace: %d records, want 2 (resolver asked %d times)", a.got.Load(), asked.Load())
	}
	if l := tr.ListTraces(); len(l) != 1 || l[0].User != "alice" || l[0].Matched != 2 {
		t.Fatalf("traces %+v", l)
	}
	if !tr.RemoveTrace(id) {
		t.Fatal("trace not removed")
	}
	n := asked.Load()
	tr.Observe(frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "sa"))
	if asked.Load() != n || a.got.Load() != 2 {
		t.Fatal("trace removed: resolver asked or record sent")
	}
}

// Frames with no or short wire bytes (the relay's metadata level, the
// instant tracing is switched on) are accepted by every sink kind and come
// out as well-formed cut frames.
func TestFrameWithoutWire(t *testing.T) {
	c := newUDPCollector(t)
	dir := t.TempDir()
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "all", Frames: true, To: []string{"hep", "pcap"}}},
		Sinks: map[string]SinkConfig{"hep": hepTo(c.addr()),
			"pcap": block("pcap", 0, `{"dir":"`+dir+`","prefix":"t"}`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	none := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1")
	none.Frame.Wire = nil
	short := frameEv(1, partnerA, relayAddr, event.DirIn, "SEND", "s1")
	short.Frame.Wire = short.Frame.Wire[:5]
	tr.Observe(none)
	tr.Observe(short)
	got := c.waitN(t, 2)
	for _, p := range got {
		if !hasMarker(p) {
			t.Errorf("HEP payload %q has no truncation marker", p.Payload)
		}
	}
	closeTracer(t, tr)
	files, _ := filepath.Glob(filepath.Join(dir, "t*"))
	if len(files) != 1 {
		t.Fatalf("pcap files %v", files)
	}
	if st, err := os.Stat(files[0]); err != nil || st.Size() <= 24 {
		t.Fatalf("pcap file: %v %v", st, err)
	}
	for _, s := range tr.Stats().Sinks {
		if s.Sent != 2 {
			t.Errorf("sink %s sent %d, want 2", s.Name, s.Sent)
		}
	}
}

func hasMarker(p hep.Packet) bool {
	return bytes.Contains(p.Payload, []byte(sink.TruncationMarker))
}
