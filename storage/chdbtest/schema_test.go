//go:build chdb

package chdbtest

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/storage/storagetest"
)

// migrate runs what storage.Migrate runs on a modern server, through chDB: the bootstrap, every
// step not yet recorded in schema_migrations, and the record of each. It returns the versions
// it applied.
func migrate(t *testing.T, s storage.Schema) []int {
	t.Helper()
	exec(t, s.Bootstrap()...)
	done := map[int]bool{}
	for _, r := range rows(t, "SELECT version FROM "+s.Database+"."+storage.TableSchemaMigrations, nil) {
		v, err := strconv.Atoi(fmt.Sprint(r["version"]))
		if err != nil {
			t.Fatal(err)
		}
		done[v] = true
	}
	var applied []int
	for _, step := range s.Steps() {
		if done[step.Version] {
			continue
		}
		exec(t, step.Stmts...)
		exec(t, fmt.Sprintf("INSERT INTO %s.%s (version, name, applied) VALUES (%d, %s, now())",
			s.Database, storage.TableSchemaMigrations, step.Version, quote(step.Name)))
		applied = append(applied, step.Version)
	}
	return applied
}

func modern(db string) storage.Schema {
	return storage.Schema{Database: db, Flavor: storage.Modern, Topology: storage.Single, RetentionDays: 30}
}

// The modern DDL and its migrations run on ClickHouse 26.7; a second run applies nothing and
// every statement is safe to run again; the tables have the modern types.
func TestModernSchemaOn267(t *testing.T) {
	s := modern("msrpscope_schema")
	applied := migrate(t, s)
	if len(applied) != len(s.Steps()) {
		t.Fatalf("applied %v, want all %d steps", applied, len(s.Steps()))
	}
	if again := migrate(t, s); len(again) != 0 {
		t.Fatalf("second run applied %v", again)
	}
	// Every statement again, as after a crash between a step and its record.
	exec(t, s.Bootstrap()...)
	for _, step := range s.Steps() {
		exec(t, step.Stmts...)
	}
	got := rows(t, `SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'frames'
		AND name IN ('ts', 'remote_ip', 'method') ORDER BY name`, map[string]string{"db": s.Database})
	want := "[map[name:method type:LowCardinality(String)] map[name:remote_ip type:IPv6] map[name:ts type:DateTime64(6, 'UTC')]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("frames columns %v, want %s", got, want)
	}
	ttl := rows(t, `SELECT count() AS n FROM system.tables WHERE database = {db:String} AND create_table_query LIKE '%TTL%'`,
		map[string]string{"db": s.Database})
	if fmt.Sprint(ttl) != "[map[n:6]]" {
		t.Fatalf("tables with a TTL: %v, want 6 (frames, events, 4 rollups)", ttl)
	}
}

