package load

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Error kinds that are not a status code: the keys of Report.Errors.
const (
	kindTimeout       = "timeout"                         // no response within -timeout
	kindUnanswered    = "no response by the end of drain" // still outstanding when the run gave up
	kindUnknownTID    = "response to unknown transaction" // e.g. after its timeout
	kindNotDelivered  = "acknowledged but not delivered"  // 200 at A, never complete at B
	kindHashMismatch  = "hash mismatch"                   // B reassembled different bytes
	kindIncomplete    = "incomplete message"              // B got some chunks only
	kindAborted       = "message aborted (#)"             // a chunk ended with '#'
	kindBadRange      = "bad Byte-Range at B"             // missing, malformed or beyond the message
	kindClosedByRelay = "closed by relay"                 // EOF from the relay
	kindClosedConnect = "closed by relay right after connect"
	kindReset         = "connection reset"
	kindMalformed     = "malformed frame from relay"
	kindUnexpected    = "unexpected request from relay"
)

// reasons are RFC 4975 §10 / RFC 4976 §8 reason phrases for kinds.
var reasons = map[int]string{
	200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
	408: "Request Timeout", 413: "Stop Sending", 415: "Unsupported Media Type", 423: "Interval Out-of-Bounds",
	481: "No Such Session", 501: "Not Implemented", 506: "Wrong Connection",
}

// statusKind names a status code "408 Request Timeout"; where says what
// carried it ("SEND", "REPORT", "AUTH").
func statusKind(where string, code int, comment string) string {
	s := where + " " + strconv.Itoa(code)
	if r, ok := reasons[code]; ok {
		return s + " " + r
	}
	if comment = strings.TrimSpace(comment); comment != "" && len(comment) <= 40 {
		return s + " " + comment
	}
	return s
}

// connKind names a connection error readably.
func connKind(err error) string {
	var fe *msrp.FrameError
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return kindClosedByRelay
	case errors.Is(err, syscall.ECONNRESET):
		return kindReset
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe (closed by relay)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &fe):
		return kindMalformed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "connection timeout"
	case errors.As(err, &errno):
		return "connection error: " + errno.Error()
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return "TLS certificate not verified"
	case errors.As(err, &ne) && ne.Timeout():
		return "connection timeout"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil { // without the addresses: one kind, not one per connection
		return "connection error: " + op.Op + ": " + op.Err.Error()
	}
	return "connection error: " + err.Error()
}
