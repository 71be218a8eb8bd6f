package storage

import (
	"context"
	"fmt"
	"time"
)

// frameCols and eventCols hold one batch part column by column, in the Go
// types the driver takes for each flavor's column types; reused across
// batches by the sender.
type frameCols struct {
	ts                                                     []time.Time
	tsUS                                                   []uint32
	direction, transport, session, peer, corr, tid, method []string
	msgID, byteRange, ctype, authUser, flag, body, node    []string
	localIP, remoteIP                                      [][16]byte // IPv6 (modern)
	localRaw, remoteRaw                                    []string   // FixedString(16) (old)
	localPort, remotePort, status                          []uint16
	connID, size, batchID                                  []uint64
	authResp                                               []uint8
}

type eventCols struct {
	ts                                                      []time.Time
	tsUS                                                    []uint32
	event, reason, errText, direction, transport, tls, node []string
	localIP, remoteIP                                       [][16]byte
	localRaw, remoteRaw                                     []string
	localPort, remotePort                                   []uint16
	connID, batchID                                         []uint64
}

func (c *frameCols) reset() {
	*c = frameCols{ts: c.ts[:0], tsUS: c.tsUS[:0], direction: c.direction[:0], transport: c.transport[:0], session: c.session[:0], peer: c.peer[:0], corr: c.corr[:0], tid: c.tid[:0], method: c.method[:0], msgID: c.msgID[:0], byteRange: c.byteRange[:0], ctype: c.ctype[:0], authUser: c.authUser[:0], flag: c.flag[:0], body: c.body[:0], node: c.node[:0], localIP: c.localIP[:0], remoteIP: c.remoteIP[:0], localRaw: c.localRaw[:0], remoteRaw: c.remoteRaw[:0], localPort: c.localPort[:0], remotePort: c.remotePort[:0], status: c.status[:0], connID: c.connID[:0], size: c.size[:0], batchID: c.batchID[:0], authResp: c.authResp[:0]}
}

func (c *eventCols) reset() {
	*c = eventCols{ts: c.ts[:0], tsUS: c.tsUS[:0], event: c.event[:0], reason: c.reason[:0], errText: c.errText[:0], direction: c.direction[:0], transport: c.transport[:0], tls: c.tls[:0], node: c.node[:0], localIP: c.localIP[:0], remoteIP: c.remoteIP[:0], localRaw: c.localRaw[:0], remoteRaw: c.remoteRaw[:0], localPort: c.localPort[:0], remotePort: c.remotePort[:0], connID: c.connID[:0], batchID: c.batchID[:0]}
}

func splitTS(t time.Time) (time.Time, uint32) {
	us := t.UnixMicro()
	sec := floorDiv(us, 1e6)
	return time.Unix(sec, 0).UTC(), uint32(us - sec*1e6)
}

func (c *frameCols) add(f Frame, old bool) {
	if old {
		ts, us := splitTS(f.TS)
		c.ts = append(c.ts, ts)
		c.tsUS = append(c.tsUS, us)
		c.localRaw = append(c.localRaw, f.localRaw)
		c.remoteRaw = append(c.remoteRaw, f.remoteRaw)
	} else {
		c.ts = append(c.ts, f.TS)
		c.localIP = append(c.localIP, f.LocalIP.As16())
		c.remoteIP = append(c.remoteIP, f.RemoteIP.As16())
	}
	c.direction = append(c.direction, f.Direction)
	c.transport = append(c.transport, f.Transport)
	c.localPort = append(c.localPort, f.LocalPort)
	c.remotePort = append(c.remotePort, f.RemotePort)
	c.connID = append(c.connID, f.ConnID)
	c.session = append(c.session, f.SessionID)
	c.peer = append(c.peer, f.PeerSessionID)
	c.corr = append(c.corr, f.CorrelationID)
	c.tid = append(c.tid, f.TransactID)
	c.method = append(c.method, f.Method)
	c.status = append(c.status, f.Status)
	c.msgID = append(c.msgID, f.MessageID)
	c.byteRange = append(c.byteRange, f.ByteRange)
	c.ctype = append(c.ctype, f.ContentType)
	c.authUser = append(c.authUser, f.AuthUser)
	c.authResp = append(c.authResp, b2u(f.AuthResponse))
	c.flag = append(c.flag, f.Flag)
	c.size = append(c.size, f.Size)
	c.body = append(c.body, f.Body)
	c.node = append(c.node, f.Node)
	c.batchID = append(c.batchID, f.BatchID)
}

