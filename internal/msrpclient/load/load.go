// Package load drives MSRP relays with pairs of lean endpoints and measures them:
// the engine of cmd/msrpload (SEND→200 and end-to-end latency, delivery checked by hash), callable from Go tests.
package load

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// User is one AUTH identity; pairs take Options.Users round-robin.
type User struct {
	Name     string
	Password string
}

// Options configure a Run.
type Options struct {
	// RelayURI is the relay's URI (msrp:// or msrps://); Relays, when set,
	// is a chain instead: A authenticates at each in turn (RFC 4976 §5.1)
	// and its SENDs cross them all; B attaches at the last one.
	RelayURI string
	Relays   []string
	// Direct connects each A straight to its B, no relay (RFC 4975 peer
	// to peer): B listens on a loopback port of its own, A connects to it
	// and SENDs with To-Path B's URI, and neither authenticates. The
	// baseline of what the driver alone reaches; RelayURI, Relays, Addr
	// and TLS must be unset.
	Direct bool
	// Via (with Direct): each A connects to this host:port instead, a
	// forwarder (msrpload forward) to which it first writes B's address
	// and a newline, then the same frames: the bench's floor, what a
	// relay costs at the least.
	Via  string
	Addr string      // host:port to dial for the first relay; default from its URI
	TLS  *tls.Config // required for msrps://
	// User (default "demo") and Password, or Users (taken round-robin by
	// pairs; a pair's A and B use the same one).
	User     string
	Password string
	Users    []User
	Pairs    int // client pairs (default 1)
	Window   int // outstanding SEND transactions per pair (default 32)
	Size     int // body bytes per message (default 100, at least 1)
	Chunk    int // chunk size; 0 = one chunk per message
	// Count bounds the messages per pair; Duration bounds the sending. At
	// least one applies: with neither, Duration is 10 s.
	Count    int
	Duration time.Duration
	// Rate is messages per second in total, spread evenly over the pairs
	// on a fixed schedule; latencies count from the scheduled time, so a
	// stall is not hidden (coordinated omission). 0: as fast as the
	// window allows.
	Rate float64
	// ResponseTimeout per SEND transaction (default 30 s, RFC 4975 §7.1.1).
	ResponseTimeout time.Duration
	// Drain bounds the wait, after sending stops, for outstanding
	// responses and for B to receive what A had acknowledged (default 5 s).
	Drain time.Duration
	// SetupTimeout bounds connecting and authenticating all pairs (default 30 s).
	SetupTimeout time.Duration
	// Progress, when set, is called about once a second while sending.
	Progress func(Progress)
	// Logger gets debug logs of the set-up (default slog.Default()).
	Logger *slog.Logger
}

// Progress is a snapshot while sending.
type Progress struct {
	Elapsed   time.Duration
	Acked     int64   // SENDs answered 200
	Delivered int64   // messages complete at B
	Errors    int64   // errors of every kind
	Rate      float64 // SENDs answered 200 per second over the last interval
	SendP99   time.Duration
}

// Report is what a Run measured. The JSON names are a stable interface
// (scripts and the benchmark harness parse them).
type Report struct {
	Pairs             int              `json:"pairs"`
	Window            int              `json:"window"`
	BodyBytes         int              `json:"body_bytes"`
	ChunkBytes        int              `json:"chunk_bytes"`
	Seconds           float64          `json:"seconds"`
	Messages          int64            `json:"messages"`    // messages whose every chunk got 200
	Frames            int64            `json:"send_frames"` // SEND transactions answered 200
	FramesPerSec      float64          `json:"send_frames_per_sec"`
	MBPerSec          float64          `json:"mb_per_sec"` // payload answered 200, 10^6 bytes/s
	ReceivedSends     int64            `json:"received_sends"`
	ReceivedBytes     int64            `json:"received_bytes"`
	Errors            map[string]int64 `json:"errors"`
	MessagesDelivered int64            `json:"messages_delivered"`  // complete at B, hash ok
	SendLatency       Latency          `json:"send_latency_ns"`     // SEND → its 200
	DeliveryLatency   Latency          `json:"delivery_latency_ns"` // A's send (scheduled) → complete at B
	ExitStatus        int              `json:"exit_status"`
	CPUSeconds        float64          `json:"msrpload_cpu_seconds"` // this process's user+system CPU over Run
	Hints             []string         `json:"hints"`
	Schedule          *Schedule        `json:"schedule,omitempty"` // -rate only
	Direct            bool             `json:"direct,omitempty"`   // A straight to B, no relay
	Via               string           `json:"via,omitempty"`      // Direct through this forwarder
	PayloadBytes      int64            `json:"-"`
	PairsStarted      int              `json:"-"`
	Rate              float64          `json:"-"` // Options.Rate
}

