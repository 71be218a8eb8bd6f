package tracer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// countKind counts what its sinks get; its config is a version string, so
// a changed version is a changed sink.
type countKind struct{}

type countConfig struct {
	Version string `json:"version"`
}

type countSink struct {
	name    string
	version string
	got     atomic.Uint64
	late    atomic.Uint64 // Put after Close
	closed  atomic.Bool
}

var (
	countMu    sync.Mutex
	countSinks []*countSink
)

func init() { sink.Register("count", countKind{}) }

func (countKind) Decode(decode func(v any) error) (any, error) {
	var c countConfig
	return c, decode(&c)
}

func (countKind) Open(_ context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	s := &countSink{name: o.Name, version: cfg.(countConfig).Version}
	countMu.Lock()
	countSinks = append(countSinks, s)
	countMu.Unlock()
	return s, nil
}

func (s *countSink) Put(*event.Event) {
	if s.closed.Load() {
		s.late.Add(1)
		return
	}
	s.got.Add(1)
}

func (s *countSink) Stats() sink.Stats {
	return sink.Stats{Name: s.name, Type: "count", Sent: s.got.Load(), Dropped: s.late.Load()}
}

func (s *countSink) Close(context.Context) error {
	s.closed.Store(true)
	return nil
}

func countTo(version string) SinkConfig {
	return block("count", 0, `{"version":"`+version+`"}`)
}

// reloadConfig is generation i's configuration: every frame goes to
// "keep" (unchanged throughout); frames of connections from port 40001 go
// to "mark" in even generations, from 40002 in odd ones (a connection-level
// rule: its cached verdict must follow the generation); "churn" changes
// its configuration every time, so it is replaced each time.
func reloadConfig(i int) Config {
	port := 40001 + i%2
	return Config{Enabled: true,
		Rules: []Rule{
			{Name: "keep", Match: `local.port == 2855`, Frames: true, To: []string{"keep", "churn"}},
			{Name: "mark", Match: fmt.Sprintf(`remote.port == %d`, port), Frames: true, To: []string{"mark"}},
		},
		Sinks: map[string]SinkConfig{"keep": countTo("1"), "mark": countTo("1"), "churn": countTo(fmt.Sprint(i))}}
}

func (t *Tracer) sinkNamed(name string) sink.Sink {
	for _, o := range t.set.Load().sinks {
		if o.name == name {
			return o.s
		}
	}
	return nil
}

