package relay

import (
	"errors"
	"github.com/msrpscope/msrpscope/tracer/event"
	"io"
	"log/slog"
	"strconv"
	"time"
	"unsafe"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

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
	chat     string // trace correlation: the session(s) of this relay the request belongs to
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
	now := time.Now()
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
		if err := c.finishIn(f, ""); err != nil {
			return err
		}
		c.close(event.CloseProtocol, errors.New("request without From-Path"))
		return nil
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
	toPath := f.Get(msrp.HdrToPath)
	if len(toPath) == 0 {
		return c.reject(&q, 400, "To-Path missing")
	}
	q.top, q.rest = msrp.SplitPath(toPath)
	// Views of the frame's buffer: these URIs must not outlive this call.
	topURI, err := msrp.ParseURI(bstr(q.top))
	if err != nil {
		return c.reject(&q, 400, "Bad To-Path")
	}
	if !r.isOwn(topURI) {
		// RFC 4976 §6.2: not addressed to this relay: drop the connection.
		if err := c.reject(&q, 403, "Not addressed to this relay"); err != nil {
			return err
		}
		c.closeAfterFlush(event.CloseNotForUs, errors.New("request not addressed to this relay: "+string(q.top)))
		return nil
	}
	if q.method == "AUTH" && len(q.rest) == 0 {
		return c.handleAuth(&q, topURI)
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
	nextURI, err := msrp.ParseURI(bstr(next))
	if err != nil {
		return c.reject(&q, 400, "Bad To-Path")
	}

	// RFC 4976 §6.4: the request comes from the client that owns the
	// session, or goes to the next hop back towards it.
	if sess != nil {
		q.chat = sess.id // the table's copy: q.chat outlives the frame
	}
	var dst *conn
	toOut := q.rest
	prefix := [2][]byte{q.top}
	nPrefix := 1
	switch {
	case sess == nil || sess.conn == c: // outwards
	case sameHop(nextURI, sess.prevHop):
		dst = sess.conn // inwards, over the client's own connection
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
		thirdURI, err := msrp.ParseURI(bstr(third))
		if err != nil || !sameHop(thirdURI, s2.prevHop) {
			return c.reject(&q, 403, "Session belongs to another client")
		}
		dst, toOut = s2.conn, after
		prefix = [2][]byte{next, q.top}
		nPrefix = 2
		if sess != nil {
			q.chat = sess.chatWith(s2)
		} else {
			q.chat = s2.id
		}
	}
	if dst == nil {
		dst, err = r.outbound(nextURI)
		if err != nil {
			r.log.Info("next hop unreachable", slog.String("next", string(next)), slog.String("error", err.Error()))
			return c.nextHopFailed(&q, q.chat, 408, "Next hop unreachable")
		}
	}
	c.requestOK.Store(true)
	return c.forward(&q, dst, toOut, prefix[:nPrefix], q.chat)
}

// chatKey names a chat between two sessions of this relay the same way
// whichever side sends, so both directions and both legs of one chat share
// one trace correlation id.
func chatKey(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "~" + b
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
	if err := c.finishIn(q.f, ""); err != nil {
		return err
	}
	c.r.stats.rejected.Add(1)
	c.r.log.Debug("request rejected", slog.Uint64("conn", c.info.ID), slog.String("method", string(q.f.Method)),
		slog.Int("code", code), slog.String("comment", comment))
	if q.canRespond(code) {
		c.respond(q, code, comment)
	}
	return nil
}

// nextHopFailed handles a request whose next hop cannot be reached: after
// reading its body, a SEND gets its hop-by-hop 200 (the chunk was received)
// and a failure REPORT (RFC 4976 §6.4.1); other requests that expect a
// response get an error response; a REPORT is dropped (counted).
func (c *conn) nextHopFailed(q *request, sessionID string, code int, comment string) error {
	if err := c.finishIn(q.f, sessionID); err != nil {
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
			c.r.sendReport(&txn{src: c, sessionID: sessionID, ourURI: string(q.top), fromPath: string(q.fromPath),
				messageID: string(q.f.Get(msrp.HdrMessageID)), byteRange: string(q.f.Get(msrp.HdrByteRange)),
				bodyLen: n, flag: q.f.Flag()}, code, comment)
		}
	default:
		c.respond(q, code, comment)
	}
	return nil
}

