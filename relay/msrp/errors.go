package msrp

import (
	"errors"
	"strconv"
)

// Errors a Reader returns, wrapped in a *FrameError. Test with errors.Is.
var (
	// ErrStartLine: the first line is not "MSRP SP transact-id SP method"
	// or "MSRP SP transact-id SP 3DIGIT [SP comment]" (RFC 4975 §9).
	ErrStartLine = errors.New("malformed start line")
	// ErrTransactID: the transact-id is not an ident (RFC 4975 §9) or is
	// outside the configured length bounds.
	ErrTransactID = errors.New("invalid transact-id")
	// ErrHeaderTooLarge: start line and header fields exceed Limits.MaxHeaderBytes.
	ErrHeaderTooLarge = errors.New("start line and header fields too large")
	// ErrTooManyHeaders: more header fields than Limits.MaxHeaders.
	ErrTooManyHeaders = errors.New("too many header fields")
	// ErrHeaderSyntax: a header field line without a colon, with an empty or
	// invalid name, or with control characters in its value.
	ErrHeaderSyntax = errors.New("malformed header field")
	// ErrLineEnding: a CR not followed by LF, or an LF not preceded by CR, in
	// the start line or header fields (every line ends in CRLF, RFC 4975 §9).
	ErrLineEnding = errors.New("CR or LF outside a CRLF line ending")
	// ErrEndLine: a line starting with seven hyphens among the header fields
	// that is not this frame's end-line "-------" transact-id flag.
	ErrEndLine = errors.New("malformed end-line")
	// ErrTruncated: the stream ended inside a frame.
	ErrTruncated = errors.New("stream ended inside a frame")
)

// FrameError is the error a Reader returns for a malformed frame. TransactID
// is set when the start line was read far enough to know it, so a relay can
// answer with a 400 response (RFC 4975 §7.3) and Reader.Recover can skip to
// the frame's end-line; otherwise the connection should be closed.
type FrameError struct {
	Err        error  // one of the Err* values above
	TransactID string // "" when unknown
	Line       int    // 1-based line of the start line/header block, 0 when not applicable
	Detail     string // short human-readable context
}

func (e *FrameError) Error() string {
	s := "msrp: " + e.Err.Error()
	if e.Line > 0 {
		s += " (line " + strconv.Itoa(e.Line) + ")"
	}
	if e.TransactID != "" {
		s += " in transaction " + strconv.Quote(e.TransactID)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *FrameError) Unwrap() error { return e.Err }

// ErrEndLineInBody is returned by a Writer asked to write body data that
// contains the frame's own end-line (RFC 4975 §7.1: the sender MUST ensure
// the end-line is not present in the body). Nothing of that write was sent;
// the caller should end the chunk with the '#' (aborted) flag.
var ErrEndLineInBody = errors.New("msrp: body contains the frame's end-line")

// ErrWriterState is returned when Writer methods are called out of order.
var ErrWriterState = errors.New("msrp: writer call out of order")

// ErrRawHeaders is reported by Writer.End when RawHeaders was given bytes
// that are not whole header field lines; they were not written.
var ErrRawHeaders = errors.New("msrp: raw header bytes are not whole CRLF-ended lines")
