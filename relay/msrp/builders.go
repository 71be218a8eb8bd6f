package msrp

import "strconv"

// Frame builders: each appends one piece of a frame to dst and returns the
// extended slice, as strconv.Append* do, so a caller that reuses its buffer
// builds frames without allocating. The Writer builds its lines with them,
// and so does the relay for the small frames it makes (responses, REPORTs).
// They do not validate: what goes in must already be valid wire text.

// bytesOrString is a header name or value as a frame holds it ([]byte) or
// as a program spells it (string).
type bytesOrString interface{ ~string | ~[]byte }

// AppendRequestLine appends a request's start line "MSRP tid method" CRLF
// (RFC 4975 §9: req-start).
func AppendRequestLine[T, M bytesOrString](dst []byte, tid T, method M) []byte {
	dst = append(dst, "MSRP "...)
	dst = append(dst, tid...)
	dst = append(dst, ' ')
	dst = append(dst, method...)
	return append(dst, "\r\n"...)
}

// AppendResponseLine appends a response's start line "MSRP tid code" with
// " comment" when comment is not empty, then CRLF (RFC 4975 §9: resp-start).
func AppendResponseLine[T, C bytesOrString](dst []byte, tid T, code int, comment C) []byte {
	dst = append(dst, "MSRP "...)
	dst = append(dst, tid...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(code), 10)
	if len(comment) > 0 {
		dst = append(dst, ' ')
		dst = append(dst, comment...)
	}
	return append(dst, "\r\n"...)
}

// AppendHeader appends one header field line "name: value" CRLF.
func AppendHeader[N, V bytesOrString](dst []byte, name N, value V) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// AppendPathHeader appends a path header field line (To-Path, From-Path)
// "name: prefix[0] prefix[1] ... path" CRLF: a relay puts its own URIs in
// front of a From-Path it passes on (RFC 4976 §6.4).
func AppendPathHeader[N bytesOrString](dst []byte, name N, prefix [][]byte, path []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	for _, p := range prefix {
		dst = append(dst, p...)
		dst = append(dst, ' ')
	}
	dst = append(dst, path...)
	return append(dst, "\r\n"...)
}

// AppendStatusHeader appends a Status header field line (RFC 4975 §9:
// "Status: namespace SP status-code [SP text-reason]").
func AppendStatusHeader(dst []byte, s Status) []byte {
	dst = append(dst, HdrStatus...)
	dst = append(dst, ": "...)
	dst = s.Append(dst)
	return append(dst, "\r\n"...)
}

// AppendEndLine appends the end-line "-------" tid flag CRLF (RFC 4975 §9).
// A frame with a body needs the CRLF that ends the body before it.
func AppendEndLine[T bytesOrString](dst []byte, tid T, flag byte) []byte {
	dst = append(dst, "-------"...)
	dst = append(dst, tid...)
	return append(dst, flag, '\r', '\n')
}

// AppendResponse appends a whole response without body: start line, To-Path,
// From-Path, the extra header fields in order, and the end-line with '$'
// (RFC 4975 §7.2). Choosing the paths is the caller's: To-Path is the
// request's From-Path (its first URI only for a SEND), From-Path the URI of
// the one responding.
func AppendResponse[T, C bytesOrString](dst []byte, tid T, code int, comment C, toPath, fromPath []byte, extra ...Header) []byte {
	dst = AppendResponseLine(dst, tid, code, comment)
	dst = AppendHeader(dst, HdrToPath, toPath)
	dst = AppendHeader(dst, HdrFromPath, fromPath)
	for _, h := range extra {
		dst = AppendHeader(dst, h.Name, h.Value)
	}
	return AppendEndLine(dst, tid, FlagEnd)
}

// AppendReport appends a REPORT request without body (RFC 4975 §7.1.2):
// To-Path, From-Path, Message-ID, Byte-Range and Status, and the end-line
// with '$'.
func AppendReport[T bytesOrString](dst []byte, tid T, toPath, fromPath, messageID, byteRange []byte, status Status) []byte {
	dst = AppendRequestLine(dst, tid, "REPORT")
	dst = AppendHeader(dst, HdrToPath, toPath)
	dst = AppendHeader(dst, HdrFromPath, fromPath)
	dst = AppendHeader(dst, HdrMessageID, messageID)
	dst = AppendHeader(dst, HdrByteRange, byteRange)
	dst = AppendStatusHeader(dst, status)
	return AppendEndLine(dst, tid, FlagEnd)
}