func (c *frameCols) column(name string, old bool) any {
	switch name {
	case "ts":
		return c.ts
	case "ts_us":
		return c.tsUS
	case "direction":
		return c.direction
	case "transport":
		return c.transport
	case "local_ip":
		if old {
			return c.localRaw
		}
		return c.localIP
	case "local_port":
		return c.localPort
	case "remote_ip":
		if old {
			return c.remoteRaw
		}
		return c.remoteIP
	case "remote_port":
		return c.remotePort
	case "conn_id":
		return c.connID
	case "session_id":
		return c.session
	case "peer_session_id":
		return c.peer
	case "correlation_id":
		return c.corr
	case "transact_id":
		return c.tid
	case "method":
		return c.method
	case "status":
		return c.status
	case "message_id":
		return c.msgID
	case "byte_range":
		return c.byteRange
	case "content_type":
		return c.ctype
	case "auth_user":
		return c.authUser
	case "auth_response":
		return c.authResp
	case "flag":
		return c.flag
	case "size":
		return c.size
	case "body":
		return c.body
	case "node":
		return c.node
	case "batch_id":
		return c.batchID
	}
	return nil
}

func (c *eventCols) add(e ConnEvent, old bool) {
	if old {
		ts, us := splitTS(e.TS)
		c.ts = append(c.ts, ts)
		c.tsUS = append(c.tsUS, us)
		c.localRaw = append(c.localRaw, e.localRaw)
		c.remoteRaw = append(c.remoteRaw, e.remoteRaw)
	} else {
		c.ts = append(c.ts, e.TS)
		c.localIP = append(c.localIP, e.LocalIP.As16())
		c.remoteIP = append(c.remoteIP, e.RemoteIP.As16())
	}
	c.event = append(c.event, e.Event)
	c.reason = append(c.reason, e.Reason)
	c.errText = append(c.errText, e.Error)
	c.direction = append(c.direction, e.Direction)
	c.transport = append(c.transport, e.Transport)
	c.localPort = append(c.localPort, e.LocalPort)
	c.remotePort = append(c.remotePort, e.RemotePort)
	c.connID = append(c.connID, e.ConnID)
	c.tls = append(c.tls, e.TLSSubject)
	c.node = append(c.node, e.Node)
	c.batchID = append(c.batchID, e.BatchID)
}

func (c *eventCols) column(name string, old bool) any {
	switch name {
	case "ts":
		return c.ts
	case "ts_us":
		return c.tsUS
	case "event":
		return c.event
	case "reason":
		return c.reason
	case "error":
		return c.errText
	case "direction":
		return c.direction
	case "transport":
		return c.transport
	case "local_ip":
		if old {
			return c.localRaw
		}
		return c.localIP
	case "local_port":
		return c.localPort
	case "remote_ip":
		if old {
			return c.remoteRaw
		}
		return c.remoteIP
	case "remote_port":
		return c.remotePort
	case "conn_id":
		return c.connID
	case "tls_subject":
		return c.tls
	case "node":
		return c.node
	case "batch_id":
		return c.batchID
	}
	return nil
}

// insertFrames sends a batch's frames rows in one INSERT.
func (w *Writer) insertFrames(ctx context.Context, b batch) error {
	old := w.schema.Flavor == Old
	w.fcols.reset()
	if err := eachFrame(b, func(f Frame) { w.fcols.add(f, old) }); err != nil {
		return err
	}
	return w.sendColumns(ctx, w.schema.InsertFrames(), w.schema.FrameColumns(), func(name string) any {
		return w.fcols.column(name, old)
	})
}

// insertEvents sends a batch's events rows in one INSERT.
func (w *Writer) insertEvents(ctx context.Context, b batch) error {
	old := w.schema.Flavor == Old
	w.ecols.reset()
	if err := eachEvent(b, func(e ConnEvent) { w.ecols.add(e, old) }); err != nil {
		return err
	}
	return w.sendColumns(ctx, w.schema.InsertEvents(), w.schema.EventColumns(), func(name string) any {
		return w.ecols.column(name, old)
	})
}

func (w *Writer) sendColumns(ctx context.Context, query string, cols []string, col func(string) any) error {
	batch, err := w.conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("storage: prepare %q: %w", query, err)
	}
	for i, name := range cols {
		if err := batch.Column(i).Append(col(name)); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("storage: column %s: %w", name, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("storage: insert: %w", err)
	}
	return nil
}
