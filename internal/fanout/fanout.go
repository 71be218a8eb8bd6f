// Package fanout delivers the relay's events to several event.Observers
// (the tracer and the metrics) and answers the relay's Enabled question for them.
package fanout

import "github.com/msrpscope/msrpscope/tracer/event"

// switcher is an Observer's optional on/off switch (see event.Observer).
type switcher interface{ Enabled() bool }

// Multi calls each of its Observers in order.
//
// An Observer with an Enabled method (the tracer) gets frame events only
// while it answers true; connection events always. An Observer without one
// (the metrics) gets every event. Multi's own Enabled is true while any
// Observer wants frames, so with metrics in the set the relay always
// reports frames; Wire says whether any switched Observer wants their
// wire bytes.
type Multi struct {
	obs []entry
}

type entry struct {
	o  event.Observer
	sw switcher // nil: always wants frames
}

// New returns a Multi over the non-nil obs.
func New(obs ...event.Observer) *Multi {
	m := &Multi{}
	for _, o := range obs {
		if o == nil {
			continue
		}
		e := entry{o: o}
		if sw, ok := o.(switcher); ok {
			e.sw = sw
		}
		m.obs = append(m.obs, e)
	}
	return m
}

// Observe passes e to every Observer that wants it.
func (m *Multi) Observe(e *event.Event) {
	frame := e.Kind == event.FrameIn || e.Kind == event.FrameOut
	for i := range m.obs {
		x := &m.obs[i]
		if frame && x.sw != nil && !x.sw.Enabled() {
			continue
		}
		x.o.Observe(e)
	}
}

// Enabled reports whether any Observer wants frame events: one without a
// switch always does.
func (m *Multi) Enabled() bool {
	for i := range m.obs {
		if x := &m.obs[i]; x.sw == nil || x.sw.Enabled() {
			return true
		}
	}
	return false
}

// Wire reports whether any switched Observer (a tracer) is enabled, that is
// whether a frame's wire bytes are wanted. Observers without a switch want
// frame metadata only (the relay asks it before copying a frame's bytes).
func (m *Multi) Wire() bool {
	for i := range m.obs {
		if x := &m.obs[i]; x.sw != nil && x.sw.Enabled() {
			return true
		}
	}
	return false
}