// LateTolerance is how late after its scheduled time a -rate message may
// start before Schedule counts it late (timers on a busy machine fire late
// by this much and more).
const LateTolerance = time.Millisecond

// Schedule is how well a -rate run kept its schedule. msrpload schedules
// by absolute time (message k of a pair at start + offset + k·pairs/rate),
// so a pair that wakes up late starts every message already due at once,
// as far as its window allows, and catches up; when it cannot (late timers
// on a busy machine, a relay slower than the rate, a window too small for
// rate × latency) Behind says by how much.
type Schedule struct {
	TargetPerSec   float64 `json:"target_per_sec"`   // -rate
	AchievedPerSec float64 `json:"achieved_per_sec"` // messages started per second of schedule
	Started        int64   `json:"started"`          // messages started
	// Behind counts the messages whose scheduled time had come, at the
	// end of the sending, but that had not started: at the stop
	// (-duration, interrupt), or, for a pair that ended by -count, when
	// its last message started.
	Behind int64 `json:"behind"`
	// Late counts the messages started more than LateTolerance after their
	// scheduled time; MaxLateNs is the most any started late.
	Late      int64 `json:"late"`
	MaxLateNs int64 `json:"max_late_ns"`
}

// Kept reports whether the run kept its rate: at most 1 % of the
// messages behind at the end (a last timer firing late does not count).
func (s *Schedule) Kept() bool { return s.Behind*100 <= s.Started }

// schedule sums the pairs' schedules; stopAt is when the sending was
// stopped (ns since start), or -1 when every pair ended by its -count.
func schedule(r *runner, pairs []*pair, stopAt int64) *Schedule {
	o := &r.opts
	s := &Schedule{TargetPerSec: o.Rate}
	var span int64 // the longest schedule a pair covered
	for _, p := range pairs {
		s.Started += p.started
		s.Late += p.lateN
		s.MaxLateNs = max(s.MaxLateNs, p.maxLate)
		end := stopAt
		if end < 0 {
			if p.started == 0 {
				continue
			}
			end = p.lastStart
		}
		due := int64(0)
		if end >= p.schedBase {
			due = (end-p.schedBase)/r.interval + 1
		}
		if stopAt >= 0 && o.Count > 0 {
			due = min(due, int64(o.Count)) // a pair done by -count before the stop
		}
		s.Behind += max(due-p.started, 0)
		if stopAt >= 0 {
			span = max(span, end-p.schedBase)
		} else { // the last message's interval is its own
			span = max(span, end-p.schedBase+r.interval)
		}
	}
	if span > 0 {
		s.AchievedPerSec = float64(s.Started) / (float64(span) / 1e9)
	}
	return s
}

// OK reports whether the run had no error and B received every message
// A had acknowledged.
func (r Report) OK() bool {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n == 0 && r.MessagesDelivered >= r.Messages && r.Frames > 0
}

