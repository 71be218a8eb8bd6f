//go:build chdb

package chdbtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/storage"
)

// TestModernSchema runs the modern single-server DDL (what a 22.x-26.x
// server gets) on ClickHouse 26.7, twice (idempotent), and checks that a
// row inserted with the writer's column list reaches the rollups.
func TestModernSchema(t *testing.T) {
	s := storage.Schema{Database: "modern_schema", Flavor: storage.Modern, Topology: storage.Single, RetentionDays: 30}
	for range 2 {
		exec(t, s.Bootstrap()...)
		for _, st := range s.Steps() {
			exec(t, st.Stmts...)
		}
	}
	cols := s.FrameColumns()
	vals := map[string]string{
		"ts": "toDateTime64('2026-12-01 10:00:00.123456', 6, 'UTC')", "direction": "'out'", "transport": "'msrp'",
		"local_ip": "toIPv6('127.0.0.1')", "local_port": "2855", "remote_ip": "toIPv6('2001:db8::1')", "remote_port": "40000",
		"conn_id": "1", "session_id": "'s1'", "peer_session_id": "'s2'", "correlation_id": "'s1~s2'", "transact_id": "'t1'",
		"method": "''", "status": "401", "message_id": "''", "byte_range": "''", "content_type": "''", "auth_user": "''",
		"auth_response": "1", "flag": "'$'", "size": "120", "body": "''", "node": "'n1'", "batch_id": "7",
	}
	var vs []string
	for _, c := range cols {
		v, ok := vals[c]
		if !ok {
			t.Fatalf("no test value for column %s", c)
		}
		vs = append(vs, v)
	}
	exec(t, s.InsertFrames()+" VALUES ("+strings.Join(vs, ", ")+")")
	for q, want := range map[string]string{
		"SELECT sum(frames) AS n FROM modern_schema.frames_per_minute":                         "1",
		"SELECT sum(responses) AS n FROM modern_schema.failures_per_minute":                    "1",
		"SELECT sum(responses) AS n FROM modern_schema.auth_per_minute WHERE status=401":       "1",
		"SELECT toString(IPv6NumToString(remote_ip)) AS n FROM modern_schema.frames":           "2001:db8::1",
		"SELECT toString(toUnixTimestamp64Micro(ts) % 1000000) AS n FROM modern_schema.frames": "123456",
	} {
		r := rows(t, q, nil)
		if len(r) != 1 || toString(r[0]["n"]) != want {
			t.Errorf("%s = %v, want %s", q, r, want)
		}
	}
}

func toString(v any) string { return fmt.Sprint(v) }
