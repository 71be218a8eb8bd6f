package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Table is one scenario's summary: a row per relay configuration.
type Table struct {
	Name  string     `json:"name"`
	Title string     `json:"title"`
	Unit  string     `json:"unit"` // "SEND": rates in SEND/s, CPU per SEND; "MB": MB/s, CPU per MB
	Rows  []*Summary `json:"rows"`
	Notes []string   `json:"notes,omitempty"`
}

// Summary is one relay configuration over the rounds (failed runs left
// out). Medians and bests are over rounds; counts are sums; -1: unknown
// (no run measured it).
type Summary struct {
	Relay string `json:"relay"`
	Kind  string `json:"kind"` // msrpscope, kamailio, floor (msrpload forward), direct (msrpload -direct), raw, proxy (raw TCP through a minimal proxy)
	Note  string `json:"note,omitempty"`
	Runs  int    `json:"runs"`

	SendPerSecMedian float64 `json:"send_per_sec_median"`
	SendPerSecBest   float64 `json:"send_per_sec_best"`
	MBPerSecMedian   float64 `json:"mb_per_sec_median"`
	MBPerSecBest     float64 `json:"mb_per_sec_best"`
	// DeliveredPerSecMedian is SENDs received at B per second of sending:
	// what a relay that acknowledges before forwarding really moved.
	DeliveredPerSecMedian float64 `json:"delivered_per_sec_median"`
	// Relay CPU per SEND answered 200 (µs) and per MB of payload (ms).
	CPUPerSendUSMedian float64 `json:"relay_cpu_per_send_us_median"`
	CPUPerSendUSBest   float64 `json:"relay_cpu_per_send_us_best"`
	// CPUPerDeliveredUSMedian is relay CPU per SEND that reached B (µs):
	// the same as per SEND for a relay that loses nothing.
	CPUPerDeliveredUSMedian float64 `json:"relay_cpu_per_delivered_us_median"`
	CPUPerMBmsMedian        float64 `json:"relay_cpu_per_mb_ms_median"`
	CPUPerMBmsBest          float64 `json:"relay_cpu_per_mb_ms_best"`
	// DriverCPUPerSendUS is msrpload's own CPU per SEND (median).
	DriverCPUPerSendUS float64 `json:"driver_cpu_per_send_us_median"`

	Acked     int64 `json:"acked"`     // SENDs answered 200 to the sender
	Delivered int64 `json:"delivered"` // SENDs the receivers got; -1: unknown
	// Messages and MessagesDelivered (hash-checked by msrpload; -1: this
	// msrpload does not report it).
	Messages          int64   `json:"messages"`
	MessagesDelivered int64   `json:"messages_delivered"`
	Errors            int64   `json:"errors"`
	P99msMedian       float64 `json:"send_p99_ms_median"` // -1: unknown
	RSSMB             float64 `json:"relay_rss_mb_max"`
	HWMMB             float64 `json:"relay_hwm_mb_max"`
	HEPSent           int64   `json:"hep_sent,omitempty"`
	HEPReceived       int64   `json:"hep_received,omitempty"`

	// Ratios to the reference Kamailio row of the same table (the one
	// with the best median rate): rate and CPU per unit, medians.
	VsKamailioRate *float64 `json:"vs_kamailio_rate,omitempty"`
	// VsKamailioDelivered: delivered/s medians (SEND tables).
	VsKamailioDelivered *float64 `json:"vs_kamailio_delivered,omitempty"`
	VsKamailioCPU       *float64 `json:"vs_kamailio_cpu,omitempty"`
	// VsKamailioCPUDelivered: CPU per delivered SEND (SEND tables).
	VsKamailioCPUDelivered *float64 `json:"vs_kamailio_cpu_delivered,omitempty"`
	// PctOfRaw is the median MB/s as a percentage of raw loopback TCP's.
	PctOfRaw *float64 `json:"pct_of_raw_tcp,omitempty"`
	// PctOfDirect (relay rows) is the median MB/s as a percentage of the
	// msrpload -direct row's: the share of what the driver alone reaches.
	PctOfDirect *float64 `json:"pct_of_direct,omitempty"`
	// PctOfProxy is the median MB/s as a percentage of the raw TCP
	// through a minimal copying proxy row's (read/write through a buffer).
	PctOfProxy *float64 `json:"pct_of_proxy,omitempty"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func maxOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Max(v)
}

func minOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Min(v)
}

// summarize builds the table of spec from its runs.
func summarize(spec *tableSpec, runs []*Run) *Table {
	tb := &Table{Name: spec.name, Title: spec.title, Unit: spec.unit, Notes: spec.notes}
	for _, rw := range spec.rows {
		s := &Summary{Relay: rw.label, Kind: rw.target.kind, Note: rw.note, Delivered: 0, MessagesDelivered: 0}
		var sps, mbps, cpuSend, cpuMB, drv, p99, dps, cpuDel []float64
		deliveredKnown, msgKnown := true, true
		for _, run := range runs {
			if run.Relay != rw.label || run.Err != "" {
				continue
			}
			s.Runs++
			if run.Load == nil {
				mbps = append(mbps, run.RawMBPerSec)
				continue
			}
			l := run.Load
			sps = append(sps, l.SendFramesPerSec)
			mbps = append(mbps, l.MBPerSec)
			if l.SendFrames > 0 {
				if rw.target.kind != kindDirect { // no relay
					cpuSend = append(cpuSend, run.RelayCPUSeconds/float64(l.SendFrames)*1e6)
				}
				drv = append(drv, run.DriverCPUSeconds/float64(l.SendFrames)*1e6)
			}
			if mb := l.MBPerSec * l.Seconds; mb > 0 && rw.target.kind != kindDirect {
				cpuMB = append(cpuMB, run.RelayCPUSeconds/mb*1e3)
			}
			if v := l.sendP99(); v >= 0 {
				p99 = append(p99, float64(v)/1e6)
			}
			s.Acked += l.SendFrames
			if l.ReceivedSends != nil {
				if l.Seconds > 0 {
					dps = append(dps, float64(*l.ReceivedSends)/l.Seconds)
				}
				if *l.ReceivedSends > 0 {
					cpuDel = append(cpuDel, run.RelayCPUSeconds/float64(*l.ReceivedSends)*1e6)
				}
				s.Delivered += *l.ReceivedSends
			} else {
				deliveredKnown = false
			}
			s.Messages += l.Messages
			if l.MessagesDelivered != nil {
				s.MessagesDelivered += *l.MessagesDelivered
			} else {
				msgKnown = false
			}
			s.Errors += l.errorCount()
			s.RSSMB = math.Max(s.RSSMB, float64(run.Mem.RSSKB)/1024)
			s.HWMMB = math.Max(s.HWMMB, float64(run.Mem.HWMKB)/1024)
			s.HEPSent += run.HEPSent
			s.HEPReceived += run.HEPReceived
		}
		if !deliveredKnown || s.Runs == 0 {
			s.Delivered = -1
		}
		if !msgKnown || s.Runs == 0 {
			s.MessagesDelivered = -1
		}
		s.SendPerSecMedian, s.SendPerSecBest = median(sps), maxOf(sps)
		s.MBPerSecMedian, s.MBPerSecBest = median(mbps), maxOf(mbps)
		s.CPUPerSendUSMedian, s.CPUPerSendUSBest = median(cpuSend), minOf(cpuSend)
		s.CPUPerMBmsMedian, s.CPUPerMBmsBest = median(cpuMB), minOf(cpuMB)
		s.DriverCPUPerSendUS = median(drv)
		s.DeliveredPerSecMedian = median(dps)
		s.CPUPerDeliveredUSMedian = median(cpuDel)
		s.P99msMedian = median(p99)
		if len(p99) == 0 {
			s.P99msMedian = -1
		}
		tb.Rows = append(tb.Rows, s)
	}
	tb.ratios()
	for _, s := range tb.Rows {
		s.unknownNaN()
	}
	return tb
}

// unknownNaN sets the fields without a value (NaN: no run measured them)
// to -1, "unknown", which JSON can carry.
func (s *Summary) unknownNaN() {
	for _, f := range []*float64{
		&s.SendPerSecMedian, &s.SendPerSecBest, &s.MBPerSecMedian, &s.MBPerSecBest, &s.DeliveredPerSecMedian,
		&s.CPUPerSendUSMedian, &s.CPUPerSendUSBest, &s.CPUPerMBmsMedian, &s.CPUPerMBmsBest, &s.CPUPerDeliveredUSMedian,
		&s.DriverCPUPerSendUS, &s.P99msMedian, &s.RSSMB, &s.HWMMB,
	} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = -1
		}
	}
}

// rate and cpu return the row's median rate and CPU per unit.
func (tb *Table) rate(s *Summary) float64 {
	if tb.Unit == "MB" {
		return s.MBPerSecMedian
	}
	return s.SendPerSecMedian
}

func (tb *Table) cpu(s *Summary) float64 {
	if tb.Unit == "MB" {
		return s.CPUPerMBmsMedian
	}
	return s.CPUPerSendUSMedian
}

// kamailioRef returns the Kamailio row with the best median delivered/s
// (SEND tables; Kamailio acknowledges before forwarding) or MB/s, or nil.
func (tb *Table) kamailioRef() *Summary {
	best := func(s *Summary) float64 {
		if tb.Unit == "SEND" && s.DeliveredPerSecMedian > 0 {
			return s.DeliveredPerSecMedian
		}
		return tb.rate(s)
	}
	var ref *Summary
	for _, s := range tb.Rows {
		if s.Kind == "kamailio" && s.Runs > 0 && (ref == nil || best(s) > best(ref)) {
			ref = s
		}
	}
	return ref
}

func (tb *Table) ratios() {
	var raw, direct, proxy *Summary
	for _, s := range tb.Rows {
		switch {
		case s.Runs == 0:
		case s.Kind == kindRaw:
			raw = s
		case s.Kind == kindProxy && proxy == nil: // the first: the copying one
			proxy = s
		case s.Kind == kindDirect:
			direct = s
		}
	}
	ref := tb.kamailioRef()
	for _, s := range tb.Rows {
		if s.Runs == 0 || s.Kind == kindRaw {
			continue
		}
		if raw != nil && (s.Kind == "msrpscope" || s.Kind == kindDirect || s.Kind == kindProxy) {
			s.PctOfRaw = percent(s.MBPerSecMedian, raw.MBPerSecMedian)
		}
		if s.Kind == kindProxy {
			continue
		}
		if proxy != nil {
			s.PctOfProxy = percent(s.MBPerSecMedian, proxy.MBPerSecMedian)
		}
		if s.Kind == kindDirect {
			continue // no relay: no ratios to Kamailio or to itself
		}
		if direct != nil {
			s.PctOfDirect = percent(s.MBPerSecMedian, direct.MBPerSecMedian)
		}
		if ref != nil {
			s.VsKamailioRate = quotient(tb.rate(s), tb.rate(ref))
			s.VsKamailioCPU = quotient(tb.cpu(s), tb.cpu(ref))
			if tb.Unit == "SEND" {
				s.VsKamailioDelivered = quotient(s.DeliveredPerSecMedian, ref.DeliveredPerSecMedian)
				s.VsKamailioCPUDelivered = quotient(s.CPUPerDeliveredUSMedian, ref.CPUPerDeliveredUSMedian)
			}
		}
	}
}

// percent returns a/b as a percentage, or nil when unknown.
func percent(a, b float64) *float64 {
	q := quotient(a, b)
	if q != nil {
		*q *= 100
	}
	return q
}

// quotient returns a/b, or nil when either is unknown or b is 0.
func quotient(a, b float64) *float64 {
	q := a / b
	if math.IsNaN(q) || math.IsInf(q, 0) || a < 0 || b <= 0 {
		return nil
	}
	return &q
}

// column is one table column: a header and the cell of a row.
type column struct {
	head string
	cell func(tb *Table, s *Summary) string
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || v < 0 {
		return "—"
	}
	return group(fmt.Sprintf("%.*f", prec, v))
}

// group puts thousands separators into the integer part of a formatted number.
func group(s string) string {
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

func ratio(p *float64) string {
	if p == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f", *p)
}

func deliveredCell(s *Summary) string {
	switch {
	case s.Runs == 0 || isBaseline(s.Kind):
		return "—"
	case s.Delivered < 0:
		return "? of " + group(fmt.Sprint(s.Acked))
	case s.Acked == 0:
		return "0 of 0"
	}
	return fmt.Sprintf("%.1f %% of %s", float64(s.Delivered)/float64(s.Acked)*100, group(fmt.Sprint(s.Acked)))
}

func pctCell(p *float64) string {
	if p == nil {
		return "—"
	}
	return fmt.Sprintf("%.0f %%", *p)
}

func memCell(s *Summary) string {
	if s.Runs == 0 || isBaseline(s.Kind) || s.Kind == kindDirect {
		return "—"
	}
	if s.Kind == "kamailio" {
		return num(s.RSSMB, 0) + " (Pss, all)"
	}
	return num(s.RSSMB, 0) + " (" + num(s.HWMMB, 0) + ")"
}

var (
	colRelay = column{"relay", func(_ *Table, s *Summary) string {
		if s.Runs == 0 {
			return s.Relay + " (no run completed)"
		}
		return s.Relay
	}}
	colDelivered = column{"delivered/acked", func(_ *Table, s *Summary) string { return deliveredCell(s) }}
	colErrors    = column{"errors", func(_ *Table, s *Summary) string {
		if isBaseline(s.Kind) {
			return "—"
		}
		return group(fmt.Sprint(s.Errors))
	}}
	colVsRate = column{"× Kamailio rate", func(_ *Table, s *Summary) string { return ratio(s.VsKamailioRate) }}
	colVsCPU  = column{"× Kamailio CPU", func(_ *Table, s *Summary) string { return ratio(s.VsKamailioCPU) }}
	colMem    = column{"relay RSS MB (peak)", func(_ *Table, s *Summary) string { return memCell(s) }}
)

var sendColumns = []column{
	colRelay,
	{"SEND/s median", func(_ *Table, s *Summary) string { return num(s.SendPerSecMedian, 0) }},
	{"SEND/s best", func(_ *Table, s *Summary) string { return num(s.SendPerSecBest, 0) }},
	{"delivered/s median", func(_ *Table, s *Summary) string { return num(s.DeliveredPerSecMedian, 0) }},
	{"relay CPU µs/SEND median", func(_ *Table, s *Summary) string { return num(s.CPUPerSendUSMedian, 1) }},
	{"best", func(_ *Table, s *Summary) string { return num(s.CPUPerSendUSBest, 1) }},
	{"relay CPU µs/delivered SEND", func(_ *Table, s *Summary) string { return num(s.CPUPerDeliveredUSMedian, 1) }},
	colVsRate,
	{"× Kamailio delivered/s", func(_ *Table, s *Summary) string { return ratio(s.VsKamailioDelivered) }},
	colVsCPU,
	{"× Kamailio CPU/delivered", func(_ *Table, s *Summary) string { return ratio(s.VsKamailioCPUDelivered) }},
	colDelivered, colErrors,
	{"p99 ms", func(_ *Table, s *Summary) string { return num(s.P99msMedian, 1) }},
	colMem,
	{"driver CPU µs/SEND", func(_ *Table, s *Summary) string { return num(s.DriverCPUPerSendUS, 1) }},
}

var mbColumns = []column{
	colRelay,
	{"MB/s median", func(_ *Table, s *Summary) string { return num(s.MBPerSecMedian, 0) }},
	{"MB/s best", func(_ *Table, s *Summary) string { return num(s.MBPerSecBest, 0) }},
	{"% of raw TCP", func(_ *Table, s *Summary) string { return pctCell(s.PctOfRaw) }},
	{"% of proxy", func(_ *Table, s *Summary) string { return pctCell(s.PctOfProxy) }},
	{"% of direct", func(_ *Table, s *Summary) string { return pctCell(s.PctOfDirect) }},
	{"relay CPU ms/MB median", func(_ *Table, s *Summary) string {
		if isBaseline(s.Kind) || s.Kind == kindDirect {
			return "—"
		}
		return num(s.CPUPerMBmsMedian, 2)
	}},
	{"relay CPU µs/chunk", func(_ *Table, s *Summary) string {
		if isBaseline(s.Kind) || s.Kind == kindDirect {
			return "—"
		}
		return num(s.CPUPerSendUSMedian, 1)
	}},
	colVsRate, colVsCPU, colDelivered,
	{"messages delivered", func(_ *Table, s *Summary) string {
		switch {
		case isBaseline(s.Kind) || s.Runs == 0:
			return "—"
		case s.MessagesDelivered < 0:
			return "? of " + group(fmt.Sprint(s.Messages))
		}
		return group(fmt.Sprint(s.MessagesDelivered)) + " of " + group(fmt.Sprint(s.Messages))
	}},
	colErrors, colMem,
}

// render writes res as markdown-friendly text.
func render(w io.Writer, res *Result) {
	// Headings are level 3 so that the output pastes into a document's
	// section (BENCHMARKS.md).
	fmt.Fprintf(w, "msrpload bench, %s\n\n", res.Started.Format("2006-01-02 15:04 UTC"))
	if len(res.Tables) > 0 {
		fmt.Fprintf(w, "- %d rounds, relays in alternating order; median and best over rounds; ratios are a row's (msrpscope, a floor or Kamailio) ÷ the reference Kamailio row of the same table, medians\n", res.Settings.Rounds)
	}
	if len(res.Sustained) > 0 {
		rounds := ""
		if n := res.Settings.SustainedRounds; n > 0 {
			rounds = fmt.Sprintf("%d equal-rate round(s) per relay, alternating order; ", n)
		}
		fmt.Fprintf(w, "- sustained: %sCPU per SEND is the median over rounds; ratios are ÷ the Kamailio row of the same table\n", rounds)
	}
	fmt.Fprintf(w, "- msrpscope: %s\n", res.Settings.ScopeLimits)
	if res.Settings.KamailioTuning != "" {
		fmt.Fprintf(w, "- Kamailio: %s\n", res.Settings.KamailioTuning)
	}
	if res.Settings.KamailioChildNote != "" {
		fmt.Fprintf(w, "- %s\n", res.Settings.KamailioChildNote)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	for _, tb := range res.Tables {
		fmt.Fprintf(w, "\n### %s\n\n", tb.Title)
		cols := sendColumns
		if tb.Unit == "MB" {
			cols = mbColumns
		}
		writeTable(w, tb, cols)
		if ref := tb.kamailioRef(); ref != nil {
			fmt.Fprintf(w, "\nreference for the ratios: %s\n", ref.Relay)
		}
		for _, s := range tb.Rows {
			if s.Note != "" {
				fmt.Fprintf(w, "\n%s: %s\n", s.Relay, s.Note)
			}
			if s.HEPSent > 0 || s.HEPReceived > 0 {
				fmt.Fprintf(w, "\n%s: HEP packets: %s sent by the sink, %s received by the harness's UDP socket (%.1f %%)\n",
					s.Relay, group(fmt.Sprint(s.HEPSent)), group(fmt.Sprint(s.HEPReceived)), pct(s.HEPReceived, s.HEPSent))
			}
		}
		for _, n := range tb.Notes {
			fmt.Fprintf(w, "\n%s\n", n)
		}
	}
	for _, st := range res.Sustained {
		renderSustained(w, st)
	}
	if len(res.Failures) > 0 {
		fmt.Fprintf(w, "\n### FAILED\n\n")
		for _, f := range res.Failures {
			fmt.Fprintf(w, "- %s\n", oneLineTrim(f))
		}
	}
}

func pct(a, b int64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b) * 100
}

func oneLineTrim(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func writeTable(w io.Writer, tb *Table, cols []column) {
	cells := make([][]string, 0, len(tb.Rows)+1)
	head := make([]string, len(cols))
	for i, c := range cols {
		head[i] = c.head
	}
	cells = append(cells, head)
	for _, s := range tb.Rows {
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = c.cell(tb, s)
		}
		cells = append(cells, row)
	}
	for i, row := range cells {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		if i == 0 {
			sep := make([]string, len(row))
			for j := range sep {
				sep[j] = "---"
			}
			fmt.Fprintf(w, "|%s|\n", strings.Join(sep, "|"))
		}
	}
}

// renderSustained writes one sustained table.
func renderSustained(w io.Writer, st *SustainedTable) {
	fmt.Fprintf(w, "\n### %s\n\n", st.Title)
	head := []string{"relay", "highest sustained SEND/s", "found", "× Kamailio sustained", "offered SEND/s",
		"acked/s in window", "relay CPU µs/SEND median", "best", "× Kamailio CPU", "delivered/acked", "kept rate", "errors", "relay RSS MB (peak)"}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	for _, rw := range st.Rows {
		sus, how := "none found", "—"
		if rw.MaxSustainedPerSec > 0 {
			sus, how = num(rw.MaxSustainedPerSec, 0), rw.MaxHow
		}
		relay := rw.Relay
		if rw.Runs == 0 {
			relay += " (no run completed)"
		}
		del := "—"
		switch {
		case rw.Runs == 0:
		case rw.Acked == 0:
			del = "0 of 0"
		default:
			del = fmt.Sprintf("%.2f %% of %s", float64(rw.Delivered)/float64(rw.Acked)*100, group(fmt.Sprint(rw.Acked)))
		}
		kept := "yes"
		if !rw.Kept {
			kept = "no"
		}
		mem := "—"
		if rw.Runs > 0 {
			mem = memCell(&Summary{Kind: rw.Kind, Runs: rw.Runs, RSSMB: rw.RSSMB, HWMMB: rw.HWMMB})
		}
		cells := []string{relay, sus, how, ratio(rw.VsKamailioMax), num(st.OfferedPerSec, 0),
			num(rw.AckedPerSecMedian, 0), num(rw.CPUPerSendUSMedian, 1), num(rw.CPUPerSendUSBest, 1), ratio(rw.VsKamailioCPU),
			del, kept, group(fmt.Sprint(rw.Errors)), mem}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	for _, rw := range st.Rows {
		if len(rw.Steps) == 0 {
			continue
		}
		parts := make([]string, 0, len(rw.Steps))
		for _, s := range rw.Steps {
			p := rateName(s.RatePerSec)
			if s.Confirm {
				p += fmt.Sprintf(" (whole run, %.0f s)", s.Seconds)
			}
			p += ": "
			switch {
			case s.Err != "":
				p += "error"
			case s.OK:
				p += fmt.Sprintf("ok (%s acked/s)", num(s.AckedPerSec, 0))
			default:
				p += fmt.Sprintf("no (%s acked/s; %s)", num(s.AckedPerSec, 0), s.Why)
			}
			parts = append(parts, p)
		}
		fmt.Fprintf(w, "\n%s, search: %s\n", rw.Relay, strings.Join(parts, "; "))
	}
	for _, n := range st.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}