// Summary is the human-readable report, several lines.
func (r Report) Summary() string {
	var b strings.Builder
	chunk := "whole"
	if r.ChunkBytes > 0 && r.ChunkBytes < r.BodyBytes {
		chunk = fmt.Sprint(r.ChunkBytes)
	}
	direct := ""
	if r.Direct {
		direct = " direct A→B (no relay)"
		if r.Via != "" {
			direct = " A→B through the forwarder at " + r.Via + " (no relay)"
		}
	}
	fmt.Fprintf(&b, "msrpload: %d pairs%s window %d size %d chunk %s: %d SEND in %.2fs = %.0f SEND/s, %.2f MB/s\n",
		r.Pairs, direct, r.Window, r.BodyBytes, chunk, r.Frames, r.Seconds, r.FramesPerSec, r.MBPerSec)
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  fixed rate %.0f messages/s: latencies count from each message's scheduled time\n", r.Rate)
	}
	if s := r.Schedule; s != nil {
		switch {
		case !s.Kept():
			fmt.Fprintf(&b, "  BEHIND SCHEDULE: achieved %.0f of %.0f messages/s, %d messages behind at the end, up to %v late"+
				" (late timers on a busy machine, or the relay or the window too slow for the rate: more -pairs or -window)\n",
				s.AchievedPerSec, s.TargetPerSec, s.Behind, rnd(time.Duration(s.MaxLateNs)))
		case s.Late > 0:
			fmt.Fprintf(&b, "  schedule kept: achieved %.0f messages/s; %d messages started more than %v late (at most %v) and caught up\n",
				s.AchievedPerSec, s.Late, LateTolerance, rnd(time.Duration(s.MaxLateNs)))
		default:
			fmt.Fprintf(&b, "  schedule kept: achieved %.0f messages/s, every message started within %v of its time\n",
				s.AchievedPerSec, LateTolerance)
		}
	}
	if r.PairsStarted < r.Pairs {
		fmt.Fprintf(&b, "  only %d of %d pairs could be set up (see errors)\n", r.PairsStarted, r.Pairs)
	}
	pct := 0.0
	if r.Messages > 0 {
		pct = 100 * float64(r.MessagesDelivered) / float64(r.Messages)
	}
	fmt.Fprintf(&b, "  messages: %d acknowledged, %d delivered (%.1f%%); B received %d SENDs, %d bytes\n",
		r.Messages, r.MessagesDelivered, pct, r.ReceivedSends, r.ReceivedBytes)
	lat := func(name string, l Latency) {
		fmt.Fprintf(&b, "  %-9s p50 %v  p90 %v  p99 %v  max %v\n", name, rnd(l.P50), rnd(l.P90), rnd(l.P99), rnd(l.Max))
	}
	lat("SEND→200", r.SendLatency)
	lat("delivery", r.DeliveryLatency)
	if len(r.Errors) == 0 {
		b.WriteString("  errors: none\n")
	} else {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("  errors:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s: %d;", k, r.Errors[k])
		}
		b.WriteString("\n")
	}
	perSend := ""
	if r.Frames > 0 {
		perSend = fmt.Sprintf(" (%.1f µs per SEND)", r.CPUSeconds*1e6/float64(r.Frames))
	}
	fmt.Fprintf(&b, "  msrpload CPU: %.2fs%s; exit status %d", r.CPUSeconds, perSend, r.ExitStatus)
	return b.String()
}

