package relay

import (
	"bytes"
	"errors"
	"log/slog"
	"unsafe"

	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// Routing: where a frame read from a connection goes (RFC 4976 §6).
// Requests are checked and handed to forward (forward.go), to AUTH
// (authreq.go) or answered (reply.go); responses end their transaction.

// handleFrame handles one frame read from c. It returns an error only when
// reading the frame's body from c failed; the read loop then closes c.
func (c *conn) handleFrame(f *msrp.Frame) error {
	if f.IsRequest() {
		return c.handleRequest(f)
	}
	return c.handleResponse(f)
}

// request is what the relay keeps of a request while routing it.
type request struct {
	f        *msrp.Frame
	method   string // only for the methods the relay knows; "" otherwise
	isSEND   bool
	isREPORT bool
	mode     msrp.ReportMode // whether responses may be sent (Failure-Report)
	top      []byte          // first To-Path URI as received: our URI as the sender named it
	rest     []byte          // the To-Path after it
	fromPath []byte
	// The Byte-Range as parsed (SEND; RFC 4975 §7.1.1), when present:
	// what the relay's own REPORTs carry, never the text as received.
	br    msrp.ByteRange
	hasBR bool
	// The relay sessions on the sender's and on the receiver's side
	// (event.FrameInfo): the tables' strings, so they outlive the frame.
	from, to string
	// The same sessions, for their counters; nil where from/to is "".
	fromS, toS *session
}

// canRespond reports whether a response with code may be sent
// (RFC 4975 §7.2: "no" never, "partial" only negative ones; never to REPORT).
func (q *request) canRespond(code int) bool {
	switch q.mode {
	case msrp.ReportYes:
		return true
	case msrp.ReportPartial:
		return code != 200
	}
	return false
}

func (c *conn) handleRequest(f *msrp.Frame) error {
	r := c.r
	now := c.inStart // no clock read per frame: sessions expire in whole seconds
	c.beginIn(f)
	q := request{f: f, fromPath: f.Get(msrp.HdrFromPath), mode: msrp.ReportYes}
	switch string(f.Method) {
	case "SEND":
		q.isSEND, q.method = true, "SEND"
	case "REPORT":
		q.isREPORT, q.method, q.mode = true, "REPORT", msrp.ReportNo // never answered (RFC 4975 §7.1.2)
	case "AUTH":
		q.method = "AUTH"
	}
	if len(q.fromPath) == 0 {
		// No From-Path: no response can be addressed. Close, traced.
		if err := c.finishIn(f, "", ""); err != nil {
			return err
		}
		c.close(event.CloseProtocol, errors.New("request without From-Path"))
		return nil
	}
	if r.refusesNew(c.inStart) {
		// Graceful shutdown: frames in flight finish, new requests are not
		// relayed; a SEND gets its 200 and a failure REPORT (RFC 4976 §6.4.1).
		c.frameDone()
		return c.nextHopFailed(&q, 408, "Relay shutting down")
	}
	if q.isSEND {
		m, err := msrp.ParseFailureReport(f.Get(msrp.HdrFailureReport))
		if err != nil {
			return c.reject(&q, 400, "Bad Failure-Report")
		}
		q.mode = m
		if len(f.Get(msrp.HdrMessageID)) == 0 {
			return c.reject(&q, 400, "Message-ID missing")
		}
	}
	if (q.isSEND || q.isREPORT) && f.Has(msrp.HdrByteRange) {
		// RFC 4975 §9 ABNF: a malformed Byte-Range gets 400 (a REPORT is
		// dropped, never answered): the relay passes on and reports only
		// values it would accept itself.
		br, err := msrp.ParseByteRange(f.Get(msrp.HdrByteRange))
		if err != nil {
			return c.reject(&q, 400, "Bad Byte-Range")
		}
		q.br, q.hasBR = br, true
	}
	toPath := f.Get(msrp.HdrToPath)
	if len(toPath) == 0 {
		return c.reject(&q, 400, "To-Path missing")
	}
	q.top, q.rest = msrp.SplitPath(toPath)
	// Views of the frame's buffer: these URIs must not outlive this call.
	topURI, err := c.uris.top.parse(q.top)
	if err != nil {
		return c.reject(&q, 400, "Bad To-Path")
	}
	if !r.isOwn(topURI) {
		// RFC 4976 §6.2: not addressed to this relay: drop the connection.
		if err := c.reject(&q, 403, "Not addressed to this relay"); err != nil {
			return err
		}
		c.closeAfterFlush(event.CloseNotForUs, errors.New("request not addressed to this relay: "+string(q.top)), c)
		return nil
	}
	if q.method == "AUTH" && len(q.rest) == 0 {
		return c.handleAuth(&q)
	}

	var sess *session
	if topURI.SessionID != "" {
		if sess = r.sessions.get(topURI.SessionID, now); sess == nil {
			return c.reject(&q, 481, "Session does not exist")
		}
	} else if q.method != "AUTH" || !r.sessions.hasSessionOn(c, now) {
		// Only an authenticated client may AUTH onward through us with our
		// session-less URI (RFC 4976 §5.1: To-Path "R1;tcp R2;tcp").
		return c.reject(&q, 403, "To-Path names no session of this relay")
	}
	if len(q.rest) == 0 {
		return c.reject(&q, 400, "No next hop in To-Path")
	}
	next, after := msrp.SplitPath(q.rest)
	nextURI, err := c.uris.next.parse(next)
	if err != nil {
		return c.reject(&q, 400, "Bad To-Path")
	}

	// RFC 4976 §6.4: the request comes from the client that owns the
	// session, or goes to the next hop back towards it.
	var dst *conn
	toOut := q.rest
	prefix := [2][]byte{q.top}
	nPrefix := 1
	switch {
	case sess == nil: // AUTH onward from an authenticated client
	case sess.conn == c: // outwards, from the session's owner
		q.from, q.fromS = sess.id, sess
	case sameHop(nextURI, sess.prevHop):
		dst = sess.conn // inwards, over the client's own connection
		q.to, q.toS = sess.id, sess
	default:
		return c.reject(&q, 403, "Session belongs to another client")
	}
	if dst == nil && r.isOwn(nextURI) {
		// Both sessions are ours: hand over without a network hop, doing
		// both hops' path rewriting.
		s2 := r.sessions.get(nextURI.SessionID, now)
		if s2 == nil {
			return c.reject(&q, 481, "Session does not exist")
		}
		third, _ := msrp.SplitPath(after)
		thirdURI, err := c.uris.third.parse(third)
		if err != nil || !sameHop(thirdURI, s2.prevHop) {
			return c.reject(&q, 403, "Session belongs to another client")
		}
		dst, toOut = s2.conn, after
		prefix = [2][]byte{next, q.top}
		nPrefix = 2
		q.to, q.toS = s2.id, s2
	}
	if dst == nil {
		dst, err = r.outbound(nextURI)
		if err != nil {
			r.plog.Info("next_hop_unreachable", "next hop unreachable", slog.Uint64("conn", c.info.ID), slog.String("next", string(next)),
				slog.String("error", err.Error()), slog.String("event", "forward_failed"))
			return c.nextHopFailed(&q, 408, "Next hop unreachable")
		}
	}
	return c.forward(&q, dst, toOut, prefix[:nPrefix])
}

// sameHop compares the next To-Path URI with a session's previous hop. A
// previous hop without session-id is a relay that AUTHed onward with its
// bare URI: any URI of that relay leads back (RFC 4976 §6.4).
func sameHop(next, prev msrp.URI) bool {
	if prev.SessionID == "" {
		return next.SameAuthority(prev)
	}
	return next.Equal(prev)
}

// reject answers a request with an error response (when its Failure-Report
// allows) after reading its body; every rejection is counted and traced.
func (c *conn) reject(q *request, code int, comment string) error {
	if err := c.finishIn(q.f, q.from, q.to); err != nil {
		return err
	}
	c.r.stats.rejected.Add(1)
	c.r.plog.Debug("rejected", "request rejected", slog.Uint64("conn", c.info.ID), slog.String("method", string(q.f.Method)),
		slog.Int("code", code), slog.String("comment", comment), slog.String("event", "rejected"))
	if q.canRespond(code) {
		c.respond(q, code, comment)
	}
	return nil
}

// nextHopFailed handles a request whose next hop cannot be reached: after
// reading its body, a SEND gets its hop-by-hop 200 (the chunk was received)
// and a failure REPORT (RFC 4976 §6.4.1); other requests that expect a
// response get an error response; a REPORT is dropped (counted).
func (c *conn) nextHopFailed(q *request, code int, comment string) error {
	if err := c.finishIn(q.f, q.from, q.to); err != nil {
		return err
	}
	n := q.f.Body().Len()
	c.r.stats.forwardFailed.Add(1)
	switch {
	case q.isREPORT:
	case q.isSEND:
		if q.mode == msrp.ReportYes {
			c.respond(q, 200, "OK")
		}
		if q.mode != msrp.ReportNo {
			c.r.sendReport(&txn{src: c, fromSession: q.from, toSession: q.to, ourURI: string(q.top), fromPath: string(q.fromPath),
				messageID: string(q.f.Get(msrp.HdrMessageID)), byteRange: q.br, hasRange: q.hasBR,
				bodyLen: n, flag: q.f.Flag()}, code, comment, c)
		}
	default:
		c.respond(q, code, comment)
	}
	return nil
}

// handleResponse matches a response to a forwarded transaction (RFC 4976
// §6.4.3). A SEND's response ends it here (a failure becomes a REPORT);
// any other response travels on back along its To-Path.
func (c *conn) handleResponse(f *msrp.Frame) error {
	r := c.r
	c.beginIn(f)
	x := r.txns.take(f.TransactID, c)
	defer x.release() // the table's reference, handed over by take (nil: none)
	var from, to string
	if x != nil {
		from, to = x.fromSession, x.toSession
		c.inPaired, c.inAnswers = x.sent, knownMethod(x.method) // x is this goroutine's since take
	}
	if err := c.finishIn(f, from, to); err != nil {
		return err
	}
	if x == nil {
		r.stats.unmatchedResponses.Add(1)
		r.plog.Debug("unmatched_response", "response matches no transaction", slog.Uint64("conn", c.info.ID),
			slog.String("tid", string(f.TransactID)), slog.String("event", "unmatched_response"))
		return nil
	}
	// Every leading To-Path URI that is ours goes (RFC 4976 §6.4.3): one
	// per hop through us, two when the request passed between two of our
	// sessions without a network hop (route.go, "Both sessions are ours").
	var own [maxOwnHops][]byte
	nOwn := 0
	rest := f.Get(msrp.HdrToPath)
	for nOwn < maxOwnHops && len(rest) > 0 {
		top, after := msrp.SplitPath(rest)
		u, err := c.uris.resp[nOwn].parse(top)
		if err != nil || !r.isOwn(u) {
			break
		}
		own[nOwn], rest = top, after
		nOwn++
	}
	if nOwn == 0 {
		top, _ := msrp.SplitPath(f.Get(msrp.HdrToPath))
		r.stats.unmatchedResponses.Add(1)
		r.plog.Info("response_not_ours", "response not addressed to this relay dropped", slog.Uint64("conn", c.info.ID),
			slog.String("to", string(top)), slog.String("event", "unmatched_response"))
		return nil
	}
	if x.method == "SEND" {
		if f.StatusCode != 200 && x.report != msrp.ReportNo {
			r.sendReport(x, f.StatusCode, string(f.Comment), c)
		}
		return nil
	}
	if len(rest) == 0 || x.src.isClosed() {
		return nil // RFC 4976 §6.4.3: nowhere to go back to: discarded
	}
	r.relayResponse(x, f, own[:nOwn], rest, c)
	return nil
}

// maxOwnHops bounds the leading To-Path URIs of a response taken as ours:
// a request passes through this relay as one hop or, between two of its
// sessions, as two.
const maxOwnHops = 2

// uriCaches are a read loop's parsed To-Path URIs: a connection's frames
// mostly name the same URIs (a client's one session, the peer's), so the
// URI of the last frame is reused when the bytes are the same.
type uriCaches struct {
	top, next, third uriCache             // a request's first three URIs
	resp             [maxOwnHops]uriCache // a response's leading URIs
}

// uriCache holds the last URI parsed from its bytes and a copy of them. Its
// URI's strings view that copy, which the next miss overwrites: as a URI
// parsed from a frame's buffer, it must not outlive the frame's handling
// (nothing but the read loop's next frame changes it).
type uriCache struct {
	raw []byte
	u   msrp.URI
	ok  bool
}

// parse returns the URI of b, parsed or, when b is the last bytes parsed,
// from the cache. A miss allocates only while the copy's capacity grows.
func (uc *uriCache) parse(b []byte) (msrp.URI, error) {
	if uc.ok && bytes.Equal(b, uc.raw) {
		return uc.u, nil
	}
	uc.raw = append(uc.raw[:0], b...)
	u, err := msrp.ParseURI(bstr(uc.raw))
	uc.u, uc.ok = u, err == nil
	return u, err
}

// bstr views b as a string without copying, for values that do not
// outlive the frame b belongs to.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
