package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migrate creates the database and the version table if missing, then runs
// every step not yet recorded in schema_migrations, in order, and records
// it. Every statement is idempotent, so a step interrupted before being
// recorded runs again safely. It returns the versions it applied.
func Migrate(ctx context.Context, conn driver.Conn, s Schema) ([]int, error) {
	for _, st := range s.Bootstrap() {
		if err := conn.Exec(ctx, st); err != nil {
			return nil, fmt.Errorf("storage: bootstrap %q: %w", firstLine(st), err)
		}
	}
	rows, err := conn.Query(ctx, "SELECT version FROM "+s.name(TableSchemaMigrations))
	if err != nil {
		return nil, fmt.Errorf("storage: read schema versions: %w", err)
	}
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("storage: read schema versions: %w", err)
		}
		done[int(v)] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: read schema versions: %w", err)
	}
	var applied []int
	for _, step := range s.Steps() {
		if done[step.Version] {
			continue
		}
		for _, st := range step.Stmts {
			if err := conn.Exec(ctx, st); err != nil {
				return applied, fmt.Errorf("storage: migration %d (%s): %q: %w", step.Version, step.Name, firstLine(st), err)
			}
		}
		if err := recordStep(ctx, conn, s, step); err != nil {
			return applied, fmt.Errorf("storage: record migration %d: %w", step.Version, err)
		}
		applied = append(applied, step.Version)
	}
	return applied, nil
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// recordStep inserts a step's version (a batch: an INSERT ... VALUES through
// Exec waits forever on 18.16's native protocol).
func recordStep(ctx context.Context, conn driver.Conn, s Schema, step Step) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+s.name(TableSchemaMigrations)+" (version, name, applied)")
	if err != nil {
		return err
	}
	if err := b.Append(uint32(step.Version), step.Name, time.Now()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