// respond queues a response to q on c (RFC 4975 §7.2): To-Path is the first
// From-Path URI for a SEND, the whole From-Path otherwise; From-Path is our
// URI as the sender named it.
func (c *conn) respond(q *request, code int, comment string, extra ...msrp.Header) {
	to := q.fromPath
	if q.isSEND {
		to, _ = msrp.SplitPath(q.fromPath)
	}
	of := newOutFrame()
	of.status = code
	of.sessionID = q.chat
	b := of.buf
	b = append(b, "MSRP "...)
	b = append(b, q.f.TransactID...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(code), 10)
	if comment != "" {
		b = append(b, ' ')
		b = append(b, comment...)
	}
	b = append(b, "\r\n"...)
	b = appendHeader(b, msrp.HdrToPath, to)
	b = appendHeader(b, msrp.HdrFromPath, q.top)
	for _, h := range extra {
		b = appendHeader(b, string(h.Name), h.Value)
	}
	b = appendEndLine(b, q.f.TransactID, msrp.FlagEnd)
	of.buf = b
	c.enqueue(of)
}

func appendHeader(b []byte, name string, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

func appendEndLine(b, tid []byte, flag byte) []byte {
	b = append(b, "-------"...)
	b = append(b, tid...)
	return append(b, flag, '\r', '\n')
}

// sendReport queues a REPORT about a forwarded SEND to the connection it
// came from (RFC 4976 §6.4.1, RFC 4975 §7.1.2): To-Path is the SEND's
// From-Path, From-Path our URI, with its Message-ID and Byte-Range (made up
// from what was received when the SEND had none) and Status 000 code.
func (r *Relay) sendReport(x *txn, code int, comment string) {
	if x.src.isClosed() {
		r.stats.reportsDropped.Add(1)
		return
	}
	of := newOutFrame()
	tid := msrp.AppendTransactID(nil)
	of.method, of.messageID, of.sessionID = "REPORT", x.messageID, x.sessionID
	b := of.buf
	b = append(b, "MSRP "...)
	b = append(b, tid...)
	b = append(b, " REPORT\r\n"...)
	b = appendHeader(b, msrp.HdrToPath, []byte(x.fromPath))
	b = appendHeader(b, msrp.HdrFromPath, []byte(x.ourURI))
	b = appendHeader(b, msrp.HdrMessageID, []byte(x.messageID))
	br := []byte(x.byteRange)
	if len(br) == 0 {
		// RFC 4975 §7.1.1: a SEND without Byte-Range carries the whole
		// message in one chunk; report what we saw of it.
		end := max(x.bodyLen, 0)
		total := int64(msrp.Unknown)
		if x.flag == msrp.FlagEnd {
			total = end
		}
		br = msrp.ByteRange{Start: 1, End: end, Total: total}.Append(nil)
	}
	b = appendHeader(b, msrp.HdrByteRange, br)
	b = append(b, msrp.HdrStatus...)
	b = append(b, ": "...)
	b = msrp.Status{Namespace: 0, Code: code, Reason: comment}.Append(b)
	b = append(b, "\r\n"...)
	b = appendEndLine(b, tid, msrp.FlagEnd)
	of.buf = b
	r.stats.reportsSent.Add(1)
	x.src.enqueue(of)
}

// forward streams q's frame to dst with a new transact-id: our URI moves
// from the front of To-Path to the front of From-Path (RFC 4976 §6.4), every
// other header field and the body pass unchanged, and the end-line keeps
// its flag. A body that breaks off is ended with "#" (RFC 4975 §7.1).
func (c *conn) forward(q *request, dst *conn, toOut []byte, prefix [][]byte, sessionID string) error {
	r := c.r
	f := q.f
	obs := r.tracing()
	tid := msrp.AppendTransactID(c.tidBuf[:0])
	var x *txn
	if !q.isREPORT && !(q.isSEND && q.mode == msrp.ReportNo) {
		x = newTxn(tid, f, q)
		x.dst, x.src, x.sessionID = dst, c, sessionID
		r.txns.register(x) // before the first byte: a next hop may answer early
	}

	dst.wmu.Lock()
	sent := time.Now() // the frame's time is when it starts out
	var writeErr, bodyErr error
	if dst.isClosed() {
		writeErr = errors.New("next hop connection closed")
	} else {
		dst.cw.start(obs)
		w := dst.mw
		_ = w.StartRequest(tid, bstr(f.Method))
		for _, h := range f.Headers {
			w.RawHeaders(h.Name)
			w.RawHeaders(colonSP)
			switch {
			case equalFoldName(h.Name, msrp.HdrToPath):
				w.RawHeaders(toOut)
			case equalFoldName(h.Name, msrp.HdrFromPath):
				for _, p := range prefix {
					w.RawHeaders(p)
					w.RawHeaders(space)
				}
				w.RawHeaders(h.Value)
			default:
				w.RawHeaders(h.Value)
			}
			w.RawHeaders(crlf)
		}
		if f.HasBody() {
			bw := w.Body()
			body := f.Body()
			for {
				p, err := body.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					bodyErr = err
					break
				}
				c.capIn(p)
				if writeErr == nil {
					_, writeErr = bw.Write(p)
				}
			}
		}
	}
	flag := f.Flag()
	if bodyErr != nil {
		flag = msrp.FlagAbort
	}
	// The source side is complete (or broken): trace it before the copy.
	c.endIn(f, sessionID, bodyErr == nil)
	if writeErr == nil || errors.Is(writeErr, msrp.ErrEndLineInBody) {
		if errors.Is(writeErr, msrp.ErrEndLineInBody) {
			flag = msrp.FlagAbort
		}
		if err := dst.mw.End(flag); err != nil && writeErr == nil {
			writeErr = err
		}
	}
	if obs && writeErr == nil {
		dst.outFI = event.FrameInfo{Dir: event.DirOut, TransactID: tid, Method: f.Method, MessageID: f.Get(msrp.HdrMessageID),
			ContentType: f.Get(msrp.HdrContentType), SessionID: sessionID, Flag: flag, Size: dst.cw.n, Wire: dst.cw.buf}
		dst.outEv = event.Event{Kind: event.FrameOut, Time: sent, Conn: dst.info, Frame: &dst.outFI}
		r.obs.Observe(&dst.outEv)
	}
	dst.cw.start(false)
	dst.wmu.Unlock()

	if writeErr != nil && !errors.Is(writeErr, msrp.ErrEndLineInBody) {
		dst.close(writeCloseReason(writeErr), writeErr)
	}
	if bodyErr != nil {
		return bodyErr // the source broke off; its read loop closes it
	}
	r.stats.forwarded.Add(1)
	if writeErr != nil {
		r.stats.forwardFailed.Add(1)
		r.log.Info("forwarding failed", slog.Uint64("conn", c.info.ID), slog.Uint64("next_conn", dst.info.ID),
			slog.String("error", writeErr.Error()))
		if x != nil && r.txns.cancel(x) {
			x.bodyLen, x.flag = f.Body().Len(), flag
			r.failTxn(x, 408, "Forwarding failed")
		}
		if q.isSEND && q.mode == msrp.ReportYes {
			c.respond(q, 200, "OK")
		}
		return nil
	}
	if x != nil {
		x.bodyLen, x.flag = f.Body().Len(), flag
		r.txns.arm(x, time.Now().Add(r.lim.TransactionTimeout))
	}
	// Hop-by-hop success for a SEND once the chunk is in (RFC 4976 §6.4.1).
	if q.isSEND && q.mode == msrp.ReportYes {
		c.respond(q, 200, "OK")
	}
	return nil
}

