package relay

import (
	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// The small frames the relay makes itself (responses, REPORTs, relayed
// responses), built with relay/msrp's builders into a pooled outFrame and
// queued for the destination's writer goroutine (conn.go).

// respond queues a response to q on c (RFC 4975 §7.2): To-Path is the first
// From-Path URI for a SEND, the whole From-Path otherwise; From-Path is our
// URI as the sender named it.
func (c *conn) respond(q *request, code int, comment string, extra ...msrp.Header) {
	to := q.fromPath
	if q.isSEND {
		to, _ = msrp.SplitPath(q.fromPath)
	}
	of := newOutFrame()
	of.status, of.answers, of.fromSession, of.toSession = code, q.method, q.from, q.to // q.method: a constant or ""
	of.buf = msrp.AppendResponse(of.buf, q.f.TransactID, code, comment, to, q.top, extra...)
	c.enqueue(of, c)
}

// sendReport queues a REPORT about a forwarded SEND to the connection it
// came from (RFC 4976 §6.4.1, RFC 4975 §7.1.2): To-Path is the SEND's
// From-Path, From-Path our URI, with its Message-ID and Byte-Range (made up
// from what was received when the SEND had none) and Status 000 code. It
// travels back from the SEND's receiver's side to its sender's: its
// sessions are the SEND's, swapped.
// by: the read loop calling (enqueue), nil for other goroutines.
func (r *Relay) sendReport(x *txn, code int, comment string, by *conn) {
	if x.src.isClosed() {
		r.stats.reportsDropped.Add(1)
		return
	}
	of := newOutFrame()
	var tidBuf [msrp.TransactIDLen]byte
	tid := msrp.AppendTransactID(tidBuf[:0])
	of.method, of.messageID = "REPORT", append(of.messageID, x.messageID...)
	of.fromSession, of.toSession = x.toSession, x.fromSession
	// The Byte-Range from the SEND's parsed value, so that the REPORT
	// never carries a value the relay would refuse to read (RFC 4975 §9).
	var brBuf [3*20 + 2]byte
	var br []byte
	if x.hasRange {
		br = x.byteRange.Append(brBuf[:0])
	} else {
		// RFC 4975 §7.1.1: a SEND without Byte-Range carries the whole
		// message in one chunk; report what we saw of it.
		end := max(x.bodyLen, 0)
		total := int64(msrp.Unknown)
		if x.flag == msrp.FlagEnd {
			total = end
		}
		br = msrp.ByteRange{Start: 1, End: end, Total: total}.Append(brBuf[:0])
	}
	of.buf = msrp.AppendReport(of.buf, tid, []byte(x.fromPath), []byte(x.ourURI), []byte(x.messageID), br,
		msrp.Status{Namespace: 0, Code: code, Reason: comment})
	r.stats.reportsSent.Add(1)
	x.src.enqueue(of, by)
}

// failTxn handles a transaction that will get no (good) response: a SEND
// gets a failure REPORT when its Failure-Report asks for one; any other
// request gets an error response with its own transact-id.
// by: the read loop calling (enqueue), nil for other goroutines.
func (r *Relay) failTxn(x *txn, code int, comment string, by *conn) {
	if x.method == "SEND" {
		if x.report != msrp.ReportNo {
			r.sendReport(x, code, comment, by)
		}
		return
	}
	if x.src.isClosed() {
		return
	}
	of := newOutFrame()
	of.status, of.fromSession, of.toSession = code, x.fromSession, x.toSession
	of.buf = msrp.AppendResponse(of.buf, x.srcTID, code, comment, []byte(x.fromPath), []byte(x.ourURI))
	x.src.enqueue(of, by)
}

// relayResponse queues the response f to the forwarded request x back to
// where x came from (RFC 4976 §6.4.3): with x's transact-id on that hop,
// To-Path without our leading URIs (own, in To-Path order; rest: the
// To-Path after them), the same URIs put in front of From-Path in the
// reverse order (each hop prepends its own: the last one we passed is
// nearest the responder), every other header field as received.
func (r *Relay) relayResponse(x *txn, f *msrp.Frame, own [][]byte, rest []byte, by *conn) {
	of := newOutFrame()
	of.status, of.answers, of.fromSession, of.toSession = f.StatusCode, knownMethod(x.method), x.fromSession, x.toSession
	b := msrp.AppendResponseLine(of.buf, x.srcTID, f.StatusCode, f.Comment)
	var pb [maxOwnHops][]byte
	prefix := pb[:len(own)]
	for i, u := range own {
		prefix[len(own)-1-i] = u
	}
	for _, h := range f.Headers {
		switch {
		case equalFoldName(h.Name, msrp.HdrToPath):
			b = msrp.AppendHeader(b, h.Name, rest)
		case equalFoldName(h.Name, msrp.HdrFromPath):
			b = msrp.AppendPathHeader(b, h.Name, prefix, h.Value)
		case f.StatusCode == 200 && x.method == "AUTH" && equalFoldName(h.Name, msrp.HdrUsePath):
			b = r.appendUsePath(b, h.Name, h.Value, x.ourURI)
		default:
			b = msrp.AppendHeader(b, h.Name, h.Value)
		}
	}
	of.buf = msrp.AppendEndLine(b, x.srcTID, msrp.FlagEnd)
	x.src.enqueue(of, by)
}

// appendUsePath appends the Use-Path of a 200 to an AUTH we forwarded
// onward, as it goes back towards the client, so that the client can use
// it as its To-Path prefix (RFC 4976 §5.1: "the client takes the list of
// URIs in the Use-Path header after the outermost authentication"). The
// next relay normally lists every relay already (authreq.go, usePath), us
// first. When the client named us by our session-less URI (an AUTH onward
// of an authenticated client) that URI leads nowhere in a To-Path: it
// goes, the client has its session URI of ours already. When the next
// relay did not list us (it named itself only), our URI as the client
// named it (ourURI) goes in front.
func (r *Relay) appendUsePath(b, name, v []byte, ourURI string) []byte {
	first, rest := msrp.SplitPath(v)
	if u, err := msrp.ParseURI(bstr(first)); err == nil && r.isOwn(u) && u.SessionID == "" && len(rest) > 0 {
		return msrp.AppendHeader(b, name, rest)
	}
	for p := v; len(p) > 0; {
		var s []byte
		s, p = msrp.SplitPath(p)
		if u, err := msrp.ParseURI(bstr(s)); err == nil && r.isOwn(u) {
			return msrp.AppendHeader(b, name, v) // we are listed already
		}
	}
	if o, err := msrp.ParseURI(ourURI); err == nil && o.SessionID != "" {
		return msrp.AppendPathHeader(b, name, [][]byte{[]byte(ourURI)}, v)
	}
	return msrp.AppendHeader(b, name, v)
}

// answerBadFrame answers a malformed request with 400 when the lines that
// could be read name a From-Path to answer to (RFC 4975 §7.2), unless it is
// a REPORT or its Failure-Report forbids responses. It must run before
// Recover, which reuses the Reader's buffer.
func (c *conn) answerBadFrame(fe *msrp.FrameError) {
	method := c.rd.FailedMethod()
	from := c.rd.FailedHeader(msrp.HdrFromPath)
	if method == "" || method == "REPORT" || len(from) == 0 {
		return
	}
	if method == "SEND" {
		if m, err := msrp.ParseFailureReport(c.rd.FailedHeader(msrp.HdrFailureReport)); err == nil && m != msrp.ReportYes {
			return
		}
		from, _ = msrp.SplitPath(from)
	}
	top, _ := msrp.SplitPath(c.rd.FailedHeader(msrp.HdrToPath))
	if len(top) == 0 {
		top = c.uri.Append(nil)
	}
	of := newOutFrame()
	of.status = 400
	of.buf = msrp.AppendResponse(of.buf, fe.TransactID, 400, "Bad request", from, top)
	c.enqueue(of, c)
}

// closeAfterFlush closes c once what is queued for it has been written;
// by: the read loop calling (enqueue), nil for other goroutines.
func (c *conn) closeAfterFlush(reason event.CloseReason, err error, by *conn) {
	of := newOutFrame()
	of.closeReason, of.closeErr = reason, err
	c.enqueue(of, by)
}

// knownMethod is m as a string constant when it is a method of RFC 4975 or
// RFC 4976 (event.FrameInfo.Answers), "" otherwise: a transaction's method
// is a view of its pooled arena.
func knownMethod(m string) string {
	switch m {
	case "SEND":
		return "SEND"
	case "REPORT":
		return "REPORT"
	case "AUTH":
		return "AUTH"
	case "NICKNAME":
		return "NICKNAME"
	}
	return ""
}
