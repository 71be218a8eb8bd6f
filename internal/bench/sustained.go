package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The sustained scenario compares the relays at an equal offered rate.
// Kamailio answers a SEND 200 before it forwards it, and with many pairs
// it drops most of what it acknowledged: relay CPU per acknowledged SEND
// then flatters it, and as fast as possible the relays are not doing the
// same work. So, per pair count:
//
//  1. each relay's highest sustained rate: the acknowledged rate of a run
//     as fast as the window allows if it delivered >= 99.9 % of what it
//     acknowledged, else the highest fixed rate (msrpload -rate) found by
//     bisection at which it did (and kept the schedule, without errors);
//  2. the offered rate: Kamailio's highest sustained fixed rate (always
//     searched by bisection, so that it is a rate Kamailio was seen to
//     keep at a fixed schedule);
//  3. every relay at that rate, relay CPU per SEND over a steady-state
//     window: the relay's utime+stime (all its processes) sampled at
//     msrpload's progress lines (-progress-json, about once a second)
//     from the first at or after the warm-up to the last before the
//     sending ends, divided by the SENDs acknowledged between the same
//     two lines. Set-up (connects, AUTHs), the ramp and the drain are
//     outside it.

// ScenarioSustained is the -only name of the equal-rate comparison.
const ScenarioSustained = "sustained"

// sustainRatio is the delivered/acknowledged share a run needs to count
// as sustained: 99.9 %.
const sustainRatio = 0.999

// sustainOpts are the sustained scenario's parameters (flags).
type sustainOpts struct {
	probe    time.Duration // each step of the search
	duration time.Duration // each equal-rate run
	warmup   time.Duration // skipped at the start of an equal-rate run
	steps    int           // fixed-rate steps of a search
	rounds   int           // equal-rate runs per relay
	rate     float64       // the offered rate; 0: Kamailio's sustained rate
}

// Step is one run of a search for a relay's highest sustained rate.
type Step struct {
	// RatePerSec is the offered rate; 0: as fast as the window allows.
	RatePerSec  float64 `json:"rate_per_sec"`
	AckedPerSec float64 `json:"acked_per_sec"` // SENDs answered 200 per second of sending
	Acked       int64   `json:"acked"`
	Delivered   int64   `json:"delivered"` // SENDs received at B; -1: unknown
	Errors      int64   `json:"errors"`
	Started     int64   `json:"started,omitempty"` // fixed rate: messages started
	Behind      int64   `json:"behind,omitempty"`  // fixed rate: messages due but not started at the end
	OK          bool    `json:"ok"`
	Why         string  `json:"why,omitempty"` // why not OK
	Err         string  `json:"error,omitempty"`
	Seconds     float64 `json:"seconds"` // of sending
	// Confirm: Kamailio's run at the offered rate for a whole equal-rate
	// run's duration, after the search.
	Confirm bool `json:"confirm,omitempty"`
}

// Kamailio's confirmation at the offered rate: attempts, and the factor
// the rate is lowered by after a failed one.
const (
	confirmAttempts = 3
	confirmFactor   = 0.8
)

// onRateTolerance is how far (a share) an equal-rate run's steady-state
// window may be off the offered rate before it is run once more.
const onRateTolerance = 0.05

// onRate reports whether run's steady-state window is within
// onRateTolerance of offered (a run without a window is not retried).
func onRate(run *Run, offered float64) bool {
	if run.Steady == nil || offered <= 0 {
		return true
	}
	return math.Abs(run.Steady.AckedPerSec-offered) <= onRateTolerance*offered
}

func withErr(run *Run, err string) *Run {
	run.Err = err
	return run
}

