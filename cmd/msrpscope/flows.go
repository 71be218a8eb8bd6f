package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/msrpscope/msrpscope/internal/admin"
	"github.com/msrpscope/msrpscope/internal/recent"
	"github.com/msrpscope/msrpscope/storage"
)

// maxFlowFrames bounds the frames the web view reads from ClickHouse for
// one session.
const maxFlowFrames = 5000

// ringFlows is the recent sinks' rings as the web view's flow source.
type ringFlows struct{ s *recent.Store }

func (f ringFlows) Source() string {
	if !f.s.Open() {
		return "recent (no recent sink is open: add one to a rule)"
	}
	return "recent"
}

func (f ringFlows) SessionFrames(_ context.Context, id string) ([]admin.FlowFrame, error) {
	fs := f.s.SessionFrames(id)
	out := make([]admin.FlowFrame, len(fs))
	for i, x := range fs {
		out[i] = admin.FlowFrame{Time: x.Time, Dir: x.Dir.String(), ConnID: x.ConnID, Transport: x.Transport,
			Local: x.Local, Remote: x.Remote, Method: x.Method, Status: x.Status, ReportStatus: x.ReportStatus,
			TransactID: x.TransactID, MessageID: x.MessageID, ContentType: x.ContentType,
			FromSession: x.FromSession, ToSession: x.ToSession, Size: x.Size, Head: string(x.Head)}
		if x.Flag != 0 {
			out[i].Flag = string(x.Flag)
		}
	}
	return out, nil
}

func (f ringFlows) RecentSessions(_ context.Context, max int) ([]admin.FlowSession, error) {
	var out []admin.FlowSession
	for _, s := range f.s.Sessions(max) {
		out = append(out, admin.FlowSession{ID: s.ID, Frames: s.Frames, First: s.First, Last: s.Last})
	}
	return out, nil
}

// chFlows reads flows from the ClickHouse of a clickhouse sink, with the
// sink's address, database and credentials as configured at start. A
// session ClickHouse has no rows of yet (its batch waits) is read from the
// recent rings. The connection opens at the first read.
type chFlows struct {
	sink string
	cfg  storage.SinkConfig
	ring ringFlows

	mu sync.Mutex
	rd *storage.Reader
}

// flowsFor picks the web view's flow source: the first clickhouse sink (by
// name) a rule sends to, else the recent rings.
func flowsFor(fc *fileConfig, rings *recent.Store) admin.Flows {
	used := map[string]bool{}
	for _, r := range fc.Tracing.Rules {
		for _, to := range r.To {
			used[to] = true
		}
	}
	var names []string
	for name, b := range fc.Sinks {
		if b.Type == "clickhouse" && used[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		c, err := storage.Kind{}.Decode(fc.Sinks[name].decode)
		if err == nil {
			return &chFlows{sink: name, cfg: c.(storage.SinkConfig), ring: ringFlows{rings}}
		}
	}
	return ringFlows{rings}
}

func (f *chFlows) Source() string { return "clickhouse (sink " + f.sink + "), else recent" }

func (f *chFlows) reader(ctx context.Context) (*storage.Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rd != nil {
		return f.rd, nil
	}
	c := f.cfg
	opts := &clickhouse.Options{Addr: c.Addr, DialTimeout: c.DialTimeout, MaxOpenConns: 2, MaxIdleConns: 1,
		Auth: clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password}}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Auth.Username == "" {
		opts.Auth.Username = "default"
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse password_file: %w", err)
		}
		opts.Auth.Password = strings.TrimRight(string(b), "\r\n")
	}
	if c.TLS != nil {
		tc, err := storage.TLSFiles{CA: c.TLS.CAFile, Cert: c.TLS.Cert, Key: c.TLS.Key, ServerName: c.TLS.ServerName,
			Insecure: c.TLS.InsecureSkipVerify}.Config()
		if err != nil {
			return nil, err
		}
		opts.TLS = tc
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: open: %w", err)
	}
	db := c.Database
	if db == "" {
		db = "msrpscope"
	}
	rd, err := storage.NewReader(conn, db)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	f.rd = rd
	return rd, nil
}

func (f *chFlows) SessionFrames(ctx context.Context, id string) ([]admin.FlowFrame, error) {
	rd, err := f.reader(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := rd.SessionFrames(ctx, id, maxFlowFrames)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return f.ring.SessionFrames(ctx, id)
	}
	out := make([]admin.FlowFrame, len(rows))
	for i, x := range rows {
		out[i] = admin.FlowFrame{Time: x.TS, Dir: x.Direction, ConnID: x.ConnID, Transport: x.Transport, Node: x.Node,
			Local: netip.AddrPortFrom(x.LocalIP, x.LocalPort), Remote: netip.AddrPortFrom(x.RemoteIP, x.RemotePort),
			Method: x.Method, Status: int(x.Status), TransactID: x.TransactID, MessageID: x.MessageID,
			ContentType: x.ContentType, FromSession: x.SessionID, ToSession: x.PeerSessionID, Flag: x.Flag,
			Size: int64(x.Size)}
	}
	return out, nil
}

func (f *chFlows) RecentSessions(ctx context.Context, max int) ([]admin.FlowSession, error) {
	return f.ring.RecentSessions(ctx, max)
}
