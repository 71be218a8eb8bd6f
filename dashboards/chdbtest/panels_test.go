//go:build chdb

package chdbtest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/dashboards"
	"github.com/msrpscope/msrpscope/storage"
	chdb "github.com/msrpscope/msrpscope/storage/chdbtest"
	"github.com/msrpscope/msrpscope/storage/storagetest"
)

var engine *chdb.Engine

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dashboards-chdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	engine, err = chdb.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	engine.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if err := engine.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
}

// result is a query's JSONCompact output: column names and types, and rows.
type result struct {
	Meta []struct{ Name, Type string }
	Data [][]any
}

func (r result) columns() []string {
	var out []string
	for _, m := range r.Meta {
		out = append(out, m.Name)
	}
	return out
}

// num is column i of row as a number.
func (r result) num(t *testing.T, row []any, i int) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(fmt.Sprint(row[i]), 64)
	if err != nil {
		t.Fatalf("column %s: %v", r.Meta[i].Name, err)
	}
	return f
}

func query(t *testing.T, sql string) result {
	t.Helper()
	out, err := engine.Query(sql, nil, "JSONCompact")
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	var r result
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	return r
}

// The columns each table panel shows, by title.
var tableColumns = map[string][]string{
	"Top talkers":           {"remote_addr", "frames", "bytes", "bytes_per_s", "connections", "failures"},
	"Timing":                {"first", "last", "duration_ms", "frames", "bytes", "sends_in", "failures", "connections"},
	"Frames in order":       {"ts", "node", "direction", "frame", "transact_id", "message_id", "byte_range", "size", "content_type", "flag", "conn_id", "remote", "session_id", "peer_session_id", "since_first_ms"},
	"Transactions":          {"conn_id", "transact_id", "request", "response_status", "request_at", "response_ms"},
	"Relay delay per chunk": {"message_id", "byte_range", "received", "relay_ms", "chunk_bytes"},
}

// checkShape checks a result against its panel: a time series has its time (DateTime) first, a
// string series label or none, and numeric values; a table has the panel's named columns.
func checkShape(t *testing.T, q dashboards.PanelQuery, r result) {
	t.Helper()
	switch q.Type {
	case "timeseries":
		if q.Format != dashboards.FormatTimeSeries {
			t.Fatalf("format %d", q.Format)
		}
		if len(r.Meta) < 2 || r.Meta[0].Name != "time" || !strings.HasPrefix(r.Meta[0].Type, "DateTime") {
			t.Fatalf("time series columns %v: want time (DateTime) first", r.Meta)
		}
		last := r.Meta[len(r.Meta)-1].Type
		if !strings.Contains(last, "Int") && !strings.Contains(last, "Float") {
			t.Fatalf("time series value column %v is not numeric", r.Meta[len(r.Meta)-1])
		}
		for _, m := range r.Meta[1 : len(r.Meta)-1] {
			if !strings.Contains(m.Type, "String") {
				t.Fatalf("time series label column %v is not a string", m)
			}
		}
		for i := 1; i < len(r.Data); i++ {
			if fmt.Sprint(r.Data[i][0]) < fmt.Sprint(r.Data[i-1][0]) {
				t.Fatalf("time series not in time order at row %d", i)
			}
		}
	case "table":
		want, ok := tableColumns[q.Panel]
		if !ok {
			t.Fatalf("no expected columns for table %q", q.Panel)
		}
		if got := r.columns(); !slices.Equal(got, want) {
			t.Fatalf("columns %v, want %v", got, want)
		}
	default:
		t.Fatalf("panel type %s", q.Type)
	}
}

// varValues runs a query variable's query (expanded like a panel's) and returns its options.
func varValues(t *testing.T, v dashboards.Variable, rg dashboards.Range, vars map[string]dashboards.Var) []string {
	t.Helper()
	sql, err := dashboards.ExpandSQL(v.Query, rg, vars)
	if err != nil {
		t.Fatal(err)
	}
	r := query(t, sql)
	var out []string
	for _, row := range r.Data {
		out = append(out, fmt.Sprint(row[0]))
	}
	return out
}

func variable(t *testing.T, d dashboards.Dashboard, name string) dashboards.Variable {
	t.Helper()
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("%s has no variable %s", d.UID, name)
	return dashboards.Variable{}
}