// judgeStep reads a search run's report: OK when B received >= 99.9 % of
// the SENDs acknowledged, nothing failed and, at a fixed rate, at most
// 1 % of the messages were behind schedule at the end and 99 % of those
// started were acknowledged.
func judgeStep(rate float64, l *LoadReport) Step {
	s := Step{RatePerSec: rate, Acked: l.SendFrames, Errors: l.errorCount(), Delivered: -1, Seconds: l.Seconds}
	if l.Seconds > 0 {
		s.AckedPerSec = float64(l.SendFrames) / l.Seconds
	}
	var why []string
	if l.ReceivedSends != nil {
		s.Delivered = *l.ReceivedSends
		if float64(s.Delivered) < sustainRatio*float64(s.Acked) {
			why = append(why, fmt.Sprintf("delivered %.1f %% of %d acknowledged", 100*float64(s.Delivered)/float64(max(s.Acked, 1)), s.Acked))
		}
	} else {
		why = append(why, "deliveries unknown")
	}
	if s.Acked == 0 {
		why = append(why, "nothing acknowledged")
	}
	if s.Errors > 0 {
		why = append(why, fmt.Sprintf("%d errors", s.Errors))
	}
	if rate > 0 {
		switch sc := l.Schedule; {
		case sc == nil:
			why = append(why, "no schedule in msrpload's report")
		default:
			s.Started, s.Behind = sc.Started, sc.Behind
			if sc.Behind*100 > sc.Started {
				why = append(why, fmt.Sprintf("%d of %d messages behind schedule", sc.Behind, sc.Started+sc.Behind))
			}
			if float64(l.Messages) < 0.99*float64(sc.Started) {
				why = append(why, fmt.Sprintf("%d of %d started acknowledged", l.Messages, sc.Started))
			}
		}
	}
	s.OK = len(why) == 0
	s.Why = joinWhy(why)
	return s
}

func joinWhy(why []string) string {
	out := ""
	for i, w := range why {
		if i > 0 {
			out += "; "
		}
		out += w
	}
	return out
}

// searchRate bisects for the highest rate try accepts, in at most steps
// tries: first at first, then, while no rate has passed, a third of the
// lowest that failed, else halfway between the highest that passed and
// the lowest that failed (hi: the failing bound to start with, such as
// the rate reached as fast as possible). It stops early when the two are
// within precision (0.05: 5 %) of each other, or when a rate at or above
// hi passed. Rates are whole SENDs per second. It returns the highest
// rate that passed, 0 when none did, and try's error, if any, at once.
func searchRate(first, hi float64, steps int, precision float64, try func(rate float64) (bool, error)) (float64, error) {
	lo := 0.0
	cur := math.Round(first)
	for range steps {
		if cur < 1 || (lo > 0 && cur <= lo) || cur >= hi && lo > 0 {
			break
		}
		ok, err := try(cur)
		if err != nil {
			return lo, err
		}
		if ok {
			lo = cur
			if lo >= hi {
				break // as much as could be offered
			}
		} else {
			hi = cur
		}
		if lo > 0 && hi <= lo*(1+precision) {
			break
		}
		if lo == 0 {
			cur = math.Round(hi / 3)
		} else {
			cur = math.Round((lo + hi) / 2)
		}
	}
	return lo, nil
}

// progressSample is one -progress-json line of msrpload with the relay's
// CPU ticks read when the harness got it.
type progressSample struct {
	ElapsedNs int64  `json:"elapsed_ns"`
	Acked     int64  `json:"acked"`
	Delivered int64  `json:"delivered"`
	Errors    int64  `json:"errors"`
	Ticks     uint64 `json:"-"`
	TicksOK   bool   `json:"-"`
}

// Steady is the steady-state window of an equal-rate run.
type Steady struct {
	FromSeconds float64 `json:"from_seconds"` // since the sending started
	ToSeconds   float64 `json:"to_seconds"`
	Acked       int64   `json:"acked"`     // SENDs answered 200 within
	Delivered   int64   `json:"delivered"` // messages complete at B within
	CPUSeconds  float64 `json:"relay_cpu_seconds"`
	CPUPerSend  float64 `json:"relay_cpu_per_send_us"`
	AckedPerSec float64 `json:"acked_per_sec"`
}

