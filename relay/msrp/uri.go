package msrp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrURI is wrapped by every URI and Path parse error.
var ErrURI = errors.New("msrp: malformed MSRP URI")

// URI is an MSRP URI (RFC 4975 §6, §9):
//
//	MSRP-URI = msrp-scheme "://" authority ["/" session-id] ";" transport *( ";" URI-parameter)
//	authority = [ userinfo "@" ] host [ ":" port ]        (RFC 3986)
//
// Strings are substrings of the parsed text. Host holds an IPv6 literal
// without its brackets.
type URI struct {
	Secure    bool   // msrps
	User      string // userinfo, as written (percent-encoding kept)
	Host      string // reg-name, IPv4 address, or IPv6 address without brackets
	Port      int    // 0 when absent
	SessionID string // "" when absent
	Transport string // "tcp" or another 1*ALPHANUM; "" when absent (lenient)
	Params    string // further ";name[=value]" parameters, without the leading ';'
}

// Scheme returns "msrps" or "msrp".
func (u *URI) Scheme() string {
	if u.Secure {
		return "msrps"
	}
	return "msrp"
}

func uriErr(s, why string) error {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Errorf("%w %q: %s", ErrURI, s, why)
}

// ParseURI parses one MSRP URI. The scheme is matched case-insensitively;
// the transport part is optional (real peers omit it); IPv6 literals are
// accepted in either case.
func ParseURI(s string) (URI, error) {
	var u URI
	rest := s
	switch {
	case hasPrefixFold(rest, "msrps://"):
		u.Secure = true
		rest = rest[8:]
	case hasPrefixFold(rest, "msrp://"):
		rest = rest[7:]
	default:
		return u, uriErr(s, "scheme is not msrp:// or msrps://")
	}
	// authority ends at "/" or ";" or the end.
	end := strings.IndexAny(rest, "/;")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	rest = rest[end:]
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		u.User = auth[:at]
		if u.User == "" || !validChars(u.User, isUserinfoChar) {
			return u, uriErr(s, "bad userinfo")
		}
		auth = auth[at+1:]
	}
	hostPort := auth
	if strings.HasPrefix(hostPort, "[") {
		rb := strings.IndexByte(hostPort, ']')
		if rb < 0 {
			return u, uriErr(s, "unclosed IPv6 literal")
		}
		lit := hostPort[1:rb]
		a, err := netip.ParseAddr(lit)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return u, uriErr(s, "bad IPv6 literal")
		}
		u.Host = lit
		hostPort = hostPort[rb+1:]
		if hostPort != "" && hostPort[0] != ':' {
			return u, uriErr(s, "junk after IPv6 literal")
		}
	} else {
		c := strings.IndexByte(hostPort, ':')
		if c < 0 {
			c = len(hostPort)
		}
		u.Host = hostPort[:c]
		hostPort = hostPort[c:]
		if u.Host == "" || !validChars(u.Host, isRegNameChar) {
			return u, uriErr(s, "bad host")
		}
	}
	if hostPort != "" { // ":" port
		p := hostPort[1:]
		if p == "" || len(p) > 5 || !validChars(p, isDigit) {
			return u, uriErr(s, "bad port")
		}
		n, _ := strconv.Atoi(p)
		if n == 0 || n > 65535 {
			return u, uriErr(s, "port out of range")
		}
		u.Port = n
	}
	if strings.HasPrefix(rest, "/") {
		// session-id = 1*( unreserved / "+" / "=" / "/" )
		end := strings.IndexByte(rest, ';')
		if end < 0 {
			end = len(rest)
		}
		u.SessionID = rest[1:end]
		rest = rest[end:]
		if u.SessionID == "" || !validChars(u.SessionID, isSessionChar) {
			return u, uriErr(s, "bad session-id")
		}
	}
	if rest == "" {
		return u, nil
	}
	// rest starts with ";": transport *( ";" URI-parameter )
	rest = rest[1:]
	end = strings.IndexByte(rest, ';')
	if end < 0 {
		end = len(rest)
	}
	u.Transport = rest[:end]
	if u.Transport == "" || !validChars(u.Transport, isAlnum) {
		return u, uriErr(s, "bad transport")
	}
	if end < len(rest) {
		u.Params = rest[end+1:]
		for p := range strings.SplitSeq(u.Params, ";") {
			name, val, hasVal := strings.Cut(p, "=")
			if name == "" || !validChars(name, isTokenChar) || hasVal && (val == "" || !validChars(val, isTokenChar)) {
				return u, uriErr(s, "bad URI parameter")
			}
		}
	}
	return u, nil
}