// Many goroutines observe while Reload replaces rules and sinks: the kept
// sink (same instance throughout) gets every frame, and each Reload's rules
// apply to every event observed after it returns.
func TestReloadUnderLoad(t *testing.T) {
	tr, err := New(context.Background(), reloadConfig(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := tr.sinkNamed("keep").(*countSink)
	const workers, perWorker, reloads = 8, 3000, 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var observed atomic.Uint64
	for w := range workers {
		wg.Go(func() {
			remote := netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:50000", w+1))
			for i := range perWorker {
				e := frameEv(uint64(1000+w*perWorker+i%50), remote, relayAddr, event.DirIn, "SEND", "s")
				tr.Observe(e)
				observed.Add(1)
				if i%100 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		})
	}
	// The marker connection: one connection, its verdict cached across
	// generations, observed by this goroutine right after each Reload.
	var markWant uint64
	marks := func(port uint16) *event.Event {
		return frameEv(1, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port), relayAddr, event.DirIn, "SEND", "m")
	}
	for i := 1; i <= reloads; i++ {
		if err := tr.Reload(context.Background(), reloadConfig(i)); err != nil {
			t.Fatal(err)
		}
		if tr.sinkNamed("keep") != keep {
			t.Fatalf("reload %d replaced the unchanged sink", i)
		}
		if got := tr.sinkNamed("churn").(*countSink).version; got != fmt.Sprint(i) {
			t.Fatalf("reload %d: churn sink of version %s", i, got)
		}
		mark := tr.sinkNamed("mark").(*countSink)
		before := mark.got.Load()
		tr.Observe(marks(40001))
		if i%2 == 0 {
			markWant++
			if mark.got.Load() != before+1 {
				t.Fatalf("generation %d: the frame after Reload was not marked", i)
			}
		} else if mark.got.Load() != before {
			t.Fatalf("generation %d: the frame after Reload used the old rules", i)
		}
		observed.Add(1)
	}
	close(stop)
	wg.Wait()
	// A bad configuration leaves everything as it was.
	bad := reloadConfig(reloads + 1)
	bad.Rules[1].Match = `remote.port ==`
	if err := tr.Reload(context.Background(), bad); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad reload: %v", err)
	}
	if tr.sinkNamed("keep") != keep || tr.Stats().Generation != reloads+1 {
		t.Fatalf("a failed reload changed the rule set: generation %d", tr.Stats().Generation)
	}
	if got, want := keep.got.Load(), observed.Load(); got != want || keep.late.Load() != 0 {
		t.Fatalf("kept sink got %d of %d frames (%d late)", got, want, keep.late.Load())
	}
	if got := tr.sinkNamed("mark").(*countSink).got.Load(); got < markWant {
		t.Fatalf("mark sink got %d, want at least %d", got, markWant)
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	countMu.Lock()
	defer countMu.Unlock()
	for _, s := range countSinks {
		if !s.closed.Load() {
			t.Fatalf("sink %s version %s not closed", s.name, s.version)
		}
	}
}

// SetEnabled at run time outlives reloads; without it, a reload applies
// the configuration's enabled.
func TestReloadKeepsRuntimeSwitch(t *testing.T) {
	cfg := reloadConfig(0)
	cfg.Enabled = false
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTracer(t, tr)
	cfg.Enabled = true
	if err := tr.Reload(context.Background(), cfg); err != nil || !tr.Enabled() {
		t.Fatalf("reload with enabled: %v, Enabled %v", err, tr.Enabled())
	}
	tr.SetEnabled(false)
	if err := tr.Reload(context.Background(), cfg); err != nil || tr.Enabled() {
		t.Fatalf("reload after SetEnabled(false): %v, Enabled %v", err, tr.Enabled())
	}
}

// A connection-level rule on local.port: at connect-start an outbound
// connection has no local address yet, so the verdict then is "no"; once
// connected its local port is known and the cached verdict must be
// computed again, or the connection's events and frames are missed.
func TestLocalPortVerdictAfterConnect(t *testing.T) {
	cfg := Config{Enabled: true,
		Rules: []Rule{{Name: "port", Match: `local.port == 40555`, Events: true, Frames: true, To: []string{"c"}}},
		Sinks: map[string]SinkConfig{"c": countTo("1")}}
	tr, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())
	c := tr.sinkNamed("c").(*countSink)
	next := netip.MustParseAddrPort("192.0.2.10:2855")
	start := connEv(event.ConnectStart, 77, next, netip.AddrPort{}, "msrp")
	start.Conn.Dir = event.DirOut
	tr.Observe(start)
	if n := c.got.Load(); n != 0 {
		t.Fatalf("connect-start (no local address yet) matched: %d records", n)
	}
	local := netip.MustParseAddrPort("127.0.0.1:40555")
	conn := connEv(event.Connected, 77, next, local, "msrp")
	conn.Conn.Dir = event.DirOut
	tr.Observe(conn)
	f := frameEv(77, next, local, event.DirOut, "SEND", "")
	f.Conn.Dir = event.DirOut
	tr.Observe(f)
	if n := c.got.Load(); n != 2 {
		t.Fatalf("connected + one frame on local port 40555: %d records, want 2", n)
	}
}

// Frames under rules without expressions skip the connection's state; the
// TLS subject of a connection is still recorded from its handshake event,
// so that a reload to a rule on it matches the connection's later frames.
// Rule counts add up across connections.
func TestUnfilteredFramesThenTLSRule(t *testing.T) {
	ctx := context.Background()
	cfg := func(match string) Config {
		return Config{Enabled: true,
			Rules: []Rule{{Name: "all", Match: match, Events: true, Frames: true, To: []string{"c"}}},
			Sinks: map[string]SinkConfig{"c": countTo("tls")}}
	}
	tr, err := New(ctx, cfg(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(ctx)
	conn := func(id uint64) event.ConnInfo {
		return event.ConnInfo{ID: id, Transport: "msrps", Dir: event.DirIn,
			Local: netip.MustParseAddrPort("127.0.0.1:2855"), Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+id))}
	}
	frame := func(id uint64) *event.Event {
		return &event.Event{Kind: event.FrameIn, Conn: conn(id), Frame: &event.FrameInfo{Dir: event.DirIn, Method: []byte("SEND"), Size: 10}}
	}
	for id := uint64(1); id <= 3; id++ {
		tr.Observe(&event.Event{Kind: event.Accepted, Conn: conn(id)})
		subject := "CN=other"
		if id == 2 {
			subject = "CN=wanted"
		}
		tr.Observe(&event.Event{Kind: event.TLSHandshake, Conn: conn(id), TLS: &event.TLSInfo{OK: true, PeerSubject: subject}})
		for range 10 {
			tr.Observe(frame(id))
		}
	}
	if st := tr.Stats(); st.Rules[0].Matched != 3*12 {
		t.Fatalf("matched %d, want %d", st.Rules[0].Matched, 3*12)
	}
	if err := tr.Reload(ctx, cfg(`tls.subject == "CN=wanted"`)); err != nil {
		t.Fatal(err)
	}
	before := tr.Stats().Rules[0].Matched
	for id := uint64(1); id <= 3; id++ {
		tr.Observe(frame(id))
	}
	if got := tr.Stats().Rules[0].Matched - before; got != 1 {
		t.Fatalf("after the reload %d frames matched the TLS rule, want 1 (connection 2's)", got)
	}
}
