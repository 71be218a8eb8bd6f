package storage

import "bytes"

// wireFields are the values a row takes from a frame's captured wire bytes
// (event.FrameInfo.Wire: start line, header fields, the start of the body;
// possibly cut anywhere by the relay's trace_capture_bytes). Every field is
// a view of the capture.
type wireFields struct {
	byteRange []byte // the Byte-Range value, trimmed
	authUser  []byte // username= of an Authorization header (RFC 4976 §5, RFC 7616 §3.4)
	// authResponse: a response carrying a header only a response to AUTH
	// carries (RFC 4976 §5: WWW-Authenticate on 401, Use-Path and Expires on
	// 200, Min-Expires on 423, Max-Expires on 420).
	authResponse bool
	body         []byte // after the blank line, up to the end-line or the capture's end
}

// parseWire extracts wireFields from a capture. It never fails: what the
// capture does not hold stays empty. tid is the frame's transact-id, used to
// find the end-line ("-------" tid flag, RFC 4975 §7.1) after the body.
func parseWire(wire, tid []byte, response bool) wireFields {
	var f wireFields
	// Skip the start line.
	nl := bytes.IndexByte(wire, '\n')
	if nl < 0 {
		return f
	}
	rest := wire[nl+1:]
	for len(rest) > 0 {
		nl = bytes.IndexByte(rest, '\n')
		if nl < 0 {
			// A header line cut by the capture: too uncertain to use.
			return f
		}
		line := rest[:nl]
		rest = rest[nl+1:]
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			// The blank line: the body follows (RFC 4975 §7.1).
			f.body = cutEndLine(rest, tid)
			return f
		}
		if isEndLine(line, tid) {
			return f // a frame without a body
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFold(name, "Byte-Range"):
			f.byteRange = value
		case asciiEqualFold(name, "Authorization"):
			f.authUser = digestUsername(value)
		case response && (asciiEqualFold(name, "WWW-Authenticate") || asciiEqualFold(name, "Use-Path") ||
			asciiEqualFold(name, "Min-Expires") || asciiEqualFold(name, "Max-Expires")):
			f.authResponse = true
		}
	}
	return f
}

// cutEndLine returns body up to the line that ends the frame: CRLF
// "-------" transact-id flag. Without it (the capture ended first) the whole
// rest is body.
func cutEndLine(body, tid []byte) []byte {
	if len(tid) == 0 {
		return body
	}
	// The end-line starts a line: at the body's start (empty body) or after CRLF.
	if hasEndLinePrefix(body, tid) {
		return body[:0]
	}
	for off := 0; ; {
		i := bytes.Index(body[off:], []byte("\r\n-------"))
		if i < 0 {
			return body
		}
		i += off
		if hasEndLinePrefix(body[i+2:], tid) {
			return body[:i]
		}
		off = i + 2
	}
}

// hasEndLinePrefix: b starts with "-------" tid followed by a flag or by
// the capture's end.
func hasEndLinePrefix(b, tid []byte) bool {
	const dashes = "-------"
	if len(b) < len(dashes)+len(tid) || string(b[:len(dashes)]) != dashes ||
		!bytes.Equal(b[len(dashes):len(dashes)+len(tid)], tid) {
		return false
	}
	b = b[len(dashes)+len(tid):]
	return len(b) == 0 || b[0] == '$' || b[0] == '+' || b[0] == '#'
}

func isEndLine(line, tid []byte) bool {
	return len(tid) > 0 && len(line) == 7+len(tid)+1 && hasEndLinePrefix(line, tid)
}

// digestUsername returns the username parameter of a Digest credentials
// value (RFC 7616 §3.4: username = "username" "=" quoted-string), unquoted;
// nil when absent.
func digestUsername(v []byte) []byte {
	// Skip the scheme.
	sp := bytes.IndexAny(v, " \t")
	if sp < 0 {
		return nil
	}
	v = v[sp+1:]
	for len(v) > 0 {
		v = bytes.TrimLeft(v, " \t,")
		eq := bytes.IndexByte(v, '=')
		if eq <= 0 {
			return nil
		}
		name := bytes.TrimSpace(v[:eq])
		v = bytes.TrimLeft(v[eq+1:], " \t")
		var val []byte
		if len(v) > 0 && v[0] == '"' {
			end := 1
			for end < len(v) && v[end] != '"' {
				if v[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(v) {
				return nil // unterminated quoted-string
			}
			val, v = v[1:end], v[end+1:]
		} else {
			comma := bytes.IndexByte(v, ',')
			if comma < 0 {
				comma = len(v)
			}
			val, v = bytes.TrimSpace(v[:comma]), v[comma:]
		}
		if asciiEqualFold(name, "username") {
			return val
		}
	}
	return nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