var (
	colonSP = []byte(": ")
	space   = []byte(" ")
	crlf    = []byte("\r\n")
)

func equalFoldName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i]|0x20, s[i]|0x20 // ASCII letters only differ in bit 5; '-' stays '-'|0x20 == '-'
		if x != y {
			return false
		}
	}
	return true
}

// failTxn handles a transaction that will get no (good) response: a SEND
// gets a failure REPORT when its Failure-Report asks for one; any other
// request gets an error response with its own transact-id.
func (r *Relay) failTxn(x *txn, code int, comment string) {
	if x.method == "SEND" {
		if x.report != msrp.ReportNo {
			r.sendReport(x, code, comment)
		}
		return
	}
	if x.src.isClosed() {
		return
	}
	of := newOutFrame()
	of.status, of.sessionID = code, x.sessionID
	b := of.buf
	b = append(b, "MSRP "...)
	b = append(b, x.srcTID...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, comment...)
	b = append(b, "\r\n"...)
	b = appendHeader(b, msrp.HdrToPath, []byte(x.fromPath))
	b = appendHeader(b, msrp.HdrFromPath, []byte(x.ourURI))
	b = appendEndLine(b, []byte(x.srcTID), msrp.FlagEnd)
	of.buf = b
	x.src.enqueue(of)
}

