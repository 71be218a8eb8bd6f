package relay

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// session is what a successful AUTH creates (RFC 4976 §6.3): the Use-Path
// URI handed out, bound to the connection the AUTH came on and to the
// previous hop's URI, valid until it expires or that connection closes.
type session struct {
	id      string
	user    string
	conn    *conn
	prevHop msrp.URI // first From-Path URI of the AUTH: the client, or the relay in front of it
	created time.Time
	expires time.Time

	// Requests relayed from the session's client (in) and to it (out),
	// and their bytes on the wire; updated on the frame path.
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
}

var (
	errTooManySessions        = errors.New("too many sessions")
	errTooManySessionsForUser = errors.New("too many sessions for this user")
)

// sessionTable maps session-ids to sessions. A restart forgets every
// session: clients AUTH again (their connections are gone anyway).
type sessionTable struct {
	mu      sync.Mutex
	byID    map[string]*session
	byConn  map[*conn]map[*session]struct{} // so a closing connection finds its sessions at once
	perUser map[string]int
	max     int
	maxUser int
}

func newSessionTable(max, maxUser int) *sessionTable {
	return &sessionTable{byID: make(map[string]*session), byConn: make(map[*conn]map[*session]struct{}),
		perUser: make(map[string]int), max: max, maxUser: maxUser}
}

func (t *sessionTable) add(s *session) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) >= t.max {
		return errTooManySessions
	}
	if t.perUser[s.user] >= t.maxUser {
		return errTooManySessionsForUser
	}
	t.byID[s.id] = s
	t.perUser[s.user]++
	m := t.byConn[s.conn]
	if m == nil {
		m = make(map[*session]struct{})
		t.byConn[s.conn] = m
	}
	m[s] = struct{}{}
	return nil
}

// setMax changes the bounds; sessions over a lowered bound stay until they end.
func (t *sessionTable) setMax(max, maxUser int) {
	t.mu.Lock()
	t.max, t.maxUser = max, maxUser
	t.mu.Unlock()
}

// get returns the live session with this id, or nil.
func (t *sessionTable) get(id string, now time.Time) *session {
	t.mu.Lock()
	s := t.byID[id]
	t.mu.Unlock()
	if s == nil || now.After(s.expires) || s.conn.isClosed() {
		return nil
	}
	return s
}

func (t *sessionTable) removeLocked(s *session) {
	if t.byID[s.id] != s {
		return
	}
	delete(t.byID, s.id)
	if t.perUser[s.user]--; t.perUser[s.user] <= 0 {
		delete(t.perUser, s.user)
	}
	if m := t.byConn[s.conn]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(t.byConn, s.conn)
		}
	}
}

// dropConn removes every session bound to c (RFC 4976 §6.3: the URI is
// invalidated when the client's connection closes).
func (t *sessionTable) dropConn(c *conn) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for s := range t.byConn[c] {
		t.removeLocked(s)
		n++
	}
	return n
}

// expire removes sessions past their expiry.
func (t *sessionTable) expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.byID {
		if now.After(s.expires) {
			t.removeLocked(s)
			n++
		}
	}
	return n
}

// remove ends the session with this id; it reports whether there was one.
func (t *sessionTable) remove(id string) (*session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byID[id]
	if s == nil {
		return nil, false
	}
	t.removeLocked(s)
	return s, true
}

// all returns the sessions held now.
func (t *sessionTable) all() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	return out
}

func (t *sessionTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// hasSessionOn reports whether c carries at least one live session: an
// authenticated client, which may AUTH onward through this relay.
func (t *sessionTable) hasSessionOn(c *conn, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := range t.byConn[c] {
		if !now.After(s.expires) {
			return true
		}
	}
	return false
}