// Rows inserted with the writer's column list and values fill the per-minute rollups exactly.
func TestRollupsOn267(t *testing.T) {
	s := modern("msrpscope_rollups")
	migrate(t, s)
	frames := storagetest.Frames()
	exec(t, storagetest.InsertSQL(s, frames))
	// Inserted in two blocks: the materialized views see both and the sums merge.
	exec(t, storagetest.InsertSQL(s, frames[:3]))
	all := append(append([]storage.Frame(nil), frames...), frames[:3]...)

	minute := func(t time.Time) string { return t.UTC().Truncate(time.Minute).Format("2006-01-02 15:04:05") }
	check := func(name, query string, want map[string]uint64) {
		t.Helper()
		got := map[string]uint64{}
		for _, r := range rows(t, query, nil) {
			n, err := strconv.ParseUint(fmt.Sprint(r["n"]), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			got[fmt.Sprint(r["k"])] = n
		}
		if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
			t.Fatalf("%s:\n got %v\nwant %v", name, sorted(got), sorted(want))
		}
	}
	wantFrames, wantBytes := map[string]uint64{}, map[string]uint64{}
	wantFail, wantAuth := map[string]uint64{}, map[string]uint64{}
	for _, f := range all {
		k := strings.Join([]string{minute(f.TS), f.Node, f.Method, f.Direction}, "|")
		wantFrames[k]++
		wantBytes[k] += f.Size
		if f.Status >= 300 {
			wantFail[strings.Join([]string{minute(f.TS), f.Node, f.Direction, strconv.Itoa(int(f.Status))}, "|")]++
		}
		if f.AuthResponse && f.Direction == "out" {
			wantAuth[strings.Join([]string{minute(f.TS), f.Node, strconv.Itoa(int(f.Status))}, "|")]++
		}
	}
	db := s.Database
	check("frames per minute", `SELECT concat(toString(minute), '|', node, '|', method, '|', direction) AS k, sum(frames) AS n
		FROM `+db+`.frames_per_minute GROUP BY k`, wantFrames)
	check("bytes per minute", `SELECT concat(toString(minute), '|', node, '|', method, '|', direction) AS k, sum(bytes) AS n
		FROM `+db+`.frames_per_minute GROUP BY k`, wantBytes)
	check("failures per minute", `SELECT concat(toString(minute), '|', node, '|', direction, '|', toString(status)) AS k,
		sum(responses) AS n FROM `+db+`.failures_per_minute GROUP BY k`, wantFail)
	check("auth per minute", `SELECT concat(toString(minute), '|', node, '|', toString(status)) AS k, sum(responses) AS n
		FROM `+db+`.auth_per_minute GROUP BY k`, wantAuth)

	// Connection events: the rollup counts accepted, connected and closed by reason.
	base := storagetest.Base
	var values []string
	wantConns := map[string]uint64{}
	for i, ev := range []struct{ event, reason string }{
		{"accepted", ""}, {"connect-start", ""}, {"connected", ""}, {"closed", "eof"}, {"closed", "eof"}, {"closed", "idle"},
	} {
		ts := base.Add(time.Duration(i) * time.Millisecond)
		vals := map[string]string{
			"ts": quote(ts.Format("2006-01-02 15:04:05.000000")), "event": quote(ev.event), "reason": quote(ev.reason),
			"error": "''", "direction": "'in'", "transport": "'msrp'", "local_ip": quote(netip.MustParseAddr("::ffff:127.0.0.1").String()),
			"local_port": "2855", "remote_ip": "'2001:db8::1'", "remote_port": "4000", "conn_id": strconv.Itoa(i + 1),
			"tls_subject": "''", "node": "'relay-a'", "batch_id": "1",
		}
		var row []string
		for _, c := range s.EventColumns() {
			v, ok := vals[c]
			if !ok {
				t.Fatalf("no test value for event column %s", c)
			}
			row = append(row, v)
		}
		values = append(values, "("+strings.Join(row, ", ")+")")
		if ev.event == "accepted" || ev.event == "connected" || ev.event == "closed" {
			wantConns[strings.Join([]string{minute(ts), "relay-a", "msrp", ev.event, ev.reason}, "|")]++
		}
	}
	exec(t, s.InsertEvents()+" VALUES "+strings.Join(values, ", "))
	check("connections per minute", `SELECT concat(toString(minute), '|', node, '|', transport, '|', event, '|', reason) AS k,
		sum(connections) AS n FROM `+db+`.connections_per_minute GROUP BY k`, wantConns)
}

func sorted(m map[string]uint64) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

// The rollup repair (storage.Schema.RepairRollups, which the writer runs after its batch-id check
// finds a batch stored) on ClickHouse 26.7: with nothing lost it adds nothing; with a rollup
// emptied it restores exactly what the view had written.
func TestRollupRepairOn267(t *testing.T) {
	s := modern("msrpscope_repair")
	migrate(t, s)
	frames := storagetest.Frames()
	exec(t, storagetest.InsertSQL(s, frames))
	db := s.Database
	sums := func() string {
		r := rows(t, `SELECT (SELECT sum(frames) FROM `+db+`.frames_per_minute) AS f, (SELECT sum(bytes) FROM `+db+`.frames_per_minute) AS b,
			(SELECT sum(responses) FROM `+db+`.failures_per_minute) AS x, (SELECT sum(responses) FROM `+db+`.auth_per_minute) AS a`, nil)
		return fmt.Sprint(r[0]["f"], " ", r[0]["b"], " ", r[0]["x"], " ", r[0]["a"])
	}
	want := sums()
	minTS, maxTS := frames[0].TS.Unix(), frames[0].TS.Unix()
	nodes := map[string]bool{}
	for _, f := range frames {
		minTS, maxTS = min(minTS, f.TS.Unix()), max(maxTS, f.TS.Unix())
		nodes[f.Node] = true
	}
	repair := func() {
		for node := range nodes {
			exec(t, s.RepairRollups(storage.TableFrames, node, minTS, maxTS)...)
		}
	}
	repair()
	if got := sums(); got != want {
		t.Fatalf("repair with nothing lost: %s, want %s", got, want)
	}
	for _, table := range []string{"frames_per_minute", "failures_per_minute", "auth_per_minute"} {
		exec(t, "TRUNCATE TABLE "+db+"."+table)
	}
	if got := sums(); got == want {
		t.Fatalf("rollups not emptied: %s", got)
	}
	repair()
	if got := sums(); got != want {
		t.Fatalf("repaired: %s, want %s (frames, bytes, failures, auth)", got, want)
	}
	repair()
	if got := sums(); got != want {
		t.Fatalf("repaired twice: %s, want %s", got, want)
	}
}
