package msrp

import (
	"strings"
)

// DigestParam is one name=value of a Digest challenge, credentials or
// Authentication-Info value. Value is unquoted and unescaped; Quoted tells
// how it was (or is to be) written.
type DigestParam struct {
	Name   string
	Value  string
	Quoted bool
}

// Digest is the list of parameters of a WWW-Authenticate, Authorization or
// Authentication-Info value (RFC 4976 §8, after RFC 7616 §3.3-3.5).
type Digest []DigestParam

// Get returns the value of the parameter named name (case-insensitive)
// and whether it is present.
func (d Digest) Get(name string) (string, bool) {
	for _, p := range d {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// ParseDigest parses a WWW-Authenticate or Authorization value, which starts
// with the scheme "Digest" (case-insensitive), followed by
// param *("," param); param = token "=" (token / quoted-string).
func ParseDigest(v []byte) (Digest, error) {
	s := string(v)
	if len(s) < 7 || !strings.EqualFold(s[:6], "Digest") || (s[6] != ' ' && s[6] != '\t') {
		return nil, valueErr("Digest", v, `want scheme "Digest"`)
	}
	return parseDigestParams(v, s[7:])
}

// ParseAuthenticationInfo parses an Authentication-Info value: params
// without a scheme (RFC 4976 §8: ainfo *("," ainfo)).
func ParseAuthenticationInfo(v []byte) (Digest, error) {
	return parseDigestParams(v, string(v))
}

func parseDigestParams(v []byte, s string) (Digest, error) {
	var d Digest
	i := 0
	skipLWS := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	for {
		skipLWS()
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		name := s[start:i]
		if name == "" {
			return nil, valueErr("Digest", v, "missing parameter name")
		}
		skipLWS()
		if i >= len(s) || s[i] != '=' {
			return nil, valueErr("Digest", v, "parameter "+name+" without '='")
		}
		i++
		skipLWS()
		p := DigestParam{Name: name}
		if i < len(s) && s[i] == '"' {
			// quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE
			i++
			var b strings.Builder
			closed := false
			runStart := i
			for i < len(s) {
				c := s[i]
				if c == '"' {
					closed = true
					break
				}
				if c == '\\' {
					if i+1 >= len(s) {
						break
					}
					// Control characters stay refused when escaped: a
					// value is a header field's text (RFC 4975 §9 utf8text).
					if e := s[i+1]; e < 0x20 && e != '\t' || e == 0x7f {
						return nil, valueErr("Digest", v, "control character in quoted string")
					}
					b.WriteString(s[runStart:i])
					b.WriteByte(s[i+1])
					i += 2
					runStart = i
					continue
				}
				if c < 0x20 && c != '\t' || c == 0x7f {
					return nil, valueErr("Digest", v, "control character in quoted string")
				}
				i++
			}
			if !closed {
				return nil, valueErr("Digest", v, "unterminated quoted string")
			}
			if b.Len() == 0 {
				p.Value = s[runStart:i]
			} else {
				b.WriteString(s[runStart:i])
				p.Value = b.String()
			}
			p.Quoted = true
			i++ // closing quote
		} else {
			start := i
			for i < len(s) && isTokenChar(s[i]) {
				i++
			}
			p.Value = s[start:i]
			if p.Value == "" {
				return nil, valueErr("Digest", v, "empty value of "+name)
			}
		}
		if _, dup := d.Get(name); dup {
			return nil, valueErr("Digest", v, "duplicate parameter "+name)
		}
		d = append(d, p)
		skipLWS()
		if i == len(s) {
			return d, nil
		}
		if s[i] != ',' {
			return nil, valueErr("Digest", v, "junk after parameter "+name)
		}
		i++
	}
}

// AppendDigest appends a Digest value to dst: the scheme (e.g. "Digest",
// or "" for Authentication-Info) and the parameters, quoted and escaped
// where Quoted is set, separated by ", ".
func AppendDigest(dst []byte, scheme string, params ...DigestParam) []byte {
	if scheme != "" {
		dst = append(dst, scheme...)
		dst = append(dst, ' ')
	}
	for i, p := range params {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = append(dst, p.Name...)
		dst = append(dst, '=')
		if !p.Quoted {
			dst = append(dst, p.Value...)
			continue
		}
		dst = append(dst, '"')
		for j := 0; j < len(p.Value); j++ {
			if c := p.Value[j]; c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, p.Value[j])
		}
		dst = append(dst, '"')
	}
	return dst
}
