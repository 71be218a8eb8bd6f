// Package storage owns msrpscope's ClickHouse store: the schema by server
// version (tables, rollups, migrations) and the writer that batches rows into it without loss.
package storage

import (
	"fmt"
	"strings"
)

// Flavor is the family of ClickHouse server the DDL is written for.
type Flavor uint8

const (
	// Modern servers (22.x and later): DateTime64(6), IPv6, LowCardinality,
	// codecs, TTL.
	Modern Flavor = iota + 1
	// Old servers (18.16 to 21.x): DateTime plus a microseconds column,
	// FixedString(16) addresses, plain String, no codecs, no TTL (the writer
	// drops old partitions instead).
	Old
)

func (f Flavor) String() string {
	if f == Modern {
		return "modern"
	}
	return "old"
}

// FlavorOf picks the flavor for a server version string such as
// "18.16.1" or "24.8.4.13".
func FlavorOf(version string) Flavor {
	major := 0
	for _, c := range version {
		if c < '0' || c > '9' {
			break
		}
		major = major*10 + int(c-'0')
	}
	if major >= 22 {
		return Modern
	}
	return Old
}

// Topology is how the tables are laid out over servers.
type Topology uint8

const (
	Single     Topology = iota + 1 // one server, plain MergeTree tables
	Cluster                        // ON CLUSTER: MergeTree *_local tables on every shard + Distributed tables
	Replicated                     // as Cluster, with Replicated*MergeTree local tables ({shard}, {replica} macros)
)

func (t Topology) String() string {
	switch t {
	case Cluster:
		return "cluster"
	case Replicated:
		return "replicated"
	}
	return "single"
}

// Schema describes the DDL to generate.
type Schema struct {
	Database      string
	Cluster       string // the cluster name for Cluster and Replicated
	Flavor        Flavor
	Topology      Topology
	RetentionDays int // > 0: TTL on modern servers, dropped partitions on old ones
}

// Step is one migration: statements run in order, each safe to run again
// (IF NOT EXISTS), recorded as done in schema_migrations under Version.
type Step struct {
	Version int
	Name    string
	Stmts   []string
}

// Table names: what queries read (the Distributed table in a cluster).
const (
	TableFrames           = "frames"
	TableEvents           = "events"
	TableFramesPerMinute  = "frames_per_minute"
	TableFailuresPerMin   = "failures_per_minute"
	TableAuthPerMinute    = "auth_per_minute"
	TableConnsPerMinute   = "connections_per_minute"
	TableSchemaMigrations = "schema_migrations"
)

// column is a column of a base table; modern and old are its types.
type column struct {
	name, modern, old string
	oldOnly           bool
}

const lcString = "LowCardinality(String)"

var frameColumns = []column{
	{name: "ts", modern: "DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))", old: "DateTime"},
	{name: "ts_us", old: "UInt32", oldOnly: true},
	{name: "direction", modern: lcString, old: "String"},
	{name: "transport", modern: lcString, old: "String"},
	{name: "local_ip", modern: "IPv6", old: "FixedString(16)"},
	{name: "local_port", modern: "UInt16", old: "UInt16"},
	{name: "remote_ip", modern: "IPv6", old: "FixedString(16)"},
	{name: "remote_port", modern: "UInt16", old: "UInt16"},
	{name: "conn_id", modern: "UInt64", old: "UInt64"},
	{name: "session_id", modern: "String", old: "String"},
	{name: "peer_session_id", modern: "String", old: "String"},
	{name: "correlation_id", modern: "String", old: "String"},
	{name: "transact_id", modern: "String", old: "String"},
	{name: "method", modern: lcString, old: "String"},
	{name: "status", modern: "UInt16", old: "UInt16"},
	{name: "message_id", modern: "String", old: "String"},
	{name: "byte_range", modern: "String", old: "String"},
	{name: "content_type", modern: lcString, old: "String"},
	{name: "auth_user", modern: "String", old: "String"},
	{name: "auth_response", modern: "UInt8", old: "UInt8"},
	{name: "flag", modern: lcString, old: "String"},
	{name: "size", modern: "UInt64", old: "UInt64"},
	{name: "body", modern: "String CODEC(ZSTD(3))", old: "String"},
	{name: "node", modern: lcString, old: "String"},
	{name: "batch_id", modern: "UInt64", old: "UInt64"},
}