func rnd(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func (o Options) withDefaults() (Options, error) {
	if o.Direct {
		if o.RelayURI != "" || len(o.Relays) > 0 || o.Addr != "" || o.TLS != nil {
			return o, errors.New("load: a direct run has no relay (no relay URI, address or TLS)")
		}
	} else if o.Via != "" {
		return o, errors.New("load: Via needs Direct")
	} else if err := o.relayDefaults(); err != nil {
		return o, err
	}
	if o.Pairs <= 0 {
		o.Pairs = 1
	}
	if o.Window <= 0 {
		o.Window = 32
	}
	if o.Size <= 0 {
		o.Size = 100
	}
	if o.Chunk < 0 || o.Chunk >= o.Size {
		o.Chunk = 0
	}
	if o.Count <= 0 && o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rate < 0 {
		return o, errors.New("load: negative rate")
	}
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = 30 * time.Second
	}
	if o.Drain <= 0 {
		o.Drain = 5 * time.Second
	}
	if o.SetupTimeout <= 0 {
		o.SetupTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// relayDefaults checks and completes the relay and user options.
func (o *Options) relayDefaults() error {
	if len(o.Relays) == 0 {
		if o.RelayURI == "" {
			return errors.New("load: no relay URI")
		}
		o.Relays = []string{o.RelayURI}
	}
	o.RelayURI = o.Relays[0]
	secure := false
	for i, r := range o.Relays {
		u, err := msrp.ParseURI(r)
		if err != nil {
			return fmt.Errorf("load: relay URI %d: %w", i+1, err)
		}
		if u.SessionID != "" {
			return fmt.Errorf("load: relay URI %q has a session-id: give the relay's own URI", r)
		}
		secure = secure || u.Secure && (i == 0 || i == len(o.Relays)-1)
	}
	if o.Addr == "" {
		a, _, err := addrOf(o.Relays[0])
		if err != nil {
			return err
		}
		o.Addr = a
	}
	if secure && o.TLS == nil {
		return errors.New("load: msrps:// relay needs a TLS config")
	}
	if len(o.Users) == 0 {
		if o.User == "" {
			o.User = "demo" // msrpscope's embedded default user
		}
		o.Users = []User{{Name: o.User, Password: o.Password}}
	}
	for i := range o.Users {
		if o.Users[i].Name == "" {
			return errors.New("load: empty user name")
		}
	}
	return nil
}

// frameBody is the most body bytes one SEND carries: the chunk, or the
// whole message.
func (o *Options) frameBody() int {
	if o.Chunk > 0 {
		return o.Chunk
	}
	return o.Size
}

// bReadSize is the read buffer of B's connections: bReadBufSize on large
// transfers (SENDs of bigReadMin body bytes or more) when the pairs are few
// enough for it to stay under bigReadMaxTotal in all, else readBufSize.
func (o *Options) bReadSize() int {
	if o.frameBody() >= bigReadMin && o.Pairs*bReadBufSize <= bigReadMaxTotal {
		return bReadBufSize
	}
	return readBufSize
}

// runner is one Run's shared state.
type runner struct {
	opts     Options
	start    time.Time
	interval int64 // -rate: ns between a pair's messages; 0: as fast as possible
	body     bodyPattern
	bodyCRC  uint32 // of the whole message body
	errTotal atomic.Int64
	draining atomic.Bool
	changed  chan struct{} // capacity 1: "some pair went idle or caught up"
}

func (r *runner) now() int64 { return int64(time.Since(r.start)) }

func (r *runner) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Run authenticates Pairs pairs at the relay (or along the chain) and has
// each A SEND to its B (To-Path: A's Use-Path, B's Use-Path, B's URI;
// Failure-Report yes) until Count messages per pair went out, Duration
// passes or ctx ends, then drains. Pairs that cannot be set up are counted
// in Report.Errors, with a hint when a relay limit is the likely cause
// (Report.Hints); only when no pair at all could be set up does Run return
// an error. Failures while sending are counted in Report.Errors.
func Run(ctx context.Context, opts Options) (Report, error) {
	cpu0 := cpuTime()
	opts, err := opts.withDefaults()
	if err != nil {
		return Report{ExitStatus: 1, Errors: map[string]int64{}, Hints: []string{}}, err
	}
	rep := Report{Pairs: opts.Pairs, Window: opts.Window, BodyBytes: opts.Size, ChunkBytes: opts.Chunk,
		Errors: map[string]int64{}, Hints: []string{}, Rate: opts.Rate, Direct: opts.Direct, Via: opts.Via}
	r := &runner{opts: opts, changed: make(chan struct{}, 1)}
	r.body = newBodyPattern(opts.frameBody())
	r.bodyCRC = r.body.crc(int64(opts.Size))
	if opts.Rate > 0 {
		r.interval = max(int64(float64(opts.Pairs)*float64(time.Second)/opts.Rate), 1)
	}

	pairs, setupErr := setup(ctx, r, &rep)
	defer func() {
		for _, p := range pairs {
			p.closing.Store(true)
			_ = p.a.nc.Close()
			_ = p.b.nc.Close()
		}
	}()
	rep.PairsStarted = len(pairs)
	if len(pairs) == 0 {
		rep.ExitStatus = 1
		rep.CPUSeconds = cpuTime() - cpu0
		if setupErr == nil {
			setupErr = errors.New("no pair set up")
		}
		return rep, fmt.Errorf("load: %w", setupErr)
	}

	var wg sync.WaitGroup
	stopTick := make(chan struct{})
	r.start = time.Now()
	for i, p := range pairs {
		p.initWindow(opts.Window)
		if r.interval > 0 { // spread the pairs' schedules over one interval
			p.nextSched = r.interval * int64(i) / int64(len(pairs))
			p.schedBase = p.nextSched
		}
		wg.Add(3)
		go func() { defer wg.Done(); p.readB() }()
		go func() { defer wg.Done(); p.readA() }()
		go func() { defer wg.Done(); p.tick(stopTick) }()
	}
	var stopProgress func()
	if opts.Progress != nil {
		stopProgress = progress(r, pairs)
	}

	// Sending: until every A is idle (its count done), Duration or ctx.
	var durC <-chan time.Time
	if opts.Duration > 0 {
		t := time.NewTimer(opts.Duration)
		defer t.Stop()
		durC = t.C
	}
	stopAt := int64(-1) // when the sending was stopped, ns since start
	stopAll := func() {
		stopAt = r.now()
		for _, p := range pairs {
			p.stop()
		}
	}
	allIdle := func() bool {
		for _, p := range pairs {
			if !p.aIdle.Load() {
				return false
			}
		}
		return true
	}
	var drainC <-chan time.Time
	var drainT *time.Timer
	defer func() {
		if drainT != nil {
			drainT.Stop()
		}
	}()
	startDrain := func() {
		if drainC == nil {
			drainT = time.NewTimer(opts.Drain)
			drainC = drainT.C
			r.draining.Store(true)
		}
	}
	ctxDone := ctx.Done()
	expired := false
sending:
	for !allIdle() {
		select {
		case <-r.changed:
		case <-durC:
			durC = nil
			stopAll()
			startDrain()
		case <-ctxDone:
			ctxDone = nil
			stopAll()
			startDrain()
		case <-drainC:
			expired = true
			break sending
		}
	}
	elapsed := time.Since(r.start)
	// Then B: until it has every message A had acknowledged.
	startDrain()
	for !expired && !caughtUp(pairs) {
		select {
		case <-r.changed:
		case <-drainC:
			expired = true
		}
	}
	if stopProgress != nil {
		stopProgress()
	}
	close(stopTick)
	for _, p := range pairs {
		p.closing.Store(true)
		_ = p.a.nc.Close()
		_ = p.b.nc.Close()
	}
	wg.Wait()

	var send, deliv histogram
	for _, p := range pairs {
		rep.Messages += p.acked.Load()
		rep.Frames += p.frames.Load()
		rep.PayloadBytes += p.payload
		rep.MessagesDelivered += p.delivrd.Load()
		rep.ReceivedSends += p.recvSends
		rep.ReceivedBytes += p.recvBytes
		for k, v := range p.errs {
			rep.Errors[k] += v
		}
		for k, v := range p.bErrs {
			rep.Errors[k] += v
		}
		if n := len(p.slots) - len(p.free); n > 0 {
			rep.Errors[kindUnanswered] += int64(n)
		}
		if d := p.acked.Load() - p.delivrd.Load(); d > 0 {
			rep.Errors[kindNotDelivered] += d
		}
		send.merge(&p.sendHist)
		deliv.merge(&p.delivHist)
	}
	rep.Seconds = elapsed.Seconds()
	if rep.Seconds > 0 {
		rep.FramesPerSec = float64(rep.Frames) / rep.Seconds
		rep.MBPerSec = float64(rep.PayloadBytes) / rep.Seconds / 1e6
	}
	rep.SendLatency = send.latency()
	rep.DeliveryLatency = deliv.latency()
	if r.interval > 0 {
		rep.Schedule = schedule(r, pairs, stopAt)
	}
	if !rep.OK() {
		rep.ExitStatus = 1
	}
	rep.CPUSeconds = cpuTime() - cpu0
	return rep, nil
}

func caughtUp(pairs []*pair) bool {
	for _, p := range pairs {
		if !p.bDead.Load() && p.delivrd.Load() < p.acked.Load() {
			return false
		}
	}
	return true
}

// progress calls opts.Progress once a second until the returned stop.
func progress(r *runner, pairs []*pair) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastAcked int64
		last := time.Now()
		var h histogram
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				pr := Progress{Elapsed: now.Sub(r.start), Errors: r.errTotal.Load()}
				h = histogram{}
				for _, p := range pairs {
					pr.Acked += p.frames.Load()
					pr.Delivered += p.delivrd.Load()
					if p.amu.TryLock() { // a pair busy writing is left out this time
						h.merge(&p.sendHist)
						p.amu.Unlock()
					}
				}
				pr.SendP99 = h.quantile(0.99)
				if dt := now.Sub(last).Seconds(); dt > 0 {
					pr.Rate = float64(pr.Acked-lastAcked) / dt
				}
				lastAcked, last = pr.Acked, now
				r.opts.Progress(pr)
			}
		}
	}()
	return func() { close(done); <-exited }
}

