package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// Kind is the tracer's "clickhouse" sink kind; register it with
// sink.Register("clickhouse", storage.Kind{}).
type Kind struct{}

// SinkConfig is a clickhouse sink's own configuration block (besides type
// and queue; the writer's buffer is buffer_rows). Zero fields take the
// Writer's defaults (Config).
type SinkConfig struct {
	Addr          Addrs         `yaml:"addr" json:"addr"`                       // host:port (native protocol), or a list tried in turn
	Database      string        `yaml:"database" json:"database"`               // msrpscope
	Username      string        `yaml:"username" json:"username"`               // default
	Password      string        `yaml:"password" json:"password"`               //
	PasswordFile  string        `yaml:"password_file" json:"password_file"`     // read at open, instead of password
	TLS           *SinkTLS      `yaml:"tls" json:"tls"`                         // absent: plain TCP
	BatchRows     int           `yaml:"batch_rows" json:"batch_rows"`           // 50000
	BatchAge      time.Duration `yaml:"batch_age" json:"batch_age"`             // 1s
	BufferRows    int           `yaml:"buffer_rows" json:"buffer_rows"`         // 2 x batch_rows
	SpoolDir      string        `yaml:"spool_dir" json:"spool_dir"`             // "": batches wait in memory, lost with the process
	SpoolMaxBytes int64         `yaml:"spool_max_bytes" json:"spool_max_bytes"` // 1 GiB
	Cluster       string        `yaml:"cluster" json:"cluster"`                 // "": one server
	Replicated    bool          `yaml:"replicated" json:"replicated"`           // with cluster: Replicated*MergeTree
	RetentionDays int           `yaml:"retention_days" json:"retention_days"`   // 0: keep forever
	BodyBytes     int           `yaml:"body_bytes" json:"body_bytes"`           // 1024; < 0: no body
	Node          string        `yaml:"node" json:"node"`                       // "": the host name
	DialTimeout   time.Duration `yaml:"dial_timeout" json:"dial_timeout"`       // 5s
	InsertTimeout time.Duration `yaml:"insert_timeout" json:"insert_timeout"`   // 30s
}

// SinkTLS is the tls block of a clickhouse sink.
type SinkTLS struct {
	CAFile             string `yaml:"ca_file" json:"ca_file"`
	Cert               string `yaml:"cert" json:"cert"`
	Key                string `yaml:"key" json:"key"`
	ServerName         string `yaml:"server_name" json:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" json:"insecure_skip_verify"`
}

// Addrs is one address or a list of them.
type Addrs []string

// UnmarshalYAML takes a scalar or a sequence (the go-yaml v2 interface,
// which the YAML decoders in use understand).
func (a *Addrs) UnmarshalYAML(unmarshal func(any) error) error {
	var one string
	if err := unmarshal(&one); err == nil {
		*a = Addrs{one}
		return nil
	}
	var list []string
	if err := unmarshal(&list); err != nil {
		return errors.New("addr is host:port or a list of them")
	}
	*a = list
	return nil
}

// Decode implements sink.Factory: it checks the keys without I/O.
func (Kind) Decode(decode func(v any) error) (any, error) {
	var c SinkConfig
	if err := decode(&c); err != nil {
		return nil, err
	}
	if len(c.Addr) == 0 {
		return nil, errors.New("clickhouse sink needs addr")
	}
	for _, a := range c.Addr {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, fmt.Errorf("clickhouse addr %q: want host:port (the native protocol, 9000 or 9440 with tls)", a)
		}
	}
	if c.Password != "" && c.PasswordFile != "" {
		return nil, errors.New("clickhouse: password and password_file are exclusive")
	}
	if c.BatchRows < 0 || c.BufferRows < 0 || c.SpoolMaxBytes < 0 || c.RetentionDays < 0 || c.BatchAge < 0 {
		return nil, errors.New("clickhouse: batch_rows, buffer_rows, batch_age, spool_max_bytes and retention_days must not be negative")
	}
	if c.Replicated && c.Cluster == "" {
		return nil, errors.New("clickhouse: replicated needs cluster")
	}
	if c.TLS != nil && (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return nil, errors.New("clickhouse tls: cert and key go together")
	}
	return c, nil
}

// Open implements sink.Factory. It reads the password and TLS files and
// starts the writer, which connects (and creates the schema) on its own
// goroutine: an unreachable server starts the sink degraded, retrying.
func (Kind) Open(ctx context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	c, ok := cfg.(SinkConfig)
	if !ok {
		return nil, fmt.Errorf("clickhouse sink %q: configuration of type %T", o.Name, cfg)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wc := Config{Addr: c.Addr, Database: c.Database, Username: c.Username, Password: c.Password,
		BatchRows: c.BatchRows, BatchAge: c.BatchAge, BufferRows: c.BufferRows,
		SpoolDir: c.SpoolDir, SpoolMaxBytes: c.SpoolMaxBytes, Cluster: c.Cluster, Replicated: c.Replicated,
		RetentionDays: c.RetentionDays, BodyBytes: c.BodyBytes, Node: c.Node,
		DialTimeout: c.DialTimeout, InsertTimeout: c.InsertTimeout, Logger: log.With(slog.String("sink", o.Name))}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse password_file: %w", err)
		}
		wc.Password = string(trimNewline(b))
	}
	if c.TLS != nil {
		tc, err := TLSFiles{CA: c.TLS.CAFile, Cert: c.TLS.Cert, Key: c.TLS.Key, ServerName: c.TLS.ServerName,
			Insecure: c.TLS.InsecureSkipVerify}.Config()
		if err != nil {
			return nil, err
		}
		wc.TLS = tc
	}
	if wc.Node == "" {
		wc.Node, _ = os.Hostname()
	}
	w, err := NewWriter(ctx, wc)
	if err != nil {
		return nil, err
	}
	return &chSink{name: o.Name, w: w}, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// chSink is a Writer seen as a tracer sink.
type chSink struct {
	name string
	w    *Writer
}

// Put implements sink.Sink: Writer.Add never blocks and copies the row.
func (s *chSink) Put(e *event.Event) { s.w.Add(e) }

// Stats implements sink.Sink: Sent counts rows in ClickHouse (inserted, or
// found there by a batch-id check), Dropped every row lost, Queued the
// batches waiting, Spooled the rows sealed into the queue.
func (s *chSink) Stats() sink.Stats {
	st := s.w.Stats()
	out := sink.Stats{Name: s.name, Type: "clickhouse",
		Sent:    st.RowsStored + st.RowsFound,
		Dropped: st.DroppedBuffer + st.DroppedClosed + st.DroppedQueue + st.DroppedOnClose,
		Errors:  st.Failures + st.Corrupt,
		Queued:  st.Queued,
		Spooled: st.RowsQueued,
		State:   sink.StateOK,
		Counters: []sink.Counter{
			{Name: "batches", Value: st.Batches},
			{Name: "batches_stored", Value: st.BatchesStored},
			{Name: "corrupt", Value: st.Corrupt},
			{Name: "failures", Value: st.Failures},
			{Name: "partial_found", Value: st.PartialFound},
			{Name: "rows_found", Value: st.RowsFound},
			{Name: "rows_stored", Value: st.RowsStored},
		}}
	if !st.Connected {
		out.State, out.LastError = sink.StateDegraded, "not connected to ClickHouse"
	}
	return out
}

// Close implements sink.Sink: what ctx leaves no time to insert stays in
// the spool (spool_dir) for the next start.
func (s *chSink) Close(ctx context.Context) error { return s.w.Close(ctx) }
