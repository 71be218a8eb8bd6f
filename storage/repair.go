package storage

import (
	"context"
	"fmt"
	"strings"
)

// A per-minute rollup is filled by a materialized view as part of the
// insert into its base table, but not atomically with it: a server killed
// in the middle of an insert can keep the base table's part and lose the
// view's (ClickHouse writes the table's block, then each view's). The
// writer's batch-id check then finds the batch stored and does not insert
// it again, so the rollup would miss its rows for good. After such a check
// finds a batch, repairRollups adds to each rollup fed by that table what
// it lacks for the minutes the batch spans: the base table's rows of this
// relay (node) in those minutes, grouped as the view groups them, minus
// what the rollup holds for them. Only this writer inserts rows of its
// node, one batch at a time, and no repair runs while an earlier insert of
// the batch still runs on the server (deliverPart: its query id), so the
// difference is exactly what was lost; it is 0 when nothing was, and the
// repair is idempotent.

// rollupSpec is what a repair needs of a rollup; Steps creates the tables
// and views (TestRollupSpecsMatchSchema keeps the two in step).
type rollupSpec struct {
	table, source string
	keys          string      // the view's group columns besides minute
	sums          [][2]string // column, expression over the source
	where         string      // the view's filter, "" for none
}

var rollupSpecs = []rollupSpec{
	{TableFramesPerMinute, TableFrames, "node, method, direction", [][2]string{{"frames", "count()"}, {"bytes", "sum(size)"}}, ""},
	{TableFailuresPerMin, TableFrames, "node, direction, status", [][2]string{{"responses", "count()"}}, "status >= 300"},
	{TableAuthPerMinute, TableFrames, "node, status", [][2]string{{"responses", "count()"}}, "auth_response = 1 AND direction = 'out'"},
	{TableConnsPerMinute, TableEvents, "node, transport, event, reason", [][2]string{{"connections", "count()"}}, "event IN ('accepted', 'connected', 'closed')"},
}

// repairSQL is the INSERT ... SELECT that adds to rollup r what it lacks
// for node's rows in the minutes [from, to) (Unix seconds, whole minutes).
func (s Schema) repairSQL(r rollupSpec, node string, from, to int64) string {
	var cols, base, held, diff, lacks []string
	for _, c := range r.sums {
		cols = append(cols, c[0])
		base = append(base, fmt.Sprintf("%s AS %s", c[1], c[0]))
		held = append(held, fmt.Sprintf("sum(%s) AS held_%s", c[0], c[0]))
		diff = append(diff, fmt.Sprintf("if(%s > held_%s, %s - held_%s, 0)", c[0], c[0], c[0], c[0]))
		lacks = append(lacks, fmt.Sprintf("%s > held_%s", c[0], c[0]))
	}
	where := ""
	if r.where != "" {
		where = " AND (" + r.where + ")"
	}
	n := quoteString(node)
	return fmt.Sprintf(`INSERT INTO %s (minute, %s, %s)
SELECT minute, %s, %s
FROM
(
    SELECT toStartOfMinute(ts) AS minute, %s, %s
    FROM %s
    WHERE node = %s AND ts >= toDateTime(%d) AND ts < toDateTime(%d)%s
    GROUP BY minute, %s
) AS base
ANY LEFT JOIN
(
    SELECT minute, %s, %s
    FROM %s
    WHERE node = %s AND minute >= toDateTime(%d) AND minute < toDateTime(%d)
    GROUP BY minute, %s
) AS held USING (minute, %s)
WHERE %s`,
		s.name(r.table), r.keys, strings.Join(cols, ", "),
		r.keys, strings.Join(diff, ", "),
		r.keys, strings.Join(base, ", "), s.name(r.source), n, from, to, where, r.keys,
		r.keys, strings.Join(held, ", "), s.name(r.table), n, from, to, r.keys,
		r.keys, strings.Join(lacks, " OR "))
}

// RepairRollups is the statements that add to the rollups fed by table
// (TableFrames or TableEvents) what they lack for node's rows in the whole
// minutes from..to (Unix seconds, to included): one INSERT ... SELECT per
// rollup, run on the server. Right only while no other writer inserts
// rows of node in those minutes.
func (s Schema) RepairRollups(table, node string, from, to int64) []string {
	from = floorDiv(from, 60) * 60
	to = floorDiv(to, 60)*60 + 60
	var out []string
	for _, r := range rollupSpecs {
		if r.source == table {
			out = append(out, s.repairSQL(r, node, from, to))
		}
	}
	return out
}

// repairRollups adds to the rollups fed by table what they lack for the
// minutes of batch b (found stored by its batch id).
func (w *Writer) repairRollups(ctx context.Context, table string, b batch) error {
	ctx = w.insertContext(ctx) // a repair tried again must see what the last one added
	// The rows' node is the one sealed in the batch (a spool replayed by a
	// relay renamed since), not this writer's.
	for _, q := range w.schema.RepairRollups(table, b.node, floorDiv(b.minTS, 1e6), floorDiv(b.maxTS, 1e6)) {
		if err := w.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("storage: repair the rollups of %s for batch %d: %w", table, b.id, err)
		}
	}
	return nil
}