// cpuTime is this process's user+system CPU seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// setup connects and authenticates the pairs in order.
func setup(ctx context.Context, r *runner, rep *Report) ([]*pair, error) {
	o := &r.opts
	ctx, cancel := context.WithTimeout(ctx, o.SetupTimeout)
	defer cancel()
	var lastAddr string
	if !o.Direct {
		var err error
		if lastAddr, _, err = addrOf(o.Relays[len(o.Relays)-1]); err != nil {
			return nil, err
		}
		if len(o.Relays) == 1 {
			lastAddr = o.Addr
		}
	}
	hinted := map[string]bool{}
	var pairs []*pair
	var firstErr error
	for i := 0; i < o.Pairs; i++ {
		if ctx.Err() != nil {
			why := "pair not set up (interrupted)"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = fmt.Sprintf("pair not set up (set-up took more than %v)", o.SetupTimeout)
			}
			rep.Errors[why] += int64(o.Pairs - i)
			break
		}
		var u User
		var p *pair
		var kind, hint string
		var err error
		if o.Direct {
			p, kind, err = newDirectPair(ctx, r, i)
		} else {
			u = o.Users[i%len(o.Users)]
			p, kind, hint, err = newPair(ctx, r, i, u, lastAddr, len(pairs) > 0)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("pair %d: %w", i, err)
			}
			rep.Errors[kind]++
			if hint != "" && !hinted[kind] {
				hinted[kind] = true
				rep.Hints = append(rep.Hints, hint)
			}
			o.Logger.Debug("pair set-up failed", "pair", i, "user", u.Name, "err", err)
			continue
		}
		o.Logger.Debug("pair set up", "pair", i, "user", u.Name, "to_path", p.toPath)
		pairs = append(pairs, p)
	}
	return pairs, firstErr
}

