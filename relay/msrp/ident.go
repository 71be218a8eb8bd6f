package msrp

import "crypto/rand"

// RFC 4975 §9: ident = ALPHANUM 3*31ident-char,
// ident-char = ALPHANUM / "." / "-" / "+" / "%" / "=".
const (
	IdentMinLen = 4
	IdentMaxLen = 32
)

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isIdentChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '-' || c == '+' || c == '%' || c == '='
}

// ValidIdent reports whether b is an ident (RFC 4975 §9) of IdentMinLen to
// IdentMaxLen characters: the syntax of transact-id and Message-ID.
func ValidIdent(b []byte) bool { return validIdentLen(b, IdentMinLen, IdentMaxLen) }

func validIdentLen(b []byte, minLen, maxLen int) bool {
	if len(b) < minLen || len(b) > maxLen || !isAlnum(b[0]) {
		return false
	}
	for _, c := range b[1:] {
		if !isIdentChar(c) {
			return false
		}
	}
	return true
}

const identAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// TransactIDLen is the length of the transact-ids NewTransactID makes:
// 16 characters of a 62-letter alphabet, about 95 bits of randomness, so a
// peer cannot guess the next one and place its end-line in a body.
const TransactIDLen = 16

// AppendTransactID appends a new random transact-id (TransactIDLen
// alphanumerics, drawn from crypto/rand) to dst.
func AppendTransactID(dst []byte) []byte {
	var r [TransactIDLen]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails (Go 1.24+)
	for _, c := range r {
		// 248 = 4*62: reject-free mapping would bias; the bias of c%62 over
		// 256 values is < 2% per character and irrelevant for uniqueness.
		dst = append(dst, identAlphabet[int(c)%len(identAlphabet)])
	}
	return dst
}