// steadyWindow picks the window of samples: from the first sample at or
// after warmup to the last at or before end (the end of the sending),
// both with the relay's CPU read. It needs two such samples with SENDs
// acknowledged between them.
func steadyWindow(samples []progressSample, warmup, end time.Duration) (Steady, error) {
	from, to := -1, -1
	for i, s := range samples {
		if !s.TicksOK || s.ElapsedNs < int64(warmup) || s.ElapsedNs > int64(end) {
			continue
		}
		if from < 0 {
			from = i
		}
		to = i
	}
	if from < 0 || to <= from {
		return Steady{}, fmt.Errorf("steady-state window: fewer than two progress samples between %s and %s (of %d)", warmup, end, len(samples))
	}
	a, b := samples[from], samples[to]
	w := Steady{
		FromSeconds: float64(a.ElapsedNs) / 1e9, ToSeconds: float64(b.ElapsedNs) / 1e9,
		Acked: b.Acked - a.Acked, Delivered: b.Delivered - a.Delivered,
	}
	if b.Ticks < a.Ticks {
		return Steady{}, errors.New("steady-state window: the relay's CPU time went backwards (a process exited?)")
	}
	if w.Acked <= 0 {
		return Steady{}, fmt.Errorf("steady-state window %.1f-%.1f s: no SEND acknowledged", w.FromSeconds, w.ToSeconds)
	}
	w.CPUSeconds = float64(b.Ticks-a.Ticks) / clkTck
	w.CPUPerSend = w.CPUSeconds / float64(w.Acked) * 1e6
	w.AckedPerSec = float64(w.Acked) / (w.ToSeconds - w.FromSeconds)
	return w, nil
}

// SustainedTable is one pair count's equal-rate comparison.
type SustainedTable struct {
	Name          string  `json:"name"`
	Title         string  `json:"title"`
	Pairs         int     `json:"pairs"`
	Window        int     `json:"window"`
	OfferedPerSec float64 `json:"offered_per_sec"` // the equal rate; 0: none found
	// RateFrom says where the offered rate came from.
	RateFrom string          `json:"rate_from"`
	Rows     []*SustainedRow `json:"rows"`
	Notes    []string        `json:"notes,omitempty"`
}

// SustainedRow is one relay of a SustainedTable. -1: unknown.
type SustainedRow struct {
	Relay string `json:"relay"`
	Kind  string `json:"kind"`
	// MaxSustainedPerSec is the highest rate the relay was seen to
	// deliver >= 99.9 % of what it acknowledged at; 0: none found.
	MaxSustainedPerSec float64 `json:"max_sustained_per_sec"`
	// MaxHow: "as fast as possible" (the unlimited run passed) or
	// "fixed rate" (found by bisection).
	MaxHow string `json:"max_how"`
	Steps  []Step `json:"steps"`
	// FixedMaxPerSec is the highest fixed rate that passed (0: none or
	// not searched).
	FixedMaxPerSec float64 `json:"fixed_max_per_sec"`

	// At the offered rate, over the equal-rate runs that completed.
	Runs               int     `json:"runs"`
	AckedPerSecMedian  float64 `json:"acked_per_sec_median"` // steady-state window
	CPUPerSendUSMedian float64 `json:"relay_cpu_per_send_us_median"`
	CPUPerSendUSBest   float64 `json:"relay_cpu_per_send_us_best"`
	// Acked and Delivered are whole runs (drain included).
	Acked     int64 `json:"acked"`
	Delivered int64 `json:"delivered"`
	Errors    int64 `json:"errors"`
	// Kept is false when some run fell behind its schedule (> 1 %).
	Kept  bool    `json:"kept_rate"`
	RSSMB float64 `json:"relay_rss_mb_max"`
	HWMMB float64 `json:"relay_hwm_mb_max"`

	VsKamailioCPU *float64 `json:"vs_kamailio_cpu,omitempty"`
	VsKamailioMax *float64 `json:"vs_kamailio_max_sustained,omitempty"`
}

