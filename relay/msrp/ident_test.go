package msrp

import (
	"strings"
	"testing"
)

// RFC 4975 §9: ident = ALPHANUM 3*31ident-char, so 4 to 32 characters;
// transact-id and Message-ID are idents.
func TestValidIdent(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"abc", false},
		{"abcd", true},
		{tid32, true},
		{strings.Repeat("a", 31), true},
		{strings.Repeat("a", 32), true},
		{strings.Repeat("a", 33), false},
		{tid32 + "x", false},
		{"9.-+%=", true},
		{".abc", false},
		{"-abc", false},
		{"ab_c", false},
		{"ab c", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := ValidIdent([]byte(tc.in)); got != tc.want {
			t.Errorf("ValidIdent(%q) (%d chars) = %v, want %v", tc.in, len(tc.in), got, tc.want)
		}
	}
}
