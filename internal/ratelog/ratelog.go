// Package ratelog owns rate limiting of the log lines a peer can trigger:
// per key, the first Burst lines of each Interval, then one line counting those suppressed.
package ratelog

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultBurst    = 10
	DefaultInterval = 10 * time.Second
)

// Config bounds the lines per key: at most Burst per Interval.
type Config struct {
	Burst    int           // lines written per key and interval; default DefaultBurst
	Interval time.Duration // default DefaultInterval
}

// Logger writes lines to an slog.Logger, at most Burst per key in each
// Interval. An interval starts with the first line of its key. Lines over
// the budget are counted, not written; when the interval ends (or at the
// key's next line after it, or at Flush), one line is written with the
// message and attributes of the last suppressed line and suppressed=K.
// So a flood costs Burst+1 lines per key and interval, and every kind of
// line is still seen in every interval it occurs in.
//
// Keys must come from a fixed set chosen by the program (a message, a
// limit name), never from what a peer sends: the table holds one entry per
// key. A Logger is safe for concurrent use. Its timers (one per key with
// suppressed lines) are its goroutines; Flush stops them.
type Logger struct {
	log      *slog.Logger
	burst    int
	interval time.Duration

	mu   sync.Mutex
	keys map[string]*window
}

// window is one key's current interval.
type window struct {
	end        time.Time // zero: none open
	n          int       // lines in this interval, written or not
	suppressed int
	level      slog.Level
	msg        string
	attrs      []slog.Attr // of the last suppressed line
	timer      *time.Timer
	gen        uint64 // which armed timer is current
}

// summary is a suppressed count to write.
type summary struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
	n     int
}

// New returns a Logger writing to log; zero fields of cfg take defaults.
func New(log *slog.Logger, cfg Config) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	return &Logger{log: log, burst: cfg.Burst, interval: cfg.Interval, keys: make(map[string]*window)}
}

// Debug is Log at slog.LevelDebug.
func (l *Logger) Debug(key, msg string, attrs ...slog.Attr) {
	l.Log(slog.LevelDebug, key, msg, attrs...)
}

// Info is Log at slog.LevelInfo.
func (l *Logger) Info(key, msg string, attrs ...slog.Attr) {
	l.Log(slog.LevelInfo, key, msg, attrs...)
}

// Warn is Log at slog.LevelWarn.
func (l *Logger) Warn(key, msg string, attrs ...slog.Attr) {
	l.Log(slog.LevelWarn, key, msg, attrs...)
}

// Log writes msg with attrs at level unless key's budget for the current
// interval is spent; then it counts it (see Logger). Lines at a level the
// logger does not write are neither written nor counted.
func (l *Logger) Log(level slog.Level, key, msg string, attrs ...slog.Attr) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	w := l.keys[key]
	if w == nil {
		w = &window{}
		l.keys[key] = w
	}
	var pending summary
	if !now.Before(w.end) {
		// A new interval. A count its timer has not written yet goes
		// first, so that it is never lost nor merged into this one.
		pending = w.take()
		w.end, w.n = now.Add(l.interval), 0
	}
	w.n++
	if w.n <= l.burst {
		l.mu.Unlock()
		l.write(pending)
		l.log.LogAttrs(ctx, level, msg, attrs...)
		return
	}
	w.suppressed++
	w.level, w.msg, w.attrs = level, msg, slices.Clone(attrs)
	if w.timer == nil {
		w.gen++
		gen := w.gen
		w.timer = time.AfterFunc(w.end.Sub(now), func() { l.expire(key, gen) })
	}
	l.mu.Unlock()
	l.write(pending)
}

// expire writes key's count at the end of its interval.
func (l *Logger) expire(key string, gen uint64) {
	l.mu.Lock()
	w := l.keys[key]
	if w == nil || w.gen != gen {
		l.mu.Unlock()
		return
	}
	// Written under l.mu, so that a Flush that returned has seen every
	// count written.
	l.write(w.take())
	l.mu.Unlock()
}

// take returns w's suppressed count and resets it, stopping its timer.
// Called with l.mu held.
func (w *window) take() summary {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
		w.gen++
	}
	s := summary{level: w.level, msg: w.msg, attrs: w.attrs, n: w.suppressed}
	w.suppressed, w.attrs = 0, nil
	return s
}

func (l *Logger) write(s summary) {
	if s.n == 0 {
		return
	}
	l.log.LogAttrs(context.Background(), s.level, s.msg, append(s.attrs, slog.Int("suppressed", s.n))...)
}

// Flush writes every pending count now and stops the timers; when it
// returns, no count of a line logged before is still to be written. The
// Logger stays usable. Call it when the component that logs stops, so that no
// count is lost at exit.
func (l *Logger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.keys {
		l.write(w.take())
	}
}
