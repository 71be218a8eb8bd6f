// Package msrp owns the MSRP wire format (RFC 4975, RFC 4976): frames read and
// written as streams, and the header value types (URI, Path, Byte-Range, Status, Digest).
//
// It has no I/O policy: no timeouts, no connections, no routing. A Reader hands
// out frames whose start line and header fields are slices into the Reader's
// own buffer (valid until the next ReadFrame) and whose body is an io.Reader
// that ends at the frame's own end-line, so a body of any size passes through
// with memory bounded by the bufio.Reader's buffer. A Writer streams frames
// out; the Append* builders (builders.go) build whole small frames and
// lines into a caller's buffer without allocating.
package msrp