// handleResponse matches a response to a forwarded transaction (RFC 4976
// §6.4.3). A SEND's response ends it here (a failure becomes a REPORT);
// any other response travels on back along its To-Path.
func (c *conn) handleResponse(f *msrp.Frame) error {
	r := c.r
	c.beginIn(f)
	x := r.txns.take(f.TransactID, c)
	sessionID := ""
	if x != nil {
		sessionID = x.sessionID
	}
	if err := c.finishIn(f, sessionID); err != nil {
		return err
	}
	if x == nil {
		r.stats.unmatchedResponses.Add(1)
		r.log.Debug("response matches no transaction", slog.Uint64("conn", c.info.ID), slog.String("tid", string(f.TransactID)))
		return nil
	}
	top, rest := msrp.SplitPath(f.Get(msrp.HdrToPath))
	topURI, err := msrp.ParseURI(bstr(top))
	if err != nil || !r.isOwn(topURI) {
		r.stats.unmatchedResponses.Add(1)
		r.log.Info("response not addressed to this relay dropped", slog.Uint64("conn", c.info.ID), slog.String("to", string(top)))
		return nil
	}
	if x.method == "SEND" {
		if f.StatusCode != 200 && x.report != msrp.ReportNo {
			r.sendReport(x, f.StatusCode, string(f.Comment))
		}
		return nil
	}
	if len(rest) == 0 || x.src.isClosed() {
		return nil // RFC 4976 §6.4.3: nowhere to go back to: discarded
	}
	of := newOutFrame()
	of.status, of.sessionID = f.StatusCode, x.sessionID
	b := of.buf
	b = append(b, "MSRP "...)
	b = append(b, x.srcTID...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(f.StatusCode), 10)
	if len(f.Comment) > 0 {
		b = append(b, ' ')
		b = append(b, f.Comment...)
	}
	b = append(b, "\r\n"...)
	for _, h := range f.Headers {
		switch {
		case equalFoldName(h.Name, msrp.HdrToPath):
			b = appendHeaderB(b, h.Name, rest)
		case equalFoldName(h.Name, msrp.HdrFromPath):
			b = append(b, h.Name...)
			b = append(b, ": "...)
			b = append(b, top...)
			b = append(b, ' ')
			b = append(b, h.Value...)
			b = append(b, "\r\n"...)
		default:
			b = appendHeaderB(b, h.Name, h.Value)
		}
	}
	b = appendEndLine(b, []byte(x.srcTID), msrp.FlagEnd)
	of.buf = b
	x.src.enqueue(of)
	return nil
}