func setup(t *testing.T) (run, dashboards.Range) {
	t.Helper()
	r := relayRun(t, 20)
	s := storage.Schema{Database: "msrpscope", Flavor: storage.Modern, Topology: storage.Single, RetentionDays: 30}
	exec(t, s.Bootstrap()...)
	for _, step := range s.Steps() {
		exec(t, step.Stmts...)
	}
	exec(t, storagetest.InsertSQL(s, r.frames), storagetest.EventsInsertSQL(s, r.events))
	first := r.frames[0].TS
	for _, f := range r.frames {
		if f.TS.Before(first) {
			first = f.TS
		}
	}
	return r, dashboards.Range{From: first.Add(-10 * time.Minute), To: time.Now().Add(time.Minute)}
}

// Every ClickHouse panel of every dashboard, with its macros and variables expanded as Grafana
// and the plugin do, runs on ClickHouse 26.7 over a relay run's rows and returns rows of its
// panel's shape, non-empty; the Overview with every filter at All (the rollups answer) and with
// filters matching every row (the base tables answer) gives the same series; filters matching
// nothing give no rows; the drill-down by session and by Message-ID returns exactly their frames.
func TestPanelsOn267(t *testing.T) {
	r, rg := setup(t)
	var totalFrames, totalBytes float64
	for _, f := range r.frames {
		totalFrames++
		totalBytes += float64(f.Size)
	}
	checked := 0
	for _, interval := range []time.Duration{10 * time.Second, 5 * time.Minute} {
		rg := rg
		rg.Interval = interval
		t.Run(fmt.Sprintf("overview/%s", interval), func(t *testing.T) {
			d := dashboards.Overview()
			db := dashboards.Var{Values: []string{"msrpscope"}}
			vars := map[string]dashboards.Var{"database": db}
			nodes := varValues(t, variable(t, d, "node"), rg, vars)
			ports := varValues(t, variable(t, d, "port"), rg, vars)
			if !slices.Equal(nodes, []string{node}) || !slices.Equal(ports, []string{strconv.Itoa(int(r.port))}) {
				t.Fatalf("variable options: node %v, port %v; want [%s], [%d]", nodes, ports, node, r.port)
			}
			states := map[string]map[string]dashboards.Var{
				"all": {"database": db, "node": {All: true, Values: nodes}, "port": {All: true, Values: ports},
					"cidr": {Values: []string{"all"}}},
				"matching": {"database": db, "node": {Values: nodes}, "port": {Values: ports},
					"cidr": {Values: []string{"127.0.0.0/8"}}},
				"matching6": {"database": db, "node": {All: true, Values: nodes}, "port": {All: true, Values: ports},
					"cidr": {Values: []string{"::ffff:127.0.0.0/104"}}},
				"none-cidr": {"database": db, "node": {All: true, Values: nodes}, "port": {All: true, Values: ports},
					"cidr": {Values: []string{"10.0.0.0/8"}}},
				"none-node": {"database": db, "node": {Values: []string{"relay-x"}}, "port": {All: true, Values: ports},
					"cidr": {Values: []string{""}}},
				"none-ipv6": {"database": db, "node": {All: true, Values: nodes}, "port": {All: true, Values: ports},
					"cidr": {Values: []string{"2001:db8::/32"}}},
				"none-port": {"database": db, "node": {All: true, Values: nodes}, "port": {Values: []string{"1"}},
					"cidr": {Values: []string{"all"}}},
			}
			got := map[string]map[string]result{}
			for _, state := range []string{"all", "matching", "matching6", "none-cidr", "none-ipv6", "none-node", "none-port"} {
				got[state] = map[string]result{}
				for _, q := range dashboards.Queries(d) {
					sql, err := dashboards.ExpandSQL(q.Query, rg, states[state])
					if err != nil {
						t.Fatalf("%s: %v", q.Panel, err)
					}
					res := query(t, sql)
					checkShape(t, q, res)
					if state == "all" || strings.HasPrefix(state, "matching") {
						if len(res.Data) == 0 {
							t.Errorf("%s (%s): no rows\n%s", q.Panel, state, sql)
						}
					} else if len(res.Data) != 0 {
						t.Errorf("%s (%s): %d rows, want none\n%s", q.Panel, state, len(res.Data), sql)
					}
					got[state][q.Panel] = res
					if state == "all" {
						checked++
					}
				}
			}
			for panel, all := range got["all"] {
				for _, state := range []string{"matching", "matching6"} {
					if fmt.Sprint(got[state][panel].Data) != fmt.Sprint(all.Data) {
						t.Errorf("%s: rollups (All) and base table (%s) differ:\n%v\n%v", panel, state, all.Data, got[state][panel].Data)
					}
				}
			}
			// Rates times the bucket width add up to every frame and byte.
			width := math.Max(interval.Seconds(), 60)
			sum := func(panel string) float64 {
				res, s := got["all"][panel], 0.0
				for _, row := range res.Data {
					s += res.num(t, row, len(row)-1) * width
				}
				return math.Round(s)
			}
			if f, b := sum("Frames/s by method and direction"), sum("Bytes/s by method and direction"); f != totalFrames || b != totalBytes {
				t.Errorf("frames %v bytes %v, want %v %v", f, b, totalFrames, totalBytes)
			}
			if talkers := got["all"]["Top talkers"].Data; len(talkers) != 1 || talkers[0][0] != "127.0.0.1" {
				t.Errorf("top talkers %v, want 127.0.0.1 only", talkers)
			}
		})
	}

	d := dashboards.Session()
	var send storage.Frame
	for _, f := range r.frames {
		if f.Method == "SEND" && f.Direction == "in" && f.SessionID != "" && f.MessageID != "" {
			send = f
			break
		}
	}
	if send.SessionID == "" {
		t.Fatal("no SEND with a session and a Message-ID in the run")
	}
	inSession := func(f storage.Frame) bool {
		return f.SessionID == send.SessionID || f.PeerSessionID == send.SessionID || f.CorrelationID == send.SessionID
	}
	type txn struct {
		conn uint64
		id   string
	}
	ofMessage := map[txn]bool{}
	for _, f := range r.frames {
		if f.MessageID == send.MessageID {
			ofMessage[txn{f.ConnID, f.TransactID}] = true
		}
	}
	inMessage := func(f storage.Frame) bool {
		return f.MessageID == send.MessageID || ofMessage[txn{f.ConnID, f.TransactID}]
	}
	for _, c := range []struct {
		name, session, message string
		want                   int
	}{
		{"session", send.SessionID, "", count(r.frames, inSession)},
		{"correlation", send.CorrelationID, "", count(r.frames, func(f storage.Frame) bool { return f.CorrelationID == send.CorrelationID })},
		{"message", "", send.MessageID, count(r.frames, inMessage)},
		{"nothing", "", "", 0},
	} {
		t.Run("session/"+c.name, func(t *testing.T) {
			rg := rg
			rg.Interval = 10 * time.Second
			vars := map[string]dashboards.Var{"database": {Values: []string{"msrpscope"}},
				"session": {Values: []string{c.session}}, "message_id": {Values: []string{c.message}}}
			for _, q := range dashboards.Queries(d) {
				sql, err := dashboards.ExpandSQL(q.Query, rg, vars)
				if err != nil {
					t.Fatalf("%s: %v", q.Panel, err)
				}
				res := query(t, sql)
				checkShape(t, q, res)
				switch {
				case q.Panel == "Frames in order":
					if len(res.Data) != c.want {
						t.Errorf("%s: %d frames, want %d", q.Panel, len(res.Data), c.want)
					}
					for i := 1; i < len(res.Data); i++ {
						if fmt.Sprint(res.Data[i][0]) < fmt.Sprint(res.Data[i-1][0]) {
							t.Errorf("frames not in order at row %d", i)
						}
					}
				case q.Panel == "Timing":
					if n := res.num(t, res.Data[0], 3); int(n) != c.want {
						t.Errorf("Timing: %v frames, want %d", n, c.want)
					}
				case c.want == 0 && len(res.Data) != 0:
					t.Errorf("%s: %d rows for an empty selection", q.Panel, len(res.Data))
				case c.want > 0 && len(res.Data) == 0:
					t.Errorf("%s: no rows\n%s", q.Panel, sql)
				}
				if c.name == "session" {
					checked++
				}
			}
		})
	}
	t.Logf("%d ClickHouse panel queries checked (Overview at two intervals, drill-down)", checked)
}