// sustained runs the scenario for n pairs.
func (r *runner) sustained(ctx context.Context, n int) error {
	so := r.o.sustain
	ts, err := r.startAll(ctx, []int{r.res.Settings.KamailioChildren})
	if err != nil {
		return err
	}
	defer stopAll(ts)
	window := pairsWindow(n)
	st := &SustainedTable{Name: fmt.Sprintf("%s-%d", ScenarioSustained, n), Pairs: n, Window: window}
	la0 := loadAvg()
	// msrpload's default drain (5 s): a relay that delivers late is not
	// counted as losing, and this is the drain of every other scenario.
	base := []string{"-pairs", strconv.Itoa(n), "-window", strconv.Itoa(window), "-size", "100"}
	rows := make([]*SustainedRow, len(ts))
	var kam *SustainedRow
	for i, t := range ts {
		rows[i] = &SustainedRow{Relay: t.name, Kind: t.kind, CPUPerSendUSMedian: -1, CPUPerSendUSBest: -1, AckedPerSecMedian: -1, Kept: true}
		if t.kind == "kamailio" && kam == nil {
			kam = rows[i]
		}
	}
	st.Rows = rows

	// 1. Highest sustained rates.
	for i, t := range ts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.searchMax(ctx, ts, t, rows[i], base, so, rows[i] == kam); err != nil {
			r.fail("%s %s: %v", st.Name, t.name, err)
		}
	}

	// 2. The offered rate.
	switch {
	case so.rate > 0:
		st.OfferedPerSec, st.RateFrom = so.rate, "-sustained-rate"
	case kam != nil && kam.FixedMaxPerSec > 0:
		st.OfferedPerSec, st.RateFrom = kam.FixedMaxPerSec, "Kamailio's highest sustained fixed rate"
	default:
		// No Kamailio (or it sustained nothing): the lowest relay's.
		for _, rw := range rows {
			if rw.Kind == kindFloor {
				continue // not a relay
			}
			if v := rw.MaxSustainedPerSec; v > 0 && (st.OfferedPerSec == 0 || v < st.OfferedPerSec) {
				st.OfferedPerSec = v
			}
		}
		st.OfferedPerSec = math.Round(st.OfferedPerSec / 2)
		st.RateFrom = "half the lowest highest sustained rate of the relays (no Kamailio rate)"
	}
	if st.OfferedPerSec <= 0 {
		st.Title = fmt.Sprintf("sustained: %d pairs × %d in flight: no offered rate", n, window)
		st.Notes = append(st.Notes, "no offered rate: no relay sustained any rate")
		r.res.Sustained = append(r.res.Sustained, st)
		return fmt.Errorf("%s: no relay sustained any rate", st.Name)
	}
	argsAt := func(rate float64) []string {
		return append(slices.Clone(base), "-rate", strconv.FormatFloat(rate, 'f', 0, 64), "-duration", so.duration.String())
	}
	cpu := make([][]float64, len(ts))
	rate := make([][]float64, len(ts))
	add := func(i, round int, run *Run) {
		run.OfferedPerSec = st.OfferedPerSec
		r.res.Runs = append(r.res.Runs, run)
		rw := rows[i]
		if run.Err != "" || run.Load == nil {
			return
		}
		l := run.Load
		rw.Runs++
		rw.Acked += l.SendFrames
		if l.ReceivedSends != nil {
			rw.Delivered += *l.ReceivedSends
		}
		rw.Errors += l.errorCount()
		if sc := l.Schedule; sc == nil || sc.Behind*100 > sc.Started {
			rw.Kept = false
		}
		rw.RSSMB = math.Max(rw.RSSMB, float64(run.Mem.RSSKB)/1024)
		rw.HWMMB = math.Max(rw.HWMMB, float64(run.Mem.HWMKB)/1024)
		if run.Steady != nil {
			cpu[i] = append(cpu[i], run.Steady.CPUPerSend)
			rate[i] = append(rate[i], run.Steady.AckedPerSec)
		}
		if ts[i].mustDeliver() {
			if why := shortfall(l); why != "" {
				r.fail("%s round %d: %s: %s", st.Name, round, ts[i].name, why)
			}
		}
	}

	// 3. Kamailio at the offered rate for a whole equal-rate run: its
	// losses grow with time, and a short search step can pass at a rate
	// a longer run does not. Until one passes (at most confirmAttempts),
	// the rate goes down by confirmFactor; the run that passed is
	// Kamailio's first round.
	kamIdx := slices.IndexFunc(ts, func(t *target) bool { return t.kind == "kamailio" })
	var kamRun *Run
	if kamIdx >= 0 && so.rate == 0 {
		for attempt := 1; ; attempt++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			run := r.runSteady(ctx, st.Name, 1, ts, ts[kamIdx], argsAt(st.OfferedPerSec), so)
			s := Step{RatePerSec: st.OfferedPerSec, Err: run.Err, Delivered: -1, Confirm: true}
			if run.Load != nil {
				s = judgeStep(st.OfferedPerSec, run.Load)
				s.Confirm = true
			}
			kam.Steps = append(kam.Steps, s)
			if s.OK || attempt == confirmAttempts || run.Load == nil {
				kamRun = run
				if s.OK {
					kam.FixedMaxPerSec = st.OfferedPerSec
					if st.OfferedPerSec >= kam.MaxSustainedPerSec {
						kam.MaxSustainedPerSec, kam.MaxHow = st.OfferedPerSec, "fixed rate"
					}
				} else {
					st.Notes = append(st.Notes, fmt.Sprintf("Kamailio did not deliver 99.9 %% of what it acknowledged in a %s run at any rate tried down to %s SEND/s; the relays are compared at that rate anyway", so.duration, num(st.OfferedPerSec, 0)))
				}
				break
			}
			// Not sustained over a whole run: what the search found is
			// above Kamailio's rate; every step at or above this one is.
			r.res.Runs = append(r.res.Runs, withErr(run, "rejected: "+s.Why))
			st.OfferedPerSec = math.Round(st.OfferedPerSec * confirmFactor)
			kam.FixedMaxPerSec, kam.MaxSustainedPerSec, kam.MaxHow = 0, 0, ""
			for _, p := range kam.Steps {
				if p.OK && p.RatePerSec == 0 {
					kam.MaxSustainedPerSec, kam.MaxHow = p.AckedPerSec, "as fast as possible"
				}
			}
		}
	}
	st.Title = fmt.Sprintf("sustained: %d pairs × %d in flight, 100-byte SENDs, every relay at %s SEND/s offered (%s), %s per run, steady-state window after %s",
		n, window, num(st.OfferedPerSec, 0), st.RateFrom, so.duration, so.warmup)

	// 4. Every relay at the offered rate, rounds in alternating order
	// (round 1: Kamailio's confirmed run first).
	order := make([]int, 0, len(ts))
	if kamIdx >= 0 {
		order = append(order, kamIdx)
	}
	for i := range ts {
		if i != kamIdx {
			order = append(order, i)
		}
	}
	for round := 1; round <= so.rounds; round++ {
		o := slices.Clone(order)
		if round%2 == 0 {
			slices.Reverse(o)
		}
		for _, i := range o {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if round == 1 && i == kamIdx && kamRun != nil {
				add(i, round, kamRun)
				continue
			}
			run := r.runSteady(ctx, st.Name, round, ts, ts[i], argsAt(st.OfferedPerSec), so)
			if !onRate(run, st.OfferedPerSec) && ctx.Err() == nil {
				// Once more: on a shared machine a run can fall behind
				// its schedule and catch up in a burst, and its window
				// is then at another rate.
				fmt.Fprintf(r.log, "bench: %s: %s: the window's rate is more than %.0f %% off the offered rate: once more\n", st.Name, ts[i].name, onRateTolerance*100)
				r.res.Runs = append(r.res.Runs, withErr(run, "rejected: the steady-state window's rate is off the offered rate"))
				run = r.runSteady(ctx, st.Name, round, ts, ts[i], argsAt(st.OfferedPerSec), so)
			}
			add(i, round, run)
		}
	}
	for i, rw := range rows {
		if len(cpu[i]) > 0 {
			rw.CPUPerSendUSMedian, rw.CPUPerSendUSBest = median(cpu[i]), minOf(cpu[i])
			rw.AckedPerSecMedian = median(rate[i])
		}
		if rw.Runs == 0 {
			rw.Kept = false
		}
	}
	st.ratios(kam)
	for _, rw := range rows {
		if rw.Runs > 0 && float64(rw.Delivered) < sustainRatio*float64(rw.Acked) {
			st.Notes = append(st.Notes, fmt.Sprintf("%s delivered %.2f %% of what it acknowledged over its equal-rate runs: at the offered rate it did not sustain every run (see -json runs)", rw.Relay, 100*float64(rw.Delivered)/float64(rw.Acked)))
		}
		if rw.Runs > 0 && !rw.Kept {
			st.Notes = append(st.Notes, fmt.Sprintf("%s: some equal-rate run fell behind its schedule (> 1 %% of the messages at the end; the machine, the driver or the relay could not keep up): its CPU per SEND is at the window's acknowledged rate, not the offered one", rw.Relay))
		}
	}
	st.Notes = append(st.Notes,
		fmt.Sprintf("before every run the harness waits until all the relays together use less than %.0f %% of a core (Kamailio goes on forwarding what it acknowledged after a run it could not keep up with); load average (1, 5, 15 min) at the start: %s, at the end: %s", quietShare*100, la0, loadAvg()),
		fmt.Sprintf("highest sustained: the acknowledged rate of a %s run as fast as the window allows when B received >= 99.9 %% of what the relay acknowledged, else the highest fixed rate (msrpload -rate, %s per step, at most %d steps of bisection) at which it did, kept the schedule and had no errors; Kamailio's fixed rate is always searched, and is the offered rate", so.probe, so.probe, so.steps),
		fmt.Sprintf("the offered rate is then confirmed with Kamailio for a whole %s run (its losses grow with time); when it delivers less than 99.9 %%, the rate is lowered by a fifth and tried again, up to %d times; the run that passed is its first round", so.duration, confirmAttempts),
		"relay CPU per SEND: the relay's utime+stime (/proc/PID/stat; Kamailio: all its processes) between msrpload's first progress line at or after the warm-up and its last before the sending ends, ÷ the SENDs acknowledged between the same two lines; delivered/acked counts whole runs, drain included")
	st.Notes = append(st.Notes, r.floorNotes()...)
	if kam != nil {
		if sum := logProblems(ts[slices.IndexFunc(ts, func(t *target) bool { return t.kind == "kamailio" })].kam.Log(), 3); sum != "" {
			st.Notes = append(st.Notes, kam.Relay+" log, over the whole scenario: "+sum)
		}
	}
	r.res.Sustained = append(r.res.Sustained, st)
	return ctx.Err()
}

