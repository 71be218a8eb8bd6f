package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/msrpscope/msrpscope/internal/clickhouse"
	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/storage/storagetest"
)

// No value a user gives reaches the SQL text: every one is a parameter, on both flavors.
func TestQueryValuesAreParameters(t *testing.T) {
	for _, fl := range []storage.Flavor{storage.Modern, storage.Old} {
		q := storage.Queries{Schema: storage.Schema{Database: "msrpscope", Flavor: fl, Topology: storage.Single}}
		for _, c := range storagetest.Cases(q, storagetest.Frames()) {
			for _, v := range []string{storagetest.Hostile, storagetest.SessionA, storagetest.MsgID, "10.0.0.2", "192.0.2"} {
				if strings.Contains(c.Query.SQL, v) {
					t.Errorf("%s %s: the SQL holds the value %q:\n%s", fl, c.Name, v, c.Query.SQL)
				}
			}
			if len(c.Want) == 0 && c.Name != "session hostile" && c.Name != "traffic 1us after the late second" {
				t.Errorf("%s: the fixture gives this case no rows: it could not fail", c.Name)
			}
			if fl == storage.Old && strings.Contains(c.Query.SQL, "{") {
				t.Errorf("%s %s: a server-side parameter on 18.16 (no query parameters there):\n%s", fl, c.Name, c.Query.SQL)
			}
			if fl == storage.Modern && strings.Contains(c.Query.SQL, "@") {
				t.Errorf("%s %s: a client-side parameter on a modern server:\n%s", fl, c.Name, c.Query.SQL)
			}
		}
	}
}

// Every query on a real ClickHouse 18.16 through clickhouse-go, over the fixture stored with the
// writer's column list and types.
func TestQueriesOn1816(t *testing.T) {
	srv := clickhouse.Start(t, clickhouse.Options{})
	conn, err := ch.Open(&ch.Options{Addr: []string{srv.Addr()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := storage.NewReader(conn, "msrpscope")
	if err != nil {
		t.Fatal(err)
	}
	if r.Q.Schema.Flavor != storage.Old {
		t.Fatalf("flavor %s for 18.16", r.Q.Schema.Flavor)
	}
	checkQueries(t, conn, r, r.Q.Schema)
}

// The same through the Distributed tables of a two-shard 18.16 cluster: the rows spread over
// both shards and every query sees them all.
func TestQueriesOnCluster(t *testing.T) {
	c := clickhouse.StartCluster(t, clickhouse.Options{})
	conn, err := ch.Open(&ch.Options{Addr: []string{c.Shards[0].Addr()}, DialTimeout: 5 * time.Second,
		Settings: ch.Settings{"insert_distributed_sync": 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := storage.NewReader(conn, "msrpscope")
	if err != nil {
		t.Fatal(err)
	}
	schema := r.Q.Schema
	schema.Topology, schema.Cluster = storage.Cluster, c.Name
	checkQueries(t, conn, r, schema)
	for i, s := range c.Shards {
		n := strings.TrimSpace(s.MustQuery(t, "SELECT count() FROM msrpscope.frames_local"))
		if n == "0" || n == fmt.Sprint(len(storagetest.Frames())) {
			t.Fatalf("shard %d holds %s of %d rows: not spread over both shards", i+1, n, len(storagetest.Frames()))
		}
	}
}

// checkQueries creates schema, stores the fixture as the writer would and runs every case.
func checkQueries(t *testing.T, conn driver.Conn, r *storage.Reader, schema storage.Schema) {
	t.Helper()
	ctx := context.Background()
	if _, err := storage.Migrate(ctx, conn, schema); err != nil {
		t.Fatal(err)
	}
	frames := storagetest.Frames()
	b, err := conn.PrepareBatch(ctx, schema.InsertFrames())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		var row []any
		for _, c := range schema.FrameColumns() {
			row = append(row, storagetest.ColumnValue(f, c, true))
		}
		if err := b.Append(row...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	for _, c := range storagetest.Cases(r.Q, frames) {
		t.Run(c.Name, func(t *testing.T) {
			got, err := c.Run(ctx, r)
			if err != nil {
				t.Fatalf("%v\n%s", err, c.Query.SQL)
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", c.Want) {
				t.Fatalf("rows:\n got %s\nwant %s\nSQL:\n%s", strings.Join(got, "\n     "), strings.Join(c.Want, "\n     "), c.Query.SQL)
			}
		})
	}
}
