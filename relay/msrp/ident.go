package msrp

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"sync"
)

// RFC 4975 §9: ident = ALPHANUM 3*31ident-char,
// ident-char = ALPHANUM / "." / "-" / "+" / "%" / "=".
const (
	IdentMinLen = 4
	IdentMaxLen = 32
)

func isAlnum(c byte) bool { return charClass[c]&classAlnum != 0 }

func isIdentChar(c byte) bool { return charClass[c]&classIdent != 0 }

// Character classes of RFC 4975 §9, one table lookup a byte in the
// parser's loops instead of a chain of comparisons.
const (
	classAlnum = 1 << iota // ALPHANUM
	classIdent             // ident-char: ALPHANUM / "." / "-" / "+" / "%" / "="
	classToken             // token char (RFC 4975 §9, from RFC 3261 §25.1)
)

var charClass = func() (t [256]uint8) {
	for c := range 256 {
		b := byte(c)
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
			t[c] |= classAlnum | classIdent | classToken
		}
	}
	for _, b := range []byte(".-+%=") {
		t[b] |= classIdent
	}
	for _, b := range []byte("-.!%*_+`'~") {
		t[b] |= classToken
	}
	return t
}()

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

// chachas are ChaCha8 generators (a cryptographically strong stream
// cipher), each seeded from crypto/rand: drawing from one allocates
// nothing, unlike crypto/rand.Read into a buffer that escapes.
var chachas = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails (Go 1.24+)
	return mrand.NewChaCha8(seed)
}}

// AppendTransactID appends a new random transact-id (TransactIDLen
// alphanumerics from a ChaCha8 stream seeded by crypto/rand) to dst.
func AppendTransactID(dst []byte) []byte {
	var r [TransactIDLen]byte
	g := chachas.Get().(*mrand.ChaCha8)
	_, _ = g.Read(r[:])
	chachas.Put(g)
	for _, c := range r {
		// 248 = 4*62: reject-free mapping would bias; the bias of c%62 over
		// 256 values is < 2% per character and irrelevant for uniqueness.
		dst = append(dst, identAlphabet[int(c)%len(identAlphabet)])
	}
	return dst
}