// ratios fills the rows' ratios to Kamailio's row.
func (st *SustainedTable) ratios(kam *SustainedRow) {
	if kam == nil {
		return
	}
	for _, rw := range st.Rows {
		rw.VsKamailioCPU = quotient(rw.CPUPerSendUSMedian, kam.CPUPerSendUSMedian)
		rw.VsKamailioMax = quotient(rw.MaxSustainedPerSec, kam.MaxSustainedPerSec)
	}
}

// searchMax finds rw's highest sustained rate (see the top of the file).
// fixed: search the fixed rates even when the unlimited run passed.
func (r *runner) searchMax(ctx context.Context, ts []*target, t *target, rw *SustainedRow, base []string, so sustainOpts, fixed bool) error {
	step := func(rate float64) (Step, error) {
		args := append(slices.Clone(base), "-duration", so.probe.String())
		if rate > 0 {
			args = append(args, "-rate", strconv.FormatFloat(rate, 'f', 0, 64))
		}
		if t.dead != nil {
			return Step{}, t.dead
		}
		r.settle(ctx, ts)
		lr, err := runLoad(ctx, r.msrpload, append(t.loadArgs(), args...))
		if aerr := t.alive(); aerr != nil {
			t.dead = aerr
			return Step{}, aerr
		}
		if err != nil {
			s := Step{RatePerSec: rate, Err: err.Error(), Delivered: -1}
			rw.Steps = append(rw.Steps, s)
			fmt.Fprintf(r.log, "bench: sustained %d pairs: %s at %s: %v\n", rw.pairs(base), t.name, rateName(rate), oneLineTrim(err.Error()))
			return s, nil
		}
		s := judgeStep(rate, lr.report)
		rw.Steps = append(rw.Steps, s)
		fmt.Fprintf(r.log, "bench: sustained %d pairs: %s at %s: %.0f acked/s, delivered %d of %d, ok %v %s\n",
			rw.pairs(base), t.name, rateName(rate), s.AckedPerSec, s.Delivered, s.Acked, s.OK, s.Why)
		return s, nil
	}
	s0, err := step(0)
	if err != nil {
		return err
	}
	if s0.OK {
		rw.MaxSustainedPerSec, rw.MaxHow = s0.AckedPerSec, "as fast as possible"
		if !fixed {
			return nil
		}
	}
	hi := s0.AckedPerSec
	first := 0.9 * hi
	if !s0.OK && s0.Delivered > 0 && s0.Acked > 0 {
		// What it really moved as fast as possible.
		first = 0.9 * hi * float64(s0.Delivered) / float64(s0.Acked)
	}
	if hi <= 0 {
		return fmt.Errorf("as fast as possible: nothing acknowledged (%s)", s0.Err)
	}
	lo, err := searchRate(first, hi, so.steps, 0.05, func(rate float64) (bool, error) {
		s, err := step(rate)
		return s.OK, err
	})
	rw.FixedMaxPerSec = lo
	if lo > rw.MaxSustainedPerSec {
		rw.MaxSustainedPerSec, rw.MaxHow = lo, "fixed rate"
	}
	return err
}

