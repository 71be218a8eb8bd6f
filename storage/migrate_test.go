package storage

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestMigrateIdempotent: a second run applies nothing; a lost version
// table makes every step run again, harmlessly (IF NOT EXISTS).
func TestMigrateIdempotent(t *testing.T) {
	srv := startServer(t)
	c := openConn(t, srv.Addr())
	ctx := context.Background()
	s := Schema{Database: "m", Flavor: Old, Topology: Single, RetentionDays: 3}
	all := []int{1, 2, 3, 4, 5, 6}
	applied, err := Migrate(ctx, c, s)
	if err != nil || !slices.Equal(applied, all) {
		t.Fatalf("first run: %v, %v", applied, err)
	}
	applied, err = Migrate(ctx, c, s)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second run applied %v, %v", applied, err)
	}
	if err := c.Exec(ctx, "DROP TABLE m.schema_migrations"); err != nil {
		t.Fatal(err)
	}
	applied, err = Migrate(ctx, c, s)
	if err != nil || !slices.Equal(applied, all) {
		t.Fatalf("after losing the version table: %v, %v", applied, err)
	}
	if got := queryUint(t, c, "SELECT count() FROM m.schema_migrations"); got != uint64(len(all)) {
		t.Errorf("versions recorded: %d", got)
	}
}

// TestDropOldPartitions: on old servers retention drops whole days older
// than retention_days, from base tables and rollups, and keeps the rest.
func TestDropOldPartitions(t *testing.T) {
	srv := startServer(t)
	now := time.Now().UTC()
	w := newTestWriter(t, Config{Addr: []string{srv.Addr()}, Database: "r", BatchRows: 100, BatchAge: 10 * time.Millisecond})
	for i, age := range []int{0, 1, 5, 10} { // days old
		e := testFrame(i)
		e.Time = now.AddDate(0, 0, -age)
		w.Add(e)
	}
	closeWriter(t, w)
	c := openConn(t, srv.Addr())
	s := Schema{Database: "r", Flavor: Old, Topology: Single, RetentionDays: 3}
	if err := DropOldPartitions(context.Background(), c, s, now); err != nil {
		t.Fatal(err)
	}
	if got := queryUint(t, c, "SELECT count() FROM r.frames"); got != 2 {
		t.Errorf("frames left = %d, want 2 (today, yesterday)", got)
	}
	if got := queryUint(t, c, "SELECT sum(frames) FROM r.frames_per_minute"); got != 2 {
		t.Errorf("rollup left = %d, want 2", got)
	}
}
