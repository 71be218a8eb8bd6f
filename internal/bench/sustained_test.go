package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
)

func TestSearchRate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		first, hi float64
		steps     int
		threshold float64 // try passes at rates <= threshold
		want      float64
		tries     []float64
	}{
		{"first passes, then halves toward hi, stops at precision", 900, 1000, 4, 960, 950, []float64{900, 950, 975}},
		{"passes up to precision", 900, 1000, 10, 1000, 975, []float64{900, 950, 975}},
		{"first fails, a third, then halves", 900, 1000, 4, 400, 300, []float64{900, 300, 600, 450}},
		{"nothing passes", 900, 1000, 3, 10, 0, []float64{900, 300, 100}},
		{"first at hi passes: no more", 1000, 1000, 4, 5000, 1000, []float64{1000}},
		{"one step", 900, 1000, 1, 5000, 900, []float64{900}},
		{"rates below one are not tried", 2, 3, 5, 0, 0, []float64{2, 1}},
		{"converges below the threshold", 9000, 10000, 8, 3333, 3282, []float64{9000, 3000, 6000, 4500, 3750, 3375, 3188, 3282}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tried []float64
			got, err := searchRate(tc.first, tc.hi, tc.steps, 0.05, func(r float64) (bool, error) {
				tried = append(tried, r)
				return r <= tc.threshold, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || !equalFloats(tried, tc.tries) {
				t.Fatalf("searchRate = %v after %v, want %v after %v", got, tried, tc.want, tc.tries)
			}
			if got > tc.threshold {
				t.Fatalf("searchRate = %v, above the threshold %v: a rate that failed", got, tc.threshold)
			}
		})
	}
	t.Run("error stops the search", func(t *testing.T) {
		boom := errors.New("relay died")
		n := 0
		got, err := searchRate(900, 1000, 4, 0.05, func(r float64) (bool, error) {
			n++
			if n == 2 {
				return false, boom
			}
			return true, nil
		})
		if !errors.Is(err, boom) || got != 900 || n != 2 {
			t.Fatalf("searchRate = %v, %v after %d tries; want 900 (the last that passed), the error, 2 tries", got, err, n)
		}
	})
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSteadyWindow(t *testing.T) {
	s := func(sec float64, acked, delivered int64, ticks uint64) progressSample {
		return progressSample{ElapsedNs: int64(sec * 1e9), Acked: acked, Delivered: delivered, Ticks: ticks, TicksOK: true}
	}
	noTicks := s(3, 3000, 3000, 0)
	noTicks.TicksOK = false
	for _, tc := range []struct {
		name          string
		samples       []progressSample
		warmup, end   time.Duration
		want          Steady
		wantErrSubstr string
	}{
		{
			name: "warm-up and the drain left out",
			samples: []progressSample{
				s(1.001, 500, 400, 50), s(2.001, 1500, 1450, 70), s(3.001, 2500, 2450, 90),
				s(4.001, 3500, 3450, 110), s(5.001, 4500, 4450, 130), s(6.001, 4600, 4600, 135),
			},
			warmup: 2 * time.Second, end: 6 * time.Second,
			want: Steady{FromSeconds: 2.001, ToSeconds: 5.001, Acked: 3000, Delivered: 3000, CPUSeconds: 0.6, CPUPerSend: 200, AckedPerSec: 1000},
		},
		{
			name:    "samples without CPU skipped",
			samples: []progressSample{s(2.0, 1000, 1000, 10), noTicks, s(4.0, 5000, 4000, 50)},
			warmup:  2 * time.Second, end: 6 * time.Second,
			want: Steady{FromSeconds: 2, ToSeconds: 4, Acked: 4000, Delivered: 3000, CPUSeconds: 0.4, CPUPerSend: 100, AckedPerSec: 2000},
		},
		{
			name:    "one sample in the window",
			samples: []progressSample{s(1, 10, 10, 1), s(2.5, 20, 20, 2), s(6.5, 30, 30, 3)},
			warmup:  2 * time.Second, end: 6 * time.Second, wantErrSubstr: "fewer than two",
		},
		{
			name:   "no samples",
			warmup: 2 * time.Second, end: 6 * time.Second, wantErrSubstr: "fewer than two",
		},
		{
			name:    "nothing acknowledged",
			samples: []progressSample{s(2, 10, 10, 1), s(3, 10, 10, 2)},
			warmup:  2 * time.Second, end: 6 * time.Second, wantErrSubstr: "no SEND acknowledged",
		},
		{
			name:    "CPU backwards",
			samples: []progressSample{s(2, 10, 10, 9), s(3, 20, 20, 2)},
			warmup:  2 * time.Second, end: 6 * time.Second, wantErrSubstr: "backwards",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := steadyWindow(tc.samples, tc.warmup, tc.end)
			if tc.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("steadyWindow = %+v, %v; want an error with %q", got, err, tc.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !closeSteady(got, tc.want) {
				t.Fatalf("steadyWindow = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func closeSteady(a, b Steady) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-6*math.Max(1, math.Abs(y)) }
	return a.Acked == b.Acked && a.Delivered == b.Delivered && near(a.FromSeconds, b.FromSeconds) && near(a.ToSeconds, b.ToSeconds) &&
		near(a.CPUSeconds, b.CPUSeconds) && near(a.CPUPerSend, b.CPUPerSend) && near(a.AckedPerSec, b.AckedPerSec)
}

func TestJudgeStep(t *testing.T) {
	rep := func(acked, delivered int64, sched *Schedule, errs map[string]int64) *LoadReport {
		return &LoadReport{SendFrames: acked, Messages: acked, ReceivedSends: &delivered, Seconds: 2, Schedule: sched, Errors: errs}
	}
	for _, tc := range []struct {
		name    string
		rate    float64
		l       *LoadReport
		ok      bool
		whySub  string
		ackedPS float64
	}{
		{"all delivered, as fast as possible", 0, rep(10000, 10000, nil, nil), true, "", 5000},
		{"99.9 % delivered is enough", 0, rep(10000, 9990, nil, nil), true, "", 5000},
		{"99.8 % is not", 0, rep(10000, 9980, nil, nil), false, "delivered 99.8 %", 5000},
		{"errors", 0, rep(10000, 10000, nil, map[string]int64{"timeout": 1}), false, "1 errors", 5000},
		{"nothing", 0, rep(0, 0, nil, nil), false, "nothing acknowledged", 0},
		{"fixed rate kept", 5000, rep(10000, 10000, &Schedule{Started: 10000, Behind: 100}, nil), true, "", 5000},
		{"fixed rate behind", 5000, rep(10000, 10000, &Schedule{Started: 10000, Behind: 101}, nil), false, "behind schedule", 5000},
		{"fixed rate, started not acknowledged", 5000, rep(9000, 9000, &Schedule{Started: 10000}, nil), false, "9000 of 10000 started acknowledged", 4500},
		{"fixed rate, no schedule", 5000, rep(10000, 10000, nil, nil), false, "no schedule", 5000},
		{"deliveries unknown", 0, &LoadReport{SendFrames: 10, Messages: 10, Seconds: 1}, false, "deliveries unknown", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := judgeStep(tc.rate, tc.l)
			if s.OK != tc.ok || !strings.Contains(s.Why, tc.whySub) || s.AckedPerSec != tc.ackedPS {
				t.Fatalf("judgeStep = %+v, want ok %v, why with %q, %v acked/s", s, tc.ok, tc.whySub, tc.ackedPS)
			}
		})
	}
}

func TestRenderSustained(t *testing.T) {
	kam := &SustainedRow{Relay: "Kamailio", Kind: "kamailio", MaxSustainedPerSec: 20000, MaxHow: "fixed rate", FixedMaxPerSec: 20000,
		Runs: 1, AckedPerSecMedian: 20000, CPUPerSendUSMedian: 40, CPUPerSendUSBest: 40, Acked: 100000, Delivered: 99950, Kept: true, RSSMB: 36,
		Steps: []Step{{RatePerSec: 0, AckedPerSec: 80000, Why: "delivered 50.0 % of 240000 acknowledged"}, {RatePerSec: 20000, AckedPerSec: 20000, OK: true, Confirm: true, Seconds: 6}}}
	scope := &SustainedRow{Relay: "msrpscope, tracing off", Kind: "msrpscope", MaxSustainedPerSec: 60000, MaxHow: "as fast as possible",
		Runs: 1, AckedPerSecMedian: 20000, CPUPerSendUSMedian: 10, CPUPerSendUSBest: 10, Acked: 120000, Delivered: 120000, Kept: true, RSSMB: 48, HWMMB: 50}
	st := &SustainedTable{Name: "sustained-200", Title: "sustained 200", Pairs: 200, Window: 4, OfferedPerSec: 20000, Rows: []*SustainedRow{scope, kam}}
	st.ratios(kam)
	if scope.VsKamailioCPU == nil || *scope.VsKamailioCPU != 0.25 || scope.VsKamailioMax == nil || *scope.VsKamailioMax != 3 {
		t.Fatalf("ratios %v %v, want 0.25 and 3", scope.VsKamailioCPU, scope.VsKamailioMax)
	}
	res := &Result{Sustained: []*SustainedTable{st}}
	var buf bytes.Buffer
	render(&buf, res)
	for _, want := range []string{
		"### sustained 200",
		"| msrpscope, tracing off | 60,000 | as fast as possible | 3.00 | 20,000 | 20,000 | 10.0 | 10.0 | 0.25 | 100.00 % of 120,000 | yes | 0 | 48 (50) |",
		"| Kamailio | 20,000 | fixed rate | 1.00 | 20,000 | 20,000 | 40.0 | 40.0 | 1.00 | 99.95 % of 100,000 | yes | 0 | 36 (Pss, all) |",
		"Kamailio, search: as fast as possible: no (80,000 acked/s; delivered 50.0 % of 240000 acknowledged); 20,000/s (whole run, 6 s): ok (20,000 acked/s)",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, buf.String())
		}
	}
	// -json and -from round trip.
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js, &back); err != nil || len(back.Sustained) != 1 || back.Sustained[0].Rows[1].Steps[1].Confirm != true {
		t.Fatalf("JSON round trip: %v %+v", err, back.Sustained)
	}
}

func TestQuiet(t *testing.T) {
	for _, tc := range []struct {
		ticks    uint64
		interval time.Duration
		want     bool
	}{
		{0, 500 * time.Millisecond, true},
		{2, 500 * time.Millisecond, true},   // 20 ms of 500: 4 %
		{3, 500 * time.Millisecond, false},  // 30 ms: 6 %
		{50, 500 * time.Millisecond, false}, // a whole core
		{4, time.Second, true},
		{5, time.Second, false},
	} {
		if got := quiet(tc.ticks, tc.interval); got != tc.want {
			t.Errorf("quiet(%d ticks, %s) = %v, want %v", tc.ticks, tc.interval, got, tc.want)
		}
	}
}

// TestSustainedIntegration runs the sustained scenario for 2 pairs with
// short runs against msrpscope (and Kamailio, when installed) on loopback.
func TestSustainedIntegration(t *testing.T) {
	scope, load := buildBinaries(t)
	base := []string{"-msrpscope", scope, "-msrpload", load, "-only", "sustained", "-pair-counts", "2", "-tracing", "off",
		"-sustained-probe", "1s", "-sustained-duration", "3s", "-sustained-warmup", "1s", "-sustained-steps", "1", "-json"}
	runMain := func(t *testing.T, args []string) *SustainedTable {
		var stdout, stderr bytes.Buffer
		code := Main(args, &stdout, &stderr)
		t.Logf("stderr:\n%s", stderr.String())
		var res Result
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("Main's -json output: %v\n%s", err, stdout.String())
		}
		if len(res.Sustained) != 1 || res.Sustained[0].Pairs != 2 {
			t.Fatalf("sustained tables %+v, want one for 2 pairs", res.Sustained)
		}
		st := res.Sustained[0]
		if st.OfferedPerSec <= 0 {
			t.Fatalf("offered rate %v (%s)", st.OfferedPerSec, st.RateFrom)
		}
		for _, rw := range st.Rows {
			if rw.Runs != 1 || rw.Acked == 0 || rw.CPUPerSendUSMedian <= 0 || rw.AckedPerSecMedian <= 0 || rw.RSSMB <= 0 || len(rw.Steps) == 0 {
				t.Errorf("%s: %+v: want one run with SENDs, a steady-state CPU per SEND and rate, memory and search steps", rw.Relay, rw)
			}
			if (rw.Kind == "msrpscope" || rw.Kind == kindFloor) && (rw.Delivered != rw.Acked || rw.MaxSustainedPerSec <= 0) {
				t.Errorf("%s delivered %d of %d, highest sustained %v", rw.Relay, rw.Delivered, rw.Acked, rw.MaxSustainedPerSec)
			}
		}
		if code != 0 || !res.OK {
			t.Fatalf("Main = %d, ok %v, failures %q", code, res.OK, res.Failures)
		}
		return st
	}
	t.Run("msrpscope", func(t *testing.T) {
		st := runMain(t, append(base, "-kamailio=false", "-floor", "none"))
		if len(st.Rows) != 1 || !strings.Contains(st.RateFrom, "half the lowest") {
			t.Fatalf("rows %+v, rate from %q; want msrpscope alone at half its highest sustained rate", st.Rows, st.RateFrom)
		}
		if got, want := st.OfferedPerSec, math.Round(st.Rows[0].MaxSustainedPerSec/2); got != want {
			t.Fatalf("offered %v, want %v", got, want)
		}
	})
	t.Run("against Kamailio", func(t *testing.T) {
		kamailio.Binary(t, kamailio.DefaultModPath) // skips with the reason when it is not installed
		st := runMain(t, append(base, "-kamailio-children", "2", "-sustained-rate", "500"))
		if len(st.Rows) != 3 || st.Rows[1].Kind != kindFloor || st.Rows[2].Kind != "kamailio" || st.OfferedPerSec != 500 {
			t.Fatalf("rows %+v at %v/s, want msrpscope, the floor and Kamailio at 500/s", st.Rows, st.OfferedPerSec)
		}
		if st.Rows[0].VsKamailioCPU == nil || st.Rows[1].VsKamailioCPU == nil {
			t.Fatal("no msrpscope/Kamailio or floor/Kamailio CPU ratio")
		}
		if !slices.Contains(st.Notes, floorNote) {
			t.Fatalf("notes %q: want the floor's", st.Notes)
		}
	})
}

func TestOnRate(t *testing.T) {
	for _, tc := range []struct {
		steady  *Steady
		offered float64
		want    bool
	}{
		{&Steady{AckedPerSec: 10000}, 10000, true},
		{&Steady{AckedPerSec: 10500}, 10000, true},
		{&Steady{AckedPerSec: 9500}, 10000, true},
		{&Steady{AckedPerSec: 10600}, 10000, false}, // a catch-up burst
		{&Steady{AckedPerSec: 9000}, 10000, false},  // behind
		{nil, 10000, true},                          // no window: nothing to retry for
	} {
		if got := onRate(&Run{Steady: tc.steady}, tc.offered); got != tc.want {
			t.Errorf("onRate(%+v, %v) = %v, want %v", tc.steady, tc.offered, got, tc.want)
		}
	}
}

// TestRunReadingStderr: progress lines go to onSample in order, every
// other line (a malformed progress line too) stays in the stderr text.
func TestRunReadingStderr(t *testing.T) {
	script := `echo 'progress {"elapsed_ns":1000000000,"acked":10,"delivered":9,"errors":0}' >&2
echo 'msrpload: a warning' >&2
echo 'progress {broken' >&2
echo 'progress {"elapsed_ns":2000000000,"acked":30,"delivered":30,"errors":1}' >&2
echo '{"send_frames": 30}'`
	cmd := exec.Command("sh", "-c", script)
	var stdout, other bytes.Buffer
	cmd.Stdout = &stdout
	var got []progressSample
	if err := runReadingStderr(cmd, &other, func(s progressSample) { got = append(got, s) }); err != nil {
		t.Fatal(err)
	}
	want := []progressSample{{ElapsedNs: 1e9, Acked: 10, Delivered: 9}, {ElapsedNs: 2e9, Acked: 30, Delivered: 30, Errors: 1}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("samples %+v, want %+v", got, want)
	}
	if o := other.String(); o != "msrpload: a warning\nprogress {broken\n" {
		t.Fatalf("other stderr %q", o)
	}
	if stdout.String() != "{\"send_frames\": 30}\n" {
		t.Fatalf("stdout %q", stdout.String())
	}
}
