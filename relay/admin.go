package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// ErrNotFound is wrapped by KillSession and KillConnection when there is
// no session or connection with that id.
var ErrNotFound = errors.New("relay: not found")

// SessionInfo is one relay session as Sessions lists it.
type SessionInfo struct {
	ID        string
	User      string
	ConnID    uint64
	Transport string // "msrp" or "msrps"
	Remote    netip.AddrPort
	Created   time.Time
	Expires   time.Time
	// Requests relayed from the session's client (In) and delivered to it
	// (Out), and their bytes on the wire (responses not counted).
	FramesIn, FramesOut, BytesIn, BytesOut uint64
}

// ConnectionInfo is one connection as Connections lists it.
type ConnectionInfo struct {
	ID         uint64
	Transport  string // "msrp" or "msrps"
	Dir        event.Direction
	Local      netip.AddrPort
	Remote     netip.AddrPort
	TLSSubject string // the peer's certificate subject, "" when none
	Created    time.Time
	QueueDepth int      // relay-made frames waiting for the writer
	Users      []string // of the sessions on it, sorted by session
	Sessions   []string
}

// Sessions returns every session held now, in no order.
func (r *Relay) Sessions() []SessionInfo {
	all := r.sessions.all()
	out := make([]SessionInfo, 0, len(all))
	for _, s := range all {
		out = append(out, SessionInfo{
			ID: s.id, User: s.user, ConnID: s.conn.info.ID, Transport: s.conn.info.Transport, Remote: s.conn.connInfo().Remote,
			Created: s.created, Expires: s.expires,
			FramesIn: s.framesIn.Load(), FramesOut: s.framesOut.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		})
	}
	return out
}

// SessionUser returns the user of the live session with this id, "" when
// there is none (for a tracer's user traces).
func (r *Relay) SessionUser(id string) string {
	if s := r.sessions.get(id, time.Now()); s != nil {
		return s.user
	}
	return ""
}

// Connections returns every registered connection, in no order.
func (r *Relay) Connections() []ConnectionInfo {
	r.mu.Lock()
	conns := make([]*conn, 0, len(r.conns))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	byConn := map[*conn][]*session{}
	for _, s := range r.sessions.all() {
		byConn[s.conn] = append(byConn[s.conn], s)
	}
	out := make([]ConnectionInfo, 0, len(conns))
	for _, c := range conns {
		info := c.connInfo()
		ci := ConnectionInfo{ID: info.ID, Transport: info.Transport, Dir: info.Dir, Local: info.Local,
			Remote: info.Remote, Created: c.created, QueueDepth: c.queueDepth()}
		if p := c.tlsSubject.Load(); p != nil {
			ci.TLSSubject = *p
		}
		for _, s := range byConn[c] {
			ci.Sessions = append(ci.Sessions, s.id)
			ci.Users = append(ci.Users, s.user)
		}
		out = append(out, ci)
	}
	return out
}

// KillSession ends a session: its URI is forgotten at once, so requests
// naming it get 481 (RFC 4976 §6.3); its connection stays open.
func (r *Relay) KillSession(id string) error {
	s, ok := r.sessions.remove(id)
	if !ok {
		return fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	r.log.Info("session killed by admin", slog.String("session", id), slog.String("user", s.user),
		slog.Uint64("conn", s.conn.info.ID))
	return nil
}

// KillConnection closes a connection (event.CloseAdmin, traced like any
// close); the sessions on it end with it.
func (r *Relay) KillConnection(id uint64) error {
	r.mu.Lock()
	c := r.conns[id]
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("connection %d: %w", id, ErrNotFound)
	}
	r.log.Info("connection killed by admin", slog.Uint64("conn", id), slog.String("remote", c.info.Remote.String()))
	c.close(event.CloseAdmin, errors.New("closed by admin"))
	return nil
}

func (c *conn) setTLSSubject(tc *tls.Conn) {
	if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 {
		s := st.PeerCertificates[0].Subject.String()
		c.tlsSubject.Store(&s)
	}
}
