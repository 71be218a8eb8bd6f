package clickhouse

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

func open(t *testing.T, addr string) driver.Conn {
	t.Helper()
	conn, err := ch.Open(&ch.Options{Addr: []string{addr}, Protocol: ch.Native, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func count(t *testing.T, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// A server starts, answers over the native protocol, keeps its rows across SIGKILL and restart,
// and keeps its ports.
func TestServerKillRestart(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	conn := open(t, s.Addr())
	v, err := conn.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s at %s", v, s.Addr())
	if err := conn.Exec(ctx, `CREATE TABLE default.t (n UInt32, s String) ENGINE = MergeTree ORDER BY n`); err != nil {
		t.Fatal(err)
	}
	b, err := conn.PrepareBatch(ctx, `INSERT INTO default.t (n, s)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if err := b.Append(uint32(i), strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, `SELECT count() FROM default.t`); n != 1000 {
		t.Fatalf("count = %d, want 1000", n)
	}

	addr := s.Addr()
	s.Kill()
	select {
	case <-s.Exited():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if _, err := s.Query("SELECT 1"); err == nil {
		t.Fatal("a killed server answered")
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("ping succeeded on a killed server")
	}

	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr())
	}
	conn2 := open(t, s.Addr())
	if n := count(t, conn2, `SELECT count() FROM default.t`); n != 1000 {
		t.Fatalf("after kill and restart: count = %d, want 1000", n)
	}
	if got := strings.TrimSpace(s.MustQuery(t, `SELECT sum(n) FROM default.t`)); got != "499500" {
		t.Fatalf("sum = %s, want 499500", got)
	}

	// A clean stop and restart keeps the rows too.
	s.Stop()
	s.Restart()
	if got := strings.TrimSpace(s.MustQuery(t, `SELECT count() FROM default.t`)); got != "1000" {
		t.Fatalf("after stop and restart: count = %s, want 1000", got)
	}
}

// The cluster runs ON CLUSTER DDL on both shards; rows inserted through a Distributed table land
// on both shards and a SELECT through it sees them all.
func TestCluster(t *testing.T) {
	c := StartCluster(t, Options{})
	ctx := context.Background()
	conn := open(t, c.Shards[0].Addr())
	for _, q := range []string{
		fmt.Sprintf(`CREATE DATABASE IF NOT EXISTS m ON CLUSTER %s`, c.Name),
		fmt.Sprintf(`CREATE TABLE m.t_local ON CLUSTER %s (n UInt32)
			ENGINE = MergeTree ORDER BY n`, c.Name),
		fmt.Sprintf(`CREATE TABLE m.t ON CLUSTER %s AS m.t_local
			ENGINE = Distributed(%s, m, t_local, intHash32(n))`, c.Name, c.Name),
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The DDL reached the second shard through ZooKeeper.
	for i, s := range c.Shards {
		out := s.MustQuery(t, `SELECT name FROM system.tables WHERE database = 'm' ORDER BY name`)
		if strings.Fields(out)[0] != "t" || len(strings.Fields(out)) != 2 {
			t.Fatalf("shard %d tables: %q, want t and t_local", i+1, out)
		}
	}
	b, err := conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_distributed_sync": 1})),
		`INSERT INTO m.t (n)`)
	if err != nil {
		t.Fatal(err)
	}
	const rows = 200
	for i := range rows {
		if err := b.Append(uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for i, s := range c.Shards {
		n := count(t, open(t, s.Addr()), `SELECT count() FROM m.t_local`)
		if n == 0 {
			t.Fatalf("shard %d holds no rows", i+1)
		}
		want := fmt.Sprintf("%02d", i+1)
		if got := strings.TrimSpace(s.MustQuery(t, `SELECT substitution FROM system.macros WHERE macro = 'shard'`)); got != want {
			t.Fatalf("shard %d: macro {shard} = %q, want %q", i+1, got, want)
		}
		t.Logf("shard %d: %d rows", i+1, n)
		total += n
	}
	// Disjoint shards: the sum of n over both is the sum over the rows inserted.
	var sum uint64
	for _, s := range c.Shards {
		v, err := strconv.ParseUint(strings.TrimSpace(s.MustQuery(t, `SELECT sum(n) FROM m.t_local`)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	if want := uint64(rows * (rows - 1) / 2); sum != want {
		t.Fatalf("sum of n over the shards = %d, want %d", sum, want)
	}
	if total != rows {
		t.Fatalf("shards hold %d rows, want %d", total, rows)
	}
	for _, s := range c.Shards {
		if n := count(t, open(t, s.Addr()), `SELECT count() FROM m.t`); n != rows {
			t.Fatalf("through the Distributed table on %s: %d rows, want %d", s.Addr(), n, rows)
		}
	}
}

// recTB records what need does instead of stopping the test.
type recTB struct {
	testing.TB
	fatal, skip string
}

func (r *recTB) Helper()                        {}
func (r *recTB) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recTB) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

// A missing binary skips the test naming the packages to install; with CI set it fails it.
func TestMissingBinary(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recTB{TB: t}
		need(r, "msrpscope-no-such-binary", "some-package")
		msg := r.skip
		if ci != "" {
			msg = r.fatal
			if r.skip != "" {
				t.Fatalf("CI=%s: skipped: %s", ci, r.skip)
			}
		} else if r.fatal != "" {
			t.Fatalf("CI unset: failed: %s", r.fatal)
		}
		if !strings.Contains(msg, "apt-get install some-package") {
			t.Fatalf("CI=%q: message %q does not name the package", ci, msg)
		}
	}
}
