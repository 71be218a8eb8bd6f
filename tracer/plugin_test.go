package tracer_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// testKind is a sink kind defined outside the tracer, as storage's
// ClickHouse sink will be: it imports tracer/sink and tracer/event only.
type testKind struct{}

type testConfig struct {
	Label string `json:"label"`
}

type testSink struct {
	name, label string
	mu          sync.Mutex
	got         []string // kind and method of each record, copied
	closed      bool
}

var (
	openedMu sync.Mutex
	opened   []*testSink
)

func init() { sink.Register("testsink", testKind{}) }

func (testKind) Decode(decode func(v any) error) (any, error) {
	var c testConfig
	if err := decode(&c); err != nil {
		return nil, err
	}
	if c.Label == "" {
		return nil, errors.New("testsink needs a label")
	}
	return c, nil
}

func (testKind) Open(_ context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	s := &testSink{name: o.Name, label: cfg.(testConfig).Label}
	openedMu.Lock()
	opened = append(opened, s)
	openedMu.Unlock()
	return s, nil
}

func (s *testSink) Put(e *event.Event) {
	r := e.Kind.String()
	if e.Frame != nil {
		r += " " + string(e.Frame.Method) // a copy: e's slices are the caller's
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.got = append(s.got, r)
	}
}

func (s *testSink) Stats() sink.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sink.Stats{Name: s.name, Type: "testsink", Sent: uint64(len(s.got)), State: sink.StateOK,
		Counters: []sink.Counter{{Name: "label_" + s.label, Value: 1}}}
}

func (s *testSink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func jsonBlock(js string) func(v any) error {
	return func(v any) error {
		dec := json.NewDecoder(strings.NewReader(js))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
}

func TestRegisteredSinkKindReceivesRecords(t *testing.T) {
	cfg := tracer.Config{Enabled: true,
		Rules: []tracer.Rule{{Name: "sends", Match: `method == "SEND"`, Frames: true, To: []string{"mine"}},
			{Name: "conns", Events: true, To: []string{"mine"}}},
		Sinks: map[string]tracer.SinkConfig{"mine": {Type: "testsink", Decode: jsonBlock(`{"label":"x"}`)}}}
	tr, err := tracer.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := event.ConnInfo{ID: 9, Transport: "msrp", Local: netip.MustParseAddrPort("127.0.0.1:2855"),
		Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Dir: event.DirIn}
	method := []byte("SEND")
	tr.Observe(&event.Event{Kind: event.Accepted, Time: time.Now(), Conn: conn})
	tr.Observe(&event.Event{Kind: event.FrameIn, Time: time.Now(), Conn: conn, Frame: &event.FrameInfo{Dir: event.DirIn, Method: method, Size: 10}})
	copy(method, "XXXX") // the relay reuses its buffers after Observe returns
	tr.Observe(&event.Event{Kind: event.FrameIn, Time: time.Now(), Conn: conn, Frame: &event.FrameInfo{Dir: event.DirIn, Method: []byte("REPORT"), Size: 10}})
	st := tr.Stats()
	if len(st.Sinks) != 1 || st.Sinks[0].Type != "testsink" || st.Sinks[0].Sent != 2 || st.Sinks[0].Counters[0].Name != "label_x" {
		t.Fatalf("stats %+v", st.Sinks)
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	openedMu.Lock()
	s := opened[len(opened)-1]
	openedMu.Unlock()
	if strings.Join(s.got, ",") != "accepted,frame-in SEND" || !s.closed {
		t.Fatalf("sink got %q, closed %v", s.got, s.closed)
	}
}

// The kind's own keys are decoded and checked by the kind, the same way
// for CheckConfig and New.
func TestRegisteredSinkKindConfigErrors(t *testing.T) {
	for _, tc := range []struct{ js, want string }{
		{`{}`, "testsink needs a label"},
		{`{"label":"x","colour":1}`, `unknown field "colour"`},
	} {
		cfg := tracer.Config{Rules: []tracer.Rule{{Name: "r", Events: true, To: []string{"mine"}}},
			Sinks: map[string]tracer.SinkConfig{"mine": {Type: "testsink", Decode: jsonBlock(tc.js)}}}
		for name, err := range map[string]error{"CheckConfig": tracer.CheckConfig(cfg), "New": newErr(cfg)} {
			if !errors.Is(err, tracer.ErrConfig) || !strings.Contains(err.Error(), `sink "mine"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s with %s: %v, want %q", name, tc.js, err, tc.want)
			}
		}
	}
}

func newErr(cfg tracer.Config) error {
	tr, err := tracer.New(context.Background(), cfg, nil)
	if err == nil {
		tr.Close(context.Background())
	}
	return err
}
