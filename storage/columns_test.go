package storage

import (
	"strings"
	"testing"
	"time"

	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// TestColumnTypesAccepted: the Go slices the writer sends for each column
// are accepted by the driver's encoder of that column's type, in both
// flavors (modern servers cannot run here: this is what covers the
// writer's mapping onto DateTime64, IPv6 and LowCardinality).
func TestColumnTypesAccepted(t *testing.T) {
	for _, old := range []bool{false, true} {
		var fc frameCols
		var ec eventCols
		for i := range 3 {
			fc.add(FrameRow(testFrame(i), 64, "n"), old)
			ec.add(EventRow(testConnEvent(i), "n"), old)
		}
		check := func(cols []column, get func(string, bool) any) {
			for _, c := range cols {
				typ := c.old
				if !old {
					typ = c.modern
				}
				if c.oldOnly && !old {
					continue
				}
				if i := strings.Index(typ, " CODEC("); i >= 0 {
					typ = typ[:i]
				}
				col, err := chcol.Type(typ).Column(c.name, &chcol.ServerContext{Timezone: time.UTC})
				if err != nil {
					t.Fatalf("%s %s: %v", c.name, typ, err)
				}
				if _, err := col.Append(get(c.name, old)); err != nil {
					t.Errorf("old=%v: column %s %s refuses %T: %v", old, c.name, typ, get(c.name, old), err)
					continue
				}
				if col.Rows() != 3 {
					t.Errorf("old=%v: column %s: %d rows, want 3", old, c.name, col.Rows())
				}
			}
		}
		check(frameColumns, fc.column)
		check(eventColumns, ec.column)
	}
}