// newPair dials and authenticates A along the chain and B at its last
// relay. On failure it returns the error kind and, for a relay limit, a
// one-line hint naming the key to raise.
func newPair(ctx context.Context, r *runner, idx int, u User, lastAddr string, someUp bool) (p *pair, kind, hint string, err error) {
	o := &r.opts
	p = &pair{idx: idx, r: r}
	fail := func(side string, err error, fresh bool) (*pair, string, string, error) {
		if p.a != nil {
			_ = p.a.nc.Close()
		}
		if p.b != nil {
			_ = p.b.nc.Close()
		}
		kind, hint := setupKind(idx, u.Name, err, fresh, someUp)
		return nil, kind, hint, fmt.Errorf("%s: %w", side, err)
	}
	if p.a, err = dial(ctx, o.Addr, o.TLS, readBufSize); err != nil {
		return fail("A: dial", err, false)
	}
	use, err := p.a.authPath(ctx, []string{o.Relays[0]}, u.Name, u.Password)
	if err != nil {
		return fail("A: AUTH", err, true)
	}
	for _, relay := range o.Relays[1:] {
		if use, err = p.a.authPath(ctx, append(slices.Clone(use), relay), u.Name, u.Password); err != nil {
			return fail("A: AUTH at "+relay, err, false)
		}
	}
	if p.b, err = dial(ctx, lastAddr, o.TLS, o.bReadSize()); err != nil {
		return fail("B: dial", err, false)
	}
	useB, err := p.b.authPath(ctx, []string{o.Relays[len(o.Relays)-1]}, u.Name, u.Password)
	if err != nil {
		return fail("B: AUTH", err, true)
	}
	to := strings.Join(append(append(use, useB...), p.b.uri), " ")
	p.toPath = to
	p.head = []byte(" SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + p.a.uri + "\r\nMessage-ID: m")
	p.aUser = u.Name
	return p, "", "", nil
}

// viaConnectTimeout bounds the wait for the forwarder's connection to B.
const viaConnectTimeout = 3 * time.Second

// newDirectPair connects A straight to B, no relay (RFC 4975 peer to
// peer): B, the passive endpoint, listens on a loopback port of its own
// and is msrp://127.0.0.1:port/<session-id>;tcp; A, the active one,
// connects to it (§7.1) and its SENDs carry To-Path B's URI, From-Path
// its own; B's 200s go back to A's URI. No AUTH: RFC 4976 is for relays.
func newDirectPair(ctx context.Context, r *runner, idx int) (*pair, string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "B: listen: " + connKind(err), fmt.Errorf("B: listen: %w", err)
	}
	defer ln.Close() // one connection a pair
	accepted := make(chan net.Conn, 1)
	go func() { // ends with the accept or when ln closes, at the latest on return
		nc, _ := ln.Accept()
		accepted <- nc
	}()
	to := ln.Addr().String()
	a, err := dial(ctx, cmp.Or(r.opts.Via, to), nil, readBufSize)
	if err != nil {
		return nil, "connect: " + connKind(err), fmt.Errorf("A: dial: %w", err)
	}
	if r.opts.Via != "" { // the forwarder's first line: where to
		if _, err := a.nc.Write([]byte(to + "\n")); err != nil {
			_ = a.nc.Close()
			return nil, "connect: " + connKind(err), fmt.Errorf("A: via %s: %w", r.opts.Via, err)
		}
	}
	var bc net.Conn
	// Through a forwarder B's connection comes from it: one that refused
	// the first line (or is no forwarder) closes A and never connects.
	var refused <-chan time.Time
	if r.opts.Via != "" {
		t := time.NewTimer(viaConnectTimeout)
		defer t.Stop()
		refused = t.C
	}
	select {
	case bc = <-accepted:
	case <-refused:
		_ = ln.Close()
		if bc = <-accepted; bc != nil {
			_ = bc.Close()
		}
		_ = a.nc.Close()
		err := fmt.Errorf("the forwarder at %s did not connect to B within %s (it refused the first line, or is not msrpload forward)", r.opts.Via, viaConnectTimeout)
		return nil, "B: accept: the forwarder did not connect", err
	case <-ctx.Done():
		_ = ln.Close()
		if bc = <-accepted; bc != nil {
			_ = bc.Close()
		}
		bc = nil
	}
	if bc == nil {
		_ = a.nc.Close()
		err := cmp.Or(ctx.Err(), errors.New("accept failed"))
		return nil, "B: accept: " + connKind(err), fmt.Errorf("B: accept: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	b := newMconn(bc, msrp.URI{Host: "127.0.0.1", Port: port, SessionID: string(msrp.AppendTransactID(nil)), Transport: "tcp"}, r.opts.bReadSize())
	p := &pair{idx: idx, r: r, a: a, b: b, toPath: b.uri}
	p.head = []byte(" SEND\r\nTo-Path: " + b.uri + "\r\nFrom-Path: " + a.uri + "\r\nMessage-ID: m")
	return p, "", nil
}

// setupKind names a set-up failure and gives the hint for a relay limit
// (msrpscope's keys, docs/CONFIG.md relay.limits).
func setupKind(idx int, user string, err error, fresh, someUp bool) (kind, hint string) {
	var st *msrpclient.StatusError
	var op *net.OpError
	switch {
	case errors.As(err, &st):
		kind = statusKind("AUTH", st.Code, "")
		if st.Comment != "" && st.Code != 200 {
			kind = fmt.Sprintf("AUTH %d %s", st.Code, st.Comment)
		}
		switch {
		case st.Code == 403 && strings.Contains(strings.ToLower(st.Comment), "too many sessions"):
			hint = fmt.Sprintf("pair %d: relay refused AUTH: %d %s for user %s — raise relay.limits.max_sessions_per_user (default 64) or give several users with -user (all users: relay.limits.max_sessions, default 100000)",
				idx, st.Code, st.Comment, user)
		case st.Code == 401:
			hint = fmt.Sprintf("pair %d: relay refused AUTH for user %s: 401 — check -user and -password ($MSRPSCOPE_DEMO_PASSWORD)", idx, user)
		}
	case errors.Is(err, msrpclient.ErrNoChallenge):
		kind = "AUTH 401 without a usable challenge"
	case fresh && isClosed(err):
		kind = kindClosedConnect
		hint = fmt.Sprintf("pair %d: connection closed by the relay right after connect — likely relay.limits.max_connections_per_ip (default 256) (or relay.limits.max_connections, default 10000)", idx)
		if !someUp { // no pair got through: a limit is less likely than a wrong scheme or port
			hint = fmt.Sprintf("pair %d: connection closed by the relay right after connect — msrp:// to a TLS listener (msrps://)? or relay.limits.max_connections_per_ip (default 256) reached by other clients", idx)
		}
	case errors.As(err, &op) && op.Op == "dial":
		kind = "connect: " + connKind(err)
	default:
		kind = connKind(err)
	}
	return kind, hint
}

func isClosed(err error) bool {
	return strings.HasPrefix(connKind(err), kindClosedByRelay) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