var eventColumns = []column{
	{name: "ts", modern: "DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))", old: "DateTime"},
	{name: "ts_us", old: "UInt32", oldOnly: true},
	{name: "event", modern: lcString, old: "String"},
	{name: "reason", modern: lcString, old: "String"},
	{name: "error", modern: "String", old: "String"},
	{name: "direction", modern: lcString, old: "String"},
	{name: "transport", modern: lcString, old: "String"},
	{name: "local_ip", modern: "IPv6", old: "FixedString(16)"},
	{name: "local_port", modern: "UInt16", old: "UInt16"},
	{name: "remote_ip", modern: "IPv6", old: "FixedString(16)"},
	{name: "remote_port", modern: "UInt16", old: "UInt16"},
	{name: "conn_id", modern: "UInt64", old: "UInt64"},
	{name: "tls_subject", modern: "String", old: "String"},
	{name: "node", modern: lcString, old: "String"},
	{name: "batch_id", modern: "UInt64", old: "UInt64"},
}

func (s Schema) columns(cols []column) []column {
	out := make([]column, 0, len(cols))
	for _, c := range cols {
		if c.oldOnly && s.Flavor == Modern {
			continue
		}
		out = append(out, c)
	}
	return out
}

// FrameColumns and EventColumns are the insert column lists, in order.
func (s Schema) FrameColumns() []string { return names(s.columns(frameColumns)) }
func (s Schema) EventColumns() []string { return names(s.columns(eventColumns)) }

func names(cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.name
	}
	return out
}

// InsertFrames and InsertEvents are the INSERT statements, with explicit
// column lists (18.16 refuses a native-protocol batch without one).
func (s Schema) InsertFrames() string { return s.insert(TableFrames, s.FrameColumns()) }
func (s Schema) InsertEvents() string { return s.insert(TableEvents, s.EventColumns()) }

func (s Schema) insert(table string, cols []string) string {
	return fmt.Sprintf("INSERT INTO %s (%s)", s.name(table), strings.Join(cols, ", "))
}

func (s Schema) name(table string) string { return quoteIdent(s.Database) + "." + quoteIdent(table) }

// local is the name of the table holding the rows on each server.
func (s Schema) local(table string) string {
	if s.Topology == Single {
		return s.name(table)
	}
	return s.name(table + "_local")
}

func (s Schema) onCluster() string {
	if s.Topology == Single {
		return ""
	}
	return " ON CLUSTER " + quoteIdent(s.Cluster)
}

func quoteIdent(id string) string {
	plain := id != ""
	for i, c := range id {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			plain = false
		}
	}
	if plain {
		return id
	}
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(id) + "`"
}

func quoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}

// engine is the MergeTree engine of a local table: kind is "" or "Summing".
func (s Schema) engine(kind, table, args string) string {
	if s.Topology == Replicated {
		path := quoteString("/clickhouse/tables/{shard}/" + s.Database + "/" + table + "_local")
		a := path + ", '{replica}'"
		if args != "" {
			a += ", " + args
		}
		return "Replicated" + kind + "MergeTree(" + a + ")"
	}
	return kind + "MergeTree(" + args + ")"
}

// ttl is the TTL clause (modern servers, retention set).
func (s Schema) ttl(col string) string {
	if s.Flavor != Modern || s.RetentionDays <= 0 {
		return ""
	}
	return fmt.Sprintf("\nTTL toDateTime(%s) + INTERVAL %d DAY", col, s.RetentionDays)
}

func (s Schema) createTable(table string, cols []column, engineKind, engineArgs, partition, order string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s\n(\n", s.local(table), s.onCluster())
	cs := s.columns(cols)
	for i, c := range cs {
		typ := c.old
		if s.Flavor == Modern {
			typ = c.modern
		}
		fmt.Fprintf(&b, "    %s %s", c.name, typ)
		if i < len(cs)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, ")\nENGINE = %s\nPARTITION BY %s\nORDER BY %s", s.engine(engineKind, table, engineArgs), partition, order)
	b.WriteString(s.ttl(strings.TrimPrefix(strings.TrimSuffix(partition, ")"), "toYYYYMMDD(")))
	return b.String()
}

// distributed is the Distributed table over a local table (cluster only).
func (s Schema) distributed(table, shardKey string) []string {
	if s.Topology == Single {
		return nil
	}
	return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s\nENGINE = Distributed(%s, %s, %s, %s)",
		s.name(table), s.onCluster(), s.local(table), quoteIdent(s.Cluster), quoteIdent(s.Database),
		quoteIdent(table+"_local"), shardKey)}
}

// rollup is a per-minute SummingMergeTree table and the materialized view
// that fills it from a local base table (each shard sums its own rows).
func (s Schema) rollup(table, cols, sums, order, selectSQL string) []string {
	create := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s\n(\n%s\n)\nENGINE = %s\nPARTITION BY toYYYYMMDD(minute)\nORDER BY (%s)%s",
		s.local(table), s.onCluster(), cols, s.engine("Summing", table, "("+sums+")"), order, s.ttl("minute"))
	mv := fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s%s TO %s\nAS %s",
		s.name(table+"_mv"), s.onCluster(), s.local(table), selectSQL)
	return append([]string{create, mv}, s.distributed(table, "rand()")...)
}