// pairs reads -pairs back from the flags (for the progress lines).
func (rw *SustainedRow) pairs(base []string) int {
	for i, a := range base {
		if a == "-pairs" && i+1 < len(base) {
			n, _ := strconv.Atoi(base[i+1])
			return n
		}
	}
	return 0
}

func rateName(rate float64) string {
	if rate == 0 {
		return "as fast as possible"
	}
	return num(rate, 0) + "/s"
}

// runSteady runs msrpload with args against t, reading its progress lines
// and the relay's CPU at each, and returns the run with its steady-state
// window.
func (r *runner) runSteady(ctx context.Context, table string, round int, ts []*target, t *target, args []string, so sustainOpts) *Run {
	run := &Run{Table: table, Relay: t.name, Round: round}
	defer func() { fmt.Fprintln(r.log, "bench:", progressLine(run)) }()
	if t.dead != nil {
		run.Err = "relay not running: " + t.dead.Error()
		return run
	}
	r.settle(ctx, ts)
	pids, err := t.pids()
	if err != nil {
		return r.relayDied(run, t, err)
	}
	var samples []progressSample
	onSample := func(s progressSample) {
		ticks, terr := cpuTicks(pids)
		s.Ticks, s.TicksOK = ticks, terr == nil
		samples = append(samples, s)
	}
	full := append(t.loadArgs(), args...)
	lr, lerr := runLoadProgress(ctx, r.msrpload, full, onSample)
	if lr != nil {
		run.MsrploadExit = lr.exitCode
		run.DriverCPUSeconds = lr.cpu.Seconds()
		run.Load = lr.report
	}
	if m, err := readMem(pids); err == nil {
		run.Mem = m
	}
	if err := t.alive(); err != nil {
		return r.relayDied(run, t, err)
	}
	if lerr != nil {
		run.Err = lerr.Error()
		r.fail("%s round %d: %s: %v", table, round, t.name, lerr)
		return run
	}
	w, err := steadyWindow(samples, so.warmup, so.duration)
	if err != nil {
		run.Err = err.Error()
		r.fail("%s round %d: %s: %v", table, round, t.name, err)
		return run
	}
	run.Steady = &w
	run.RelayCPUSeconds = w.CPUSeconds
	return run
}