// bstr views b as a string without copying, for values that do not
// outlive the frame b belongs to.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func appendHeaderB(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// handleAuth authenticates an AUTH addressed to this relay alone
// (RFC 4976 §5.1, §6.3) and on success creates a session.
func (c *conn) handleAuth(q *request, topURI msrp.URI) error {
	r := c.r
	f := q.f
	if err := c.finishIn(f, ""); err != nil {
		return err
	}
	first, _ := msrp.SplitPath(q.fromPath)
	prevHop, err := msrp.ParseURI(string(first))
	if err != nil {
		c.respond(q, 400, "Bad From-Path")
		return nil
	}
	authz := f.Get(msrp.HdrAuthorization)
	if authz == nil {
		c.challenge(q, false)
		return nil
	}
	// RFC 4976 §9.1: H(A2) uses the rightmost To-Path URI.
	toAll := f.Get(msrp.HdrToPath)
	rightmost := toAll
	for rest := toAll; len(rest) > 0; {
		rightmost, rest = msrp.SplitPath(rest)
	}
	res, err := r.auth.VerifyWithURI(authz, "AUTH", string(rightmost))
	if err != nil {
		r.stats.authFailed.Add(1)
		r.log.Info("AUTH failed", slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()),
			slog.String("error", err.Error()))
		switch {
		case errors.Is(err, auth.ErrMalformed):
			c.respond(q, 400, "Bad credentials")
		case errors.Is(err, auth.ErrStale):
			c.challenge(q, true)
			return nil // not a failure of the client's (RFC 4976 §6.3)
		default:
			c.challenge(q, false)
		}
		if int(c.authFails.Add(1)) >= r.lim.MaxAuthFailures {
			c.closeAfterFlush(event.CloseLimit, errors.New("too many failed AUTH requests"))
		}
		return nil
	}
	expires := r.authCfg.Expires
	if v := f.Get(msrp.HdrExpires); v != nil {
		e, err := msrp.ParseExpires(v)
		if err != nil {
			c.respond(q, 400, "Bad Expires")
			return nil
		}
		switch {
		case int64(e) < int64(r.authCfg.MinExpires):
			c.respond(q, 423, "Interval Out-of-Bounds",
				msrp.Header{Name: []byte(msrp.HdrMinExpires), Value: strconv.AppendInt(nil, int64(r.authCfg.MinExpires), 10)})
			return nil
		case int64(e) > int64(r.authCfg.MaxExpires):
			c.respond(q, 423, "Interval Out-of-Bounds",
				msrp.Header{Name: []byte(msrp.HdrMaxExpires), Value: strconv.AppendInt(nil, int64(r.authCfg.MaxExpires), 10)})
			return nil
		}
		expires = int(e)
	}
	sid := string(msrp.AppendTransactID(nil)) // RFC 4976 §6.3: ≥ 64 random bits; this has 95
	uri := c.uri
	uri.SessionID = sid
	uri.User = ""
	s := &session{id: sid, user: res.User, conn: c, uri: uri, prevHop: prevHop,
		expires: time.Now().Add(time.Duration(expires) * time.Second)}
	if err := r.sessions.add(s); err != nil {
		c.respond(q, 403, "Too many sessions")
		return nil
	}
	c.requestOK.Store(true)
	c.authFails.Store(0)
	r.stats.authOK.Add(1)
	r.log.Info("AUTH ok", slog.Uint64("conn", c.info.ID), slog.String("user", res.User), slog.String("session", sid),
		slog.Int("expires", expires))
	c.respond(q, 200, "OK",
		msrp.Header{Name: []byte(msrp.HdrUsePath), Value: uri.Append(nil)},
		msrp.Header{Name: []byte(msrp.HdrExpires), Value: strconv.AppendInt(nil, int64(expires), 10)},
		msrp.Header{Name: []byte(msrp.HdrAuthenticationInf), Value: res.AuthInfo},
	)
	return nil
}

// challenge answers 401 with one WWW-Authenticate per offered algorithm.
func (c *conn) challenge(q *request, stale bool) {
	ch := c.r.auth.Challenges(stale)
	hs := make([]msrp.Header, len(ch))
	for i, v := range ch {
		hs[i] = msrp.Header{Name: []byte(msrp.HdrWWWAuthenticate), Value: v}
	}
	c.respond(q, 401, "Unauthorized", hs...)
}

// closeAfterFlush closes c once what is queued for it has been written.
func (c *conn) closeAfterFlush(reason event.CloseReason, err error) {
	of := newOutFrame()
	of.closeReason, of.closeErr = reason, err
	c.enqueue(of)
}
