package msrp

import (
	"bytes"
	"testing"
)

// TestValidTextWords: the word-at-a-time check agrees with the byte check
// for every byte value, and every pair of values (a borrow from one byte
// into the next must not hide or invent an invalid one), at every offset
// of the words and of the tail.
func TestValidTextWords(t *testing.T) {
	base := bytes.Repeat([]byte{'a'}, 19)
	for a := range 256 {
		for i := range len(base) {
			b := append([]byte(nil), base...)
			b[i] = byte(a)
			if got, want := validText(b), validTextBytes(b); got != want {
				t.Fatalf("%q: %v, want %v", b, got, want)
			}
			for c := range 256 {
				if i+1 == len(b) || i%3 != 0 {
					break
				}
				b[i+1] = byte(c)
				if got, want := validText(b), validTextBytes(b); got != want {
					t.Fatalf("%q: %v, want %v", b, got, want)
				}
			}
		}
	}
}

// TestCharClasses: the tables hold RFC 4975 §9's classes.
func TestCharClasses(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		ident := alnum || bytes.IndexByte([]byte(".-+%="), b) >= 0
		token := alnum || bytes.IndexByte([]byte("-.!%*_+`'~"), b) >= 0
		if isAlnum(b) != alnum || isIdentChar(b) != ident || isTokenChar(b) != token {
			t.Errorf("%q: alnum %v ident %v token %v", b, isAlnum(b), isIdentChar(b), isTokenChar(b))
		}
	}
}
