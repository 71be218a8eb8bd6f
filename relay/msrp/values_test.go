package msrp

import (
	"errors"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
		err  bool
	}{
		{in: "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp", want: URI{Host: "biloxi.example.com", Port: 12763, SessionID: "kjhd37s2s20w2a", Transport: "tcp"}},
		{in: "MSRPS://alice@intra.example.com;tcp", want: URI{Secure: true, User: "alice", Host: "intra.example.com", Transport: "tcp"}},
		{in: "msrp://[2001:DB8::1]:2855/s+=/x;tcp;foo=bar;baz", want: URI{Host: "2001:DB8::1", Port: 2855, SessionID: "s+=/x", Transport: "tcp", Params: "foo=bar;baz"}},
		{in: "msrp://[::1]/abc;ws", want: URI{Host: "::1", SessionID: "abc", Transport: "ws"}},
		{in: "msrp://10.0.0.1:5000", want: URI{Host: "10.0.0.1", Port: 5000}},
		{in: "msrp://u%40x:pw@h.example:1/s;tcp", want: URI{User: "u%40x:pw", Host: "h.example", Port: 1, SessionID: "s", Transport: "tcp"}},
		{in: "sip://h;tcp", err: true},
		{in: "msrp://;tcp", err: true},
		{in: "msrp://h:0;tcp", err: true},
		{in: "msrp://h:65536;tcp", err: true},
		{in: "msrp://h:12a;tcp", err: true},
		{in: "msrp://h:;tcp", err: true},
		{in: "msrp://[2001:db8::1;tcp", err: true},
		{in: "msrp://[10.0.0.1]:1;tcp", err: true},
		{in: "msrp://[fe80::1%25eth0]:1;tcp", err: true},
		{in: "msrp://[::1]x;tcp", err: true},
		{in: "msrp://h/;tcp", err: true},
		{in: "msrp://h/a b;tcp", err: true},
		{in: "msrp://h;", err: true},
		{in: "msrp://h;t-cp", err: true},
		{in: "msrp://h;tcp;;x", err: true},
		{in: "msrp://h;tcp;a=", err: true},
		{in: "msrp://@h;tcp", err: true},
		{in: "msrp://h o/s;tcp", err: true},
	}
	for _, tc := range tests {
		got, err := ParseURI(tc.in)
		if tc.err {
			if !errors.Is(err, ErrURI) {
				t.Errorf("ParseURI(%q) = %+v, %v; want ErrURI", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		again, err := ParseURI(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q via %q: %+v, %v", tc.in, got.String(), again, err)
		}
	}
}

func TestURIEqual(t *testing.T) {
	tests := []struct {
		a, b string
		eq   bool
	}{
		{"msrp://h.example.com:1/s;tcp", "MSRP://H.Example.COM:1/s;TCP", true},
		{"msrp://alice@h:1/s;tcp", "msrp://bob@h:1/s;tcp", true},                 // userinfo ignored
		{"msrp://h:1/s;tcp", "msrp://h:1/S;tcp", false},                          // session-id case-sensitive
		{"msrp://h:1/s;tcp", "msrp://h:1;tcp", false},                            // session-id absent
		{"msrp://h:1/s;tcp", "msrp://h/s;tcp", false},                            // explicit port vs none
		{"msrp://h:1/s;tcp", "msrps://h:1/s;tcp", false},                         // scheme
		{"msrp://h:1/s;tcp", "msrp://h:1/s;ws", false},                           // transport
		{"msrp://h:1/s;tcp;a=b", "msrp://h:1/s;tcp", true},                       // other params ignored
		{"msrp://[2001:db8::1]:1/s;tcp", "msrp://[2001:DB8:0::1]:1/s;tcp", true}, // IPv6 as address
		{"msrp://[::ffff:10.0.0.1]:1/s;tcp", "msrp://10.0.0.1:1/s;tcp", false},   // different families
		{"msrp://h%2Dx:1/s;tcp", "msrp://h-x:1/s;tcp", true},                     // pct-decoded unreserved
		{"msrp://10.0.0.1:1/s;tcp", "msrp://010.0.0.1:1/s;tcp", false},           // not an IP: string compare
	}
	for _, tc := range tests {
		a, err1 := ParseURI(tc.a)
		b, err2 := ParseURI(tc.b)
		if err1 != nil || err2 != nil {
			t.Fatalf("parse: %v %v", err1, err2)
		}
		if a.Equal(b) != tc.eq || b.Equal(a) != tc.eq {
			t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, a.Equal(b), tc.eq)
		}
	}
	a, _ := ParseURI("msrp://relay:2855/abc;tcp")
	b, _ := ParseURI("msrp://RELAY:2855/other;tcp")
	if !a.SameAuthority(b) || a.Equal(b) {
		t.Error("SameAuthority must ignore the session-id, Equal must not")
	}
}

func TestPath(t *testing.T) {
	p, err := ParsePath("msrps://a:1/x;tcp  msrp://[::1]:2/y;tcp\tmsrp://c;tcp")
	if err != nil || len(p) != 3 || p[1].Host != "::1" {
		t.Fatalf("ParsePath: %+v, %v", p, err)
	}
	if got := p.String(); got != "msrps://a:1/x;tcp msrp://[::1]:2/y;tcp msrp://c;tcp" {
		t.Fatalf("String = %q", got)
	}
	if _, err := ParsePath("  "); !errors.Is(err, ErrURI) {
		t.Fatalf("empty path: %v", err)
	}
	if _, err := ParsePath("msrp://a;tcp bogus"); !errors.Is(err, ErrURI) {
		t.Fatalf("bad element: %v", err)
	}
	first, rest := SplitPath([]byte(" msrp://a;tcp  msrp://b;tcp "))
	if string(first) != "msrp://a;tcp" || string(rest) != "msrp://b;tcp" {
		t.Fatalf("SplitPath = %q, %q", first, rest)
	}
}

func TestByteRange(t *testing.T) {
	tests := []struct {
		in   string
		want ByteRange
		err  bool
	}{
		{in: "1-25/25", want: ByteRange{1, 25, 25}},
		{in: "1-*/*", want: ByteRange{1, Unknown, Unknown}},
		{in: "26-*/100", want: ByteRange{26, Unknown, 100}},
		{in: "1-0/0", want: ByteRange{1, 0, 0}},
		{in: "138-148/148", want: ByteRange{138, 148, 148}},
		{in: "5-8/*", want: ByteRange{5, 8, Unknown}},
		{in: "0-1/1", err: true},
		{in: "3-1/9", err: true},
		{in: "1-10/9", err: true},
		{in: "11-*/9", err: true},
		{in: "*-1/1", err: true},
		{in: "1-1", err: true},
		{in: "1-/1", err: true},
		{in: "1-1/", err: true},
		{in: "-1/1", err: true},
		{in: "1 -1/1", err: true},
		{in: "1-1/1/1", err: true},
		{in: "1-9999999999999999999/*", err: true},
		{in: "", err: true},
	}
	for _, tc := range tests {
		got, err := ParseByteRange([]byte(tc.in))
		if tc.err {
			if !errors.Is(err, ErrValue) {
				t.Errorf("ParseByteRange(%q) = %+v, %v; want ErrValue", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParseByteRange(%q) = %+v (%q), %v; want %+v", tc.in, got, got.String(), err, tc.want)
		}
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Status
		err  bool
	}{
		{in: "000 200 OK", want: Status{0, 200, "OK"}},
		{in: "000 481", want: Status{0, 481, ""}},
		{in: "000 413 Stop sending, please", want: Status{0, 413, "Stop sending, please"}},
		{in: "000 20 OK", err: true},
		{in: "000 2000", err: true},
		{in: "00 200", err: true},
		{in: "000 099", err: true},
		{in: "000-200", err: true},
		{in: "000 200 a\x01", err: true},
	} {
		got, err := ParseStatus([]byte(tc.in))
		if tc.err {
			if !errors.Is(err, ErrValue) {
				t.Errorf("ParseStatus(%q) = %+v, %v; want ErrValue", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParseStatus(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestReportsAndExpires(t *testing.T) {
	if m, err := ParseSuccessReport(nil); m != ReportNo || err != nil {
		t.Error("absent Success-Report must mean no")
	}
	if m, err := ParseFailureReport(nil); m != ReportYes || err != nil {
		t.Error("absent Failure-Report must mean yes")
	}
	if m, err := ParseFailureReport([]byte("Partial")); m != ReportPartial || err != nil {
		t.Error("Failure-Report: partial")
	}
	if _, err := ParseSuccessReport([]byte("partial")); !errors.Is(err, ErrValue) {
		t.Error("Success-Report: partial must be refused")
	}
	if _, err := ParseFailureReport([]byte("maybe")); !errors.Is(err, ErrValue) {
		t.Error("Failure-Report: maybe must be refused")
	}
	for in, want := range map[string]uint32{"0": 0, "1800": 1800, "4294967295": 4294967295} {
		if got, err := ParseExpires([]byte(in)); got != want || err != nil {
			t.Errorf("ParseExpires(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1.5", "4294967296", "99999999999", " 1"} {
		if _, err := ParseExpires([]byte(in)); !errors.Is(err, ErrValue) {
			t.Errorf("ParseExpires(%q) accepted", in)
		}
	}
}

func TestDigest(t *testing.T) {
	d, err := ParseDigest([]byte(`Digest realm="intra.example.com", qop="auth",  nonce="dcd9\"8b\\7"` + "\t" + `, stale=true,algorithm=SHA-256`))
	if err != nil {
		t.Fatal(err)
	}
	want := Digest{{"realm", "intra.example.com", true}, {"qop", "auth", true}, {"nonce", `dcd9"8b\7`, true},
		{"stale", "true", false}, {"algorithm", "SHA-256", false}}
	if len(d) != len(want) {
		t.Fatalf("got %+v", d)
	}
	for i := range d {
		if d[i] != want[i] {
			t.Fatalf("param %d = %+v, want %+v", i, d[i], want[i])
		}
	}
	if v, ok := d.Get("NONCE"); !ok || v != `dcd9"8b\7` {
		t.Fatalf("Get(NONCE) = %q %v", v, ok)
	}
	text := AppendDigest(nil, "Digest", d...)
	again, err := ParseDigest(text)
	if err != nil || len(again) != len(d) || again[2] != d[2] {
		t.Fatalf("round trip via %q: %+v, %v", text, again, err)
	}
	ai, err := ParseAuthenticationInfo([]byte(`nextnonce="40f2",rspauth="7327", cnonce="0a4f113b", nc=00000001, qop=auth`))
	if err != nil || len(ai) != 5 {
		t.Fatalf("Authentication-Info: %+v %v", ai, err)
	}
	for _, bad := range []string{
		`Basic realm="x"`, `Digest`, `Digest realm`, `Digest realm=`, `Digest realm="x`, `Digest realm="x\`,
		`Digest realm="x" nonce="y"`, `Digest realm="a", realm="b"`, `Digest =x`, `Digest realm="a` + "\x01" + `"`,
		`Digest realm="a",`,
	} {
		if _, err := ParseDigest([]byte(bad)); !errors.Is(err, ErrValue) {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
}
