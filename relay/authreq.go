package relay

import (
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// handleAuth authenticates an AUTH addressed to this relay alone
// (RFC 4976 §5.1, §6.3) and on success creates a session. The frame is
// reported after the decision, so that it carries the session its 200
// creates (event.FrameInfo.FromSession), as its responses do.
func (c *conn) handleAuth(q *request) error {
	if err := c.readIn(q.f); err != nil {
		c.endIn(q.f, "", "", false)
		return err
	}
	var keys [2]string
	relayed := viaRelay(q.fromPath)
	if relayed {
		keys = relayedAuthKeys(q)
	}
	var a authResult
	if relayed && c.relayedAuthBlocked(keys) {
		c.r.logLimit(c, limitMaxAuthFailures, slog.String("user", keys[0]), slog.String("client", keys[1]))
		a = authResult{code: 403, comment: "Too many failed AUTH requests"}
	} else {
		a = c.authenticate(q)
	}
	q.from = a.sid
	c.endIn(q.f, q.from, q.to, true)
	c.respond(q, a.code, a.comment, a.extra...)
	switch {
	case relayed && a.failed:
		c.countRelayedAuthFailure(keys)
	case relayed && a.code == 200:
		for _, k := range keys {
			delete(c.relayedAuthFails, k)
		}
	case a.failed && int(c.authFails.Add(1)) >= c.r.limits().MaxAuthFailures:
		// RFC 4976 §6.3: too many failures without success.
		c.r.logLimit(c, limitMaxAuthFailures, slog.String("reason", event.CloseLimit.String()))
		c.closeAfterFlush(event.CloseLimit, errors.New("too many failed AUTH requests"), c)
	}
	return nil
}

// viaRelay reports whether an AUTH with From-Path fromPath came through
// another relay (more than one URI): its connection is a relay's, shared by
// that relay's clients. RFC 4976 §6.3: "These preventive measures apply
// only to a connection between a relay and a client; a relay SHOULD NOT
// use excessive AUTH request failures as a reason to terminate a
// connection with another relay." Its failures count per user and per
// client instead; a client that names itself through a made-up relay only
// loses the close, not the limit.
func viaRelay(fromPath []byte) bool {
	_, rest := msrp.SplitPath(fromPath)
	return len(rest) > 0
}

// maxRelayedAuthKeys bounds the users and clients counted per connection;
// beyond it new ones are not counted (a client can change its URI anyway:
// the per-user count is what stops guessing a password).
const maxRelayedAuthKeys = 1024

// relayedAuthKeys names the user (Authorization username; "" without one)
// and the client of a relayed AUTH: the previous relay's URI for it when
// that has a session-id (the client's session there, which that relay
// checked), else the client's own URI (the last From-Path URI).
func relayedAuthKeys(q *request) [2]string {
	var k [2]string
	if v := q.f.Get(msrp.HdrAuthorization); v != nil {
		if d, err := msrp.ParseDigest(v); err == nil {
			if u, ok := d.Get("username"); ok && u != "" {
				k[0] = "user:" + u
			}
		}
	}
	first, rest := msrp.SplitPath(q.fromPath)
	client := first
	if u, err := msrp.ParseURI(bstr(first)); err != nil || u.SessionID == "" {
		for len(rest) > 0 {
			client, rest = msrp.SplitPath(rest)
		}
	}
	k[1] = "client:" + string(client)
	return k
}

// relayedAuthBlocked reports whether the user or the client has had
// max_auth_failures failed AUTHs on c: further ones get 403 unchecked.
func (c *conn) relayedAuthBlocked(keys [2]string) bool {
	limit := c.r.limits().MaxAuthFailures
	for _, k := range keys {
		if k != "" && c.relayedAuthFails[k] >= limit {
			return true
		}
	}
	return false
}

func (c *conn) countRelayedAuthFailure(keys [2]string) {
	if c.relayedAuthFails == nil {
		c.relayedAuthFails = make(map[string]int)
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		if _, ok := c.relayedAuthFails[k]; ok || len(c.relayedAuthFails) < maxRelayedAuthKeys {
			c.relayedAuthFails[k]++
		}
	}
}

// authResult is the decision on one AUTH.
type authResult struct {
	code    int
	comment string
	extra   []msrp.Header
	sid     string // the session created (200)
	failed  bool   // a failed check of credentials: counts towards max_auth_failures
}

// authenticate decides an AUTH and, on success, creates its session.
func (c *conn) authenticate(q *request) authResult {
	r := c.r
	f := q.f
	first, _ := msrp.SplitPath(q.fromPath)
	prevHop, err := msrp.ParseURI(string(first))
	if err != nil {
		return authResult{code: 400, comment: "Bad From-Path"}
	}
	authz := f.Get(msrp.HdrAuthorization)
	if authz == nil {
		return c.challenge(false)
	}
	// RFC 4976 §9.1: H(A2) uses the rightmost To-Path URI.
	toAll := f.Get(msrp.HdrToPath)
	rightmost := toAll
	for rest := toAll; len(rest) > 0; {
		rightmost, rest = msrp.SplitPath(rest)
	}
	res, err := r.auth.VerifyWithURI(authz, "AUTH", string(rightmost))
	if err != nil {
		if errors.Is(err, auth.ErrMalformed) {
			r.stats.authFailed.Add(1)
			c.logAuthFailed(err)
			return authResult{code: 400, comment: "Bad credentials", failed: true}
		}
		// A stale nonce, or a user whose HA1 is for another offered
		// algorithm than the one answered, gets a fresh challenge and is
		// no failure of the client's (RFC 4976 §6.3; RFC 7616 §3.3 stale).
		a := c.challengeFor(err)
		a.failed = auth.CountsAsFailure(err)
		if a.failed {
			r.stats.authFailed.Add(1)
			c.logAuthFailed(err)
		} else {
			r.plog.Debug("auth_challenged", "AUTH challenged again", slog.Uint64("conn", c.info.ID), slog.String("error", err.Error()))
		}
		return a
	}
	expires := r.authCfg.Expires
	if v := f.Get(msrp.HdrExpires); v != nil {
		e, err := msrp.ParseExpires(v)
		if err != nil {
			return authResult{code: 400, comment: "Bad Expires"}
		}
		switch {
		case int64(e) < int64(r.authCfg.MinExpires):
			return authResult{code: 423, comment: "Interval Out-of-Bounds", extra: []msrp.Header{{Name: []byte(msrp.HdrMinExpires),
				Value: strconv.AppendInt(nil, int64(r.authCfg.MinExpires), 10)}}}
		case int64(e) > int64(r.authCfg.MaxExpires):
			return authResult{code: 423, comment: "Interval Out-of-Bounds", extra: []msrp.Header{{Name: []byte(msrp.HdrMaxExpires),
				Value: strconv.AppendInt(nil, int64(r.authCfg.MaxExpires), 10)}}}
		}
		expires = int(e)
	}
	sid := string(msrp.AppendTransactID(nil)) // RFC 4976 §6.3: ≥ 64 random bits; this has 95
	uri := c.uri
	uri.SessionID = sid
	uri.User = ""
	now := time.Now()
	s := &session{id: sid, user: res.User, conn: c, prevHop: prevHop, created: now,
		expires: now.Add(time.Duration(expires) * time.Second)}
	if err := r.sessions.add(s); err != nil {
		limit := limitMaxSessions
		if errors.Is(err, errTooManySessionsForUser) {
			limit = limitMaxSessionsPerUser
		}
		r.logLimit(c, limit, slog.String("user", res.User))
		return authResult{code: 403, comment: "Too many sessions"}
	}
	c.requestOK.Store(true)
	c.authFails.Store(0)
	r.stats.authOK.Add(1)
	r.plog.Info("auth_ok", "AUTH ok", slog.Uint64("conn", c.info.ID), slog.String("user", res.User), slog.String("session", sid),
		slog.Int("expires", expires), slog.String("event", "auth_ok"))
	return authResult{code: 200, comment: "OK", sid: sid, extra: []msrp.Header{
		{Name: []byte(msrp.HdrUsePath), Value: usePath(q.fromPath, uri)},
		{Name: []byte(msrp.HdrExpires), Value: strconv.AppendInt(nil, int64(expires), 10)},
		{Name: []byte(msrp.HdrAuthenticationInf), Value: res.AuthInfo},
	}}
}

// challenge is the 401 with one WWW-Authenticate per offered algorithm.
func (c *conn) challenge(stale bool) authResult {
	return c.challenges(c.r.auth.Challenges(stale))
}

// challengeFor is the 401 after a failed check: relay/auth chooses the
// offer (a fresh one after a stale nonce, the user's own algorithms after
// an answer with an algorithm the user has no HA1 for).
func (c *conn) challengeFor(err error) authResult {
	return c.challenges(c.r.auth.ChallengesAfter(err))
}

func (c *conn) challenges(ch [][]byte) authResult {
	hs := make([]msrp.Header, len(ch))
	for i, v := range ch {
		hs[i] = msrp.Header{Name: []byte(msrp.HdrWWWAuthenticate), Value: v}
	}
	return authResult{code: 401, comment: "Unauthorized", extra: hs}
}

// usePath is the Use-Path of a 200 to an AUTH with From-Path fromPath: the
// relays the AUTH came through, in the order the client puts them in a
// To-Path (From-Path without its last URI, the client's, reversed), then
// our new session URI. RFC 4976 §4.2: "The URIs in the Use-Path header are
// in the same order that the authenticating client uses them in a To-Path
// header"; §5.1: the client forms its To-Path from "the list of URIs in the
// Use-Path header after the outermost authentication", and the example's
// extra relay answers an AUTH with From-Path "intra/jui787s2f alice" with
// Use-Path "intra/jui787s2f extra/mywdEe1233" ("Use-Path returned by C:
// B C"). An AUTH straight from a client gets our URI alone.
func usePath(fromPath []byte, own msrp.URI) []byte {
	var hops [][]byte
	for rest := fromPath; len(rest) > 0; {
		var u []byte
		u, rest = msrp.SplitPath(rest)
		hops = append(hops, u)
	}
	var b []byte
	for i := len(hops) - 2; i >= 0; i-- {
		b = append(b, hops[i]...)
		b = append(b, ' ')
	}
	return own.Append(b)
}
