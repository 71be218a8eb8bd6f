package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorder is a slog.Handler keeping every record.
type recorder struct {
	mu     sync.Mutex
	recs   []rec
	signal chan struct{}
	level  slog.Level
}

type rec struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, x slog.Record) error {
	e := rec{level: x.Level, msg: x.Message, attrs: map[string]slog.Value{}}
	x.Attrs(func(a slog.Attr) bool { e.attrs[a.Key] = a.Value; return true })
	r.mu.Lock()
	r.recs = append(r.recs, e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) all() []rec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rec(nil), r.recs...)
}

// suppressedOf returns the suppressed=K of e, 0 when absent.
func suppressedOf(e rec) int {
	if v, ok := e.attrs["suppressed"]; ok {
		return int(v.Int64())
	}
	return 0
}

// A flood of one key writes Burst lines, then (at Flush) one line with the
// last suppressed line's attributes and the count; other keys are not
// affected.
func TestBurstThenCount(t *testing.T) {
	h := newRecorder()
	l := New(slog.New(h), Config{Burst: 3, Interval: time.Hour})
	for i := range 100 {
		l.Info("auth_failed", "AUTH failed", slog.Int("i", i))
	}
	l.Warn("limit:max_connections", "limit hit", slog.String("limit", "max_connections"))
	got := h.all()
	if len(got) != 4 {
		t.Fatalf("%d lines before Flush, want 4: %+v", len(got), got)
	}
	for i, e := range got[:3] {
		if e.msg != "AUTH failed" || e.attrs["i"].Int64() != int64(i) || suppressedOf(e) != 0 {
			t.Fatalf("line %d: %+v", i, e)
		}
	}
	if got[3].msg != "limit hit" || got[3].level != slog.LevelWarn {
		t.Fatalf("other key: %+v", got[3])
	}
	l.Flush()
	got = h.all()
	if len(got) != 5 {
		t.Fatalf("%d lines after Flush, want 5", len(got))
	}
	if s := got[4]; s.msg != "AUTH failed" || suppressedOf(s) != 97 || s.attrs["i"].Int64() != 99 || s.level != slog.LevelInfo {
		t.Fatalf("summary %+v, want AUTH failed i=99 suppressed=97", s)
	}
	l.Flush() // nothing pending: nothing written
	if n := len(h.all()); n != 5 {
		t.Fatalf("second Flush wrote %d lines", n-5)
	}
}

// When the interval ends, its timer writes the count without waiting for
// another line; the next line then opens a new interval and is written.
func TestCountAtIntervalEnd(t *testing.T) {
	h := newRecorder()
	l := New(slog.New(h), Config{Burst: 1, Interval: 20 * time.Millisecond})
	defer l.Flush()
	for range 5 {
		l.Info("k", "refused")
	}
	deadline := time.After(10 * time.Second)
	for len(h.all()) < 2 {
		select {
		case <-h.signal:
		case <-deadline:
			t.Fatalf("no count written at the interval's end: %+v", h.all())
		}
	}
	got := h.all()
	if len(got) != 2 || suppressedOf(got[0]) != 0 || suppressedOf(got[1]) != 4 {
		t.Fatalf("lines %+v, want one line and one with suppressed=4", got)
	}
	l.Info("k", "refused")
	if got := h.all(); len(got) != 3 || suppressedOf(got[2]) != 0 {
		t.Fatalf("the first line of a new interval was not written: %+v", got)
	}
}

// Lines at a level the logger does not write are neither written nor
// counted.
func TestDisabledLevelNotCounted(t *testing.T) {
	h := newRecorder()
	h.level = slog.LevelInfo
	l := New(slog.New(h), Config{Burst: 1, Interval: time.Hour})
	for range 10 {
		l.Debug("k", "rejected")
	}
	l.Flush()
	if got := h.all(); len(got) != 0 {
		t.Fatalf("debug lines written: %+v", got)
	}
}

// Under concurrent use with intervals ending all the time, every line is
// either written or counted exactly once.
func TestNothingLostOrCountedTwice(t *testing.T) {
	h := newRecorder()
	l := New(slog.New(h), Config{Burst: 2, Interval: time.Millisecond})
	const goroutines, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []string{"a", "b"}[g%2]
			for range lines {
				l.Info(key, key)
			}
		}()
	}
	wg.Wait()
	l.Flush()
	total := 0
	for _, e := range h.all() {
		total += 1 + suppressedOf(e)
		if suppressedOf(e) > 0 {
			total-- // a count line stands for the lines it counts, not for itself
		}
	}
	if total != goroutines*lines {
		t.Fatalf("%d lines written or counted, want %d", total, goroutines*lines)
	}
}