// Quiescence before each run of the sustained scenario: Kamailio answers
// 200 before it forwards, so after a run it could not keep up with it
// goes on forwarding (or failing to) for seconds, and that CPU would be
// charged to the next run, of whichever relay. The harness waits until
// every relay together used less than quietShare of a core over
// quietPoll, at most quietMax.
const (
	quietPoll  = 500 * time.Millisecond
	quietShare = 0.05
	quietMax   = 20 * time.Second
)

// settle waits for quiesce and notes when the relays did not become quiet.
func (r *runner) settle(ctx context.Context, ts []*target) {
	if d, ok := quiesce(ctx, ts); !ok && ctx.Err() == nil {
		r.note("sustained: the relays still used more than %.0f %% of a core after %s of waiting; measuring anyway", quietShare*100, d.Round(time.Second))
	}
}

// quiet reports whether ticks used over a poll interval are below
// quietShare of a core.
func quiet(ticks uint64, interval time.Duration) bool {
	return float64(ticks)/clkTck < quietShare*interval.Seconds()
}

// quiesce waits until the relays of ts are quiet (see quietPoll); it
// returns how long it waited and whether they became quiet.
func quiesce(ctx context.Context, ts []*target) (time.Duration, bool) {
	var pids []int
	for _, t := range ts {
		if t.dead != nil {
			continue
		}
		if p, err := t.pids(); err == nil {
			pids = append(pids, p...)
		}
	}
	start := time.Now()
	if len(pids) == 0 {
		return 0, true
	}
	prev, err := cpuTicks(pids)
	if err != nil {
		return 0, false
	}
	tick := time.NewTicker(quietPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-tick.C:
		}
		now, err := cpuTicks(pids)
		if err != nil {
			return time.Since(start), false
		}
		if now >= prev && quiet(now-prev, quietPoll) {
			return time.Since(start), true
		}
		if time.Since(start) >= quietMax {
			return time.Since(start), false
		}
		prev = now
	}
}

// loadAvg returns the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
