package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

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
	ctx := context.Background()
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
	schema := r.Q.Schema
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