// Steps is the append-only list of migrations. Never change a released
// step: append a new one.
func (s Schema) Steps() []Step {
	str := "String"
	if s.Flavor == Modern {
		str = lcString
	}
	frames, events := s.local(TableFrames), s.local(TableEvents)
	steps := []Step{
		{Version: 1, Name: "frames", Stmts: append([]string{
			s.createTable(TableFrames, frameColumns, "", "", "toYYYYMMDD(ts)", "(toStartOfHour(ts), correlation_id, ts)"),
		}, s.distributed(TableFrames, "cityHash64(correlation_id)")...)},
		{Version: 2, Name: "events", Stmts: append([]string{
			s.createTable(TableEvents, eventColumns, "", "", "toYYYYMMDD(ts)", "(toStartOfHour(ts), conn_id, ts)"),
		}, s.distributed(TableEvents, "intHash64(conn_id)")...)},
		{Version: 3, Name: "frames per minute", Stmts: s.rollup(TableFramesPerMinute,
			"    minute DateTime,\n    node "+str+",\n    method "+str+",\n    direction "+str+",\n    frames UInt64,\n    bytes UInt64",
			"frames, bytes", "minute, node, method, direction",
			"SELECT toStartOfMinute(ts) AS minute, node, method, direction, count() AS frames, sum(size) AS bytes\nFROM "+frames+"\nGROUP BY minute, node, method, direction")},
		{Version: 4, Name: "failures per minute", Stmts: s.rollup(TableFailuresPerMin,
			"    minute DateTime,\n    node "+str+",\n    direction "+str+",\n    status UInt16,\n    responses UInt64",
			"responses", "minute, node, direction, status",
			"SELECT toStartOfMinute(ts) AS minute, node, direction, status, count() AS responses\nFROM "+frames+"\nWHERE status >= 300\nGROUP BY minute, node, direction, status")},
		{Version: 5, Name: "auth results per minute", Stmts: s.rollup(TableAuthPerMinute,
			"    minute DateTime,\n    node "+str+",\n    status UInt16,\n    responses UInt64",
			"responses", "minute, node, status",
			"SELECT toStartOfMinute(ts) AS minute, node, status, count() AS responses\nFROM "+frames+"\nWHERE auth_response = 1 AND direction = 'out'\nGROUP BY minute, node, status")},
		{Version: 6, Name: "connections per minute", Stmts: s.rollup(TableConnsPerMinute,
			"    minute DateTime,\n    node "+str+",\n    transport "+str+",\n    event "+str+",\n    reason "+str+",\n    connections UInt64",
			"connections", "minute, node, transport, event, reason",
			"SELECT toStartOfMinute(ts) AS minute, node, transport, event, reason, count() AS connections\nFROM "+events+"\nWHERE event IN ('accepted', 'connected', 'closed')\nGROUP BY minute, node, transport, event, reason")},
	}
	return steps
}

// Bootstrap is what runs before the migrations, on every start: the
// database everywhere and the version table on the server connected to.
func (s Schema) Bootstrap() []string {
	return []string{
		fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s%s", quoteIdent(s.Database), s.onCluster()),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s\n(\n    version UInt32,\n    name String,\n    applied DateTime\n)\nENGINE = MergeTree()\nORDER BY version",
			s.name(TableSchemaMigrations)),
	}
}

// RetentionTables are the local tables whose old partitions the writer
// drops on old servers.
func (s Schema) RetentionTables() []string {
	var out []string
	for _, t := range []string{TableFrames, TableEvents, TableFramesPerMinute, TableFailuresPerMin, TableAuthPerMinute, TableConnsPerMinute} {
		if s.Topology == Single {
			out = append(out, t)
		} else {
			out = append(out, t+"_local")
		}
	}
	return out
}

// DDL is every statement, bootstrap then steps, as one SQL text (for
// golden files and for operators who create the schema by hand).
func (s Schema) DDL() string {
	var b strings.Builder
	for _, st := range s.Bootstrap() {
		b.WriteString(st)
		b.WriteString(";\n\n")
	}
	for _, step := range s.Steps() {
		fmt.Fprintf(&b, "-- migration %d: %s\n", step.Version, step.Name)
		for _, st := range step.Stmts {
			b.WriteString(st)
			b.WriteString(";\n\n")
		}
	}
	return b.String()
}
