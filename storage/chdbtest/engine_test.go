//go:build chdb

package chdbtest

import (
	"fmt"
	"strings"
	"testing"
)

// The engine is ClickHouse 26.x and runs what the modern schema needs: DateTime64(6), IPv6,
// LowCardinality, codecs, TTL, a materialized view into a SummingMergeTree, INSERT ... VALUES,
// query parameters, JSONEachRow and JSONCompact output.
func TestEngine(t *testing.T) {
	out, err := engine.Query("SELECT version()", nil, "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "26.") {
		t.Fatalf("version %q, want 26.x", out)
	}
	exec(t,
		"CREATE DATABASE IF NOT EXISTS engine_test",
		`CREATE TABLE engine_test.f (
			ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
			ip IPv6,
			method LowCardinality(String),
			size UInt64,
			body String CODEC(ZSTD(3))
		) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (toStartOfHour(ts), ts)
		TTL toDateTime(ts) + INTERVAL 3650 DAY`,
		`CREATE TABLE engine_test.per_minute (minute DateTime, method LowCardinality(String), frames UInt64, bytes UInt64)
		ENGINE = SummingMergeTree((frames, bytes)) ORDER BY (minute, method)`,
		`CREATE MATERIALIZED VIEW engine_test.per_minute_mv TO engine_test.per_minute AS
		SELECT toStartOfMinute(ts) AS minute, method, count() AS frames, sum(size) AS bytes
		FROM engine_test.f GROUP BY minute, method`,
		`INSERT INTO engine_test.f (ts, ip, method, size, body) VALUES
		('2026-12-01 10:00:00.000001', '::ffff:127.0.0.1', 'SEND', 100, 'hello'),
		('2026-12-01 10:00:59.999999', '2001:db8::1', 'SEND', 50, 'it''s \\ here'),
		('2026-12-01 10:01:00.5', '::ffff:10.0.0.1', 'AUTH', 10, '')`,
	)
	got := rows(t, `SELECT toString(ts) AS t, toString(ip) AS addr, method, size, body FROM engine_test.f
		WHERE ip = {ip:IPv6} OR ts >= {from:DateTime64(6, 'UTC')} ORDER BY ts`,
		map[string]string{"ip": "::ffff:127.0.0.1", "from": "2026-12-01 10:01:00.000000"})
	want := []map[string]any{
		{"t": "2026-12-01 10:00:00.000001", "addr": "::ffff:127.0.0.1", "method": "SEND", "size": "100", "body": "hello"},
		{"t": "2026-12-01 10:01:00.500000", "addr": "::ffff:10.0.0.1", "method": "AUTH", "size": "10", "body": ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows:\n got %v\nwant %v", got, want)
	}
	// A string parameter with a quote and a backslash, in clickhouse-go's escaped form.
	got = rows(t, `SELECT size FROM engine_test.f WHERE body = {b:String}`, map[string]string{"b": `it's \\ here`})
	if fmt.Sprint(got) != "[map[size:50]]" {
		t.Fatalf("string parameter: %v", got)
	}
	out, err = engine.Query(`SELECT minute, method, sum(frames), sum(bytes) FROM engine_test.per_minute
		GROUP BY minute, method ORDER BY minute, method`, nil, "JSONCompact")
	if err != nil {
		t.Fatal(err)
	}
	var compact struct{ Data [][]any }
	if err := jsonUnmarshal(out, &compact); err != nil {
		t.Fatal(err)
	}
	wantData := [][]any{{"2026-12-01 10:00:00", "SEND", 2.0, 150.0}, {"2026-12-01 10:01:00", "AUTH", 1.0, 10.0}}
	if fmt.Sprintf("%#v", compact.Data) != fmt.Sprintf("%#v", wantData) {
		t.Fatalf("rollup:\n got %#v\nwant %#v", compact.Data, wantData)
	}
}
