package fanout

import (
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
)

type rec struct{ kinds []event.Kind }

func (r *rec) Observe(e *event.Event) { r.kinds = append(r.kinds, e.Kind) }

type switched struct {
	rec
	on bool
}

func (s *switched) Enabled() bool { return s.on }

func TestMulti(t *testing.T) {
	all := []event.Kind{event.Accepted, event.FrameIn, event.FrameOut, event.Closed}
	for _, tc := range []struct {
		name                string
		tracerOn, withPlain bool
		enabled, wire       bool
		tracerGot, plainGot int
	}{
		{"tracer off, metrics on", false, true, true, false, 2, 4},
		{"tracer on, metrics on", true, true, true, true, 4, 4},
		{"tracer off alone", false, false, false, false, 2, 0},
		{"tracer on alone", true, false, true, true, 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &switched{on: tc.tracerOn}
			plain := &rec{}
			var m *Multi
			if tc.withPlain {
				m = New(tr, nil, plain)
			} else {
				m = New(tr)
			}
			if got := m.Enabled(); got != tc.enabled {
				t.Errorf("Enabled = %v, want %v", got, tc.enabled)
			}
			if got := m.Wire(); got != tc.wire {
				t.Errorf("Wire = %v, want %v", got, tc.wire)
			}
			for _, k := range all {
				m.Observe(&event.Event{Kind: k})
			}
			if len(tr.kinds) != tc.tracerGot || len(plain.kinds) != tc.plainGot {
				t.Errorf("tracer got %v, plain got %v; want %d and %d", tr.kinds, plain.kinds, tc.tracerGot, tc.plainGot)
			}
		})
	}
}

func TestObserveAlloc(t *testing.T) {
	m := New(&switched{on: false}, &switched{on: false})
	e := &event.Event{Kind: event.FrameIn}
	if n := testing.AllocsPerRun(100, func() { m.Observe(e) }); n != 0 {
		t.Errorf("Observe allocates %v per call", n)
	}
}