// String formats u; ParseURI(u.String()) equals u for a parsed URI.
func (u URI) String() string { return string(u.Append(nil)) }

// Append appends the text form of u to dst.
func (u URI) Append(dst []byte) []byte {
	dst = append(dst, u.Scheme()...)
	dst = append(dst, "://"...)
	if u.User != "" {
		dst = append(dst, u.User...)
		dst = append(dst, '@')
	}
	if strings.IndexByte(u.Host, ':') >= 0 {
		dst = append(dst, '[')
		dst = append(dst, u.Host...)
		dst = append(dst, ']')
	} else {
		dst = append(dst, u.Host...)
	}
	if u.Port != 0 {
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, int64(u.Port), 10)
	}
	if u.SessionID != "" {
		dst = append(dst, '/')
		dst = append(dst, u.SessionID...)
	}
	if u.Transport != "" {
		dst = append(dst, ';')
		dst = append(dst, u.Transport...)
	}
	if u.Params != "" {
		dst = append(dst, ';')
		dst = append(dst, u.Params...)
	}
	return dst
}

// Equal compares two MSRP URIs by the rules of RFC 4975 §6.1: the scheme
// must match; userinfo is ignored; hosts that are IP addresses compare as
// addresses, others case-insensitively after percent-decoding; a port given
// in either must match in both; the session-id compares case-sensitively and
// present never equals absent; the transport compares case-insensitively;
// other URI parameters are ignored.
func (u URI) Equal(v URI) bool {
	return u.SameAuthority(v) && u.SessionID == v.SessionID
}

// SameAuthority is Equal without the session-id: what a relay uses to
// recognise its own URI at the top of a To-Path (RFC 4976 §6), whatever
// session it names.
func (u URI) SameAuthority(v URI) bool {
	if u.Secure != v.Secure || u.Port != v.Port || !strings.EqualFold(u.Transport, v.Transport) {
		return false
	}
	return hostEqual(u.Host, v.Host)
}

func hostEqual(a, b string) bool {
	if a == b {
		return true
	}
	aa, errA := netip.ParseAddr(a)
	ba, errB := netip.ParseAddr(b)
	if errA == nil || errB == nil {
		return errA == nil && errB == nil && aa == ba
	}
	return strings.EqualFold(pctDecodeUnreserved(a), pctDecodeUnreserved(b))
}

// pctDecodeUnreserved decodes %XX escapes of unreserved characters, the
// normalisation RFC 3986 §6.2.2.2 allows before comparison.
func pctDecodeUnreserved(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil && isUnreserved(byte(v)) {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Path is a To-Path, From-Path or Use-Path value: MSRP URIs separated by SP.
type Path []URI

// ParsePath parses a space-separated list of at least one MSRP URI.
func ParsePath(s string) (Path, error) {
	var p Path
	for f := range strings.FieldsSeq(s) {
		u, err := ParseURI(f)
		if err != nil {
			return nil, fmt.Errorf("path element %d: %w", len(p)+1, err)
		}
		p = append(p, u)
	}
	if len(p) == 0 {
		return nil, uriErr(s, "empty path")
	}
	return p, nil
}

// String formats p with single spaces.
func (p Path) String() string { return string(p.Append(nil)) }

// Append appends the text form of p to dst.
func (p Path) Append(dst []byte) []byte {
	for i, u := range p {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = u.Append(dst)
	}
	return dst
}

// SplitPath returns the first URI of a path value and the rest (which may
// be empty), without parsing either: a relay's hot path needs only the top.
func SplitPath(v []byte) (first, rest []byte) {
	v = trimBlanks(v)
	for i, c := range v {
		if c == ' ' || c == '\t' {
			return v[:i], trimBlanks(v[i:])
		}
	}
	return v, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func validChars(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isUnreserved(c byte) bool {
	return isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~'
}

func isSubDelim(c byte) bool {
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
}

// userinfo = *( unreserved / pct-encoded / sub-delims / ":" ), percent signs
// accepted as they stand.
func isUserinfoChar(c byte) bool {
	return isUnreserved(c) || isSubDelim(c) || c == ':' || c == '%'
}

// reg-name = *( unreserved / pct-encoded / sub-delims ); ";" ends it here.
func isRegNameChar(c byte) bool {
	return isUnreserved(c) || (isSubDelim(c) && c != ';') || c == '%'
}

// session-id = 1*( unreserved / "+" / "=" / "/" )
func isSessionChar(c byte) bool {
	return isUnreserved(c) || c == '+' || c == '=' || c == '/'
}
