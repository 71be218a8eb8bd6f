package filters

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// inputs are the fixed Inputs the tables refer to by name.
var inputs = map[string]*Input{
	"v4": {
		RemoteIP: netip.MustParseAddr("203.0.113.7"), RemotePort: 40000,
		LocalIP: netip.MustParseAddr("192.0.2.10"), LocalPort: 2855,
		Transport: "msrp", Direction: "in", Event: "accepted",
	},
	"v6": {
		RemoteIP: netip.MustParseAddr("2001:db8::1"), RemotePort: 50000,
		LocalIP: netip.MustParseAddr("2001:db8:ffff::2"), LocalPort: 2856,
		Transport: "msrps", Direction: "out", Event: "tls-handshake",
		TLSSubject: "CN=relay.example.com,O=Example",
	},
	"mapped": {
		RemoteIP: netip.MustParseAddr("::ffff:203.0.113.9"), RemotePort: 40001,
		LocalIP: netip.MustParseAddr("::ffff:192.0.2.10"), LocalPort: 2855,
		Transport: "msrp", Direction: "in", Event: "closed",
	},
	"zoned": {
		RemoteIP: netip.MustParseAddr("fe80::1%eth0"), RemotePort: 2855,
		LocalIP: netip.MustParseAddr("fe80::2%eth0"), LocalPort: 2855,
		Transport: "msrp", Direction: "out", Event: "connected",
	},
	"send": {
		RemoteIP: netip.MustParseAddr("198.51.100.20"), RemotePort: 33000,
		LocalIP: netip.MustParseAddr("192.0.2.10"), LocalPort: 2855,
		Transport: "msrps", Direction: "in", Event: "frame", TLSSubject: "CN=alice.example.net",
		Method: "SEND", Session: "abcd1234", MessageID: "msg-42", ContentType: "text/plain", Size: 1200,
	},
	"resp": {
		RemoteIP: netip.MustParseAddr("198.51.100.21"), RemotePort: 2855,
		LocalIP: netip.MustParseAddr("192.0.2.10"), LocalPort: 41000,
		Transport: "msrp", Direction: "out", Event: "frame",
		Status: 200, Session: "abcd1234", Size: 80,
	},
	"report": {
		RemoteIP: netip.MustParseAddr("198.51.100.20"), RemotePort: 33000,
		LocalIP: netip.MustParseAddr("192.0.2.10"), LocalPort: 2855,
		Transport: "msrps", Direction: "out", Event: "frame",
		Method: "REPORT", Session: "zz99", MessageID: "msg-42", Size: 150,
	},
	"zero": {},
}

var inputNames = func() []string {
	var ns []string
	for n := range inputs {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}()

const all = "v4 v6 mapped zoned send resp report zero"

// not returns the inputs not in names.
func not(names string) string {
	var out []string
	for _, n := range inputNames {
		if !slices.Contains(strings.Fields(names), n) {
			out = append(out, n)
		}
	}
	return strings.Join(out, " ")
}

var matchCases = []struct {
	expr  string
	match string // names of the inputs that match; every other must not
}{
	{`true`, all},
	{`false`, ""},

	// IPv4 / IPv6 / mapped / zoned addresses and CIDR membership.
	{`remote.ip in cidr("203.0.113.0/24")`, "v4 mapped"},
	{`remote.ip not in cidr("203.0.113.0/24")`, not("v4 mapped")},
	{`!(remote.ip in cidr("203.0.113.0/24"))`, not("v4 mapped")},
	{`remote.ip in cidr("203.0.113.0/29")`, "v4"},
	{`remote.ip in cidr("203.0.113.5/24")`, "v4 mapped"}, // host bits masked
	{`remote.ip in cidr("2001:db8::/32")`, "v6"},
	{`remote.ip in cidr("2001:db9::/32")`, ""},
	{`remote.ip in cidr("203.0.113.0/24", "2001:db8::/32")`, "v4 v6 mapped"},
	{`remote.ip in cidr("::ffff:203.0.113.0/120")`, "v4 mapped"},
	{`remote.ip in cidr("::ffff:0.0.0.0/96")`, "v4 mapped send resp report"}, // all of IPv4
	{`remote.ip in cidr("0.0.0.0/0")`, "v4 mapped send resp report"},
	{`remote.ip in cidr("::/0")`, "v6 zoned"},
	{`remote.ip in cidr("fe80::/10")`, "zoned"},
	{`remote.ip in "198.51.100.0/24"`, "send resp report"},
	{`remote.ip in ["203.0.113.7", "2001:db8::/48", ip("198.51.100.21"), cidr("10.0.0.0/8")]`, "v4 v6 resp"},
	{`remote.ip == ip("203.0.113.7")`, "v4"},
	{`ip("203.0.113.7") == remote.ip`, "v4"},
	{`remote.ip != ip("203.0.113.7")`, not("v4")},
	{`remote.ip == "203.0.113.9"`, "mapped"},
	{`remote.ip == ip("::ffff:203.0.113.9")`, "mapped"},
	{`remote.ip == ip("2001:db8::1")`, "v6"},
	{`remote.ip == ip("2001:db8:0:0::1")`, "v6"},
	{`remote.ip == ip("fe80::1")`, "zoned"},
	{`remote.ip == ip("fe80::1%eth1")`, "zoned"},
	{`local.ip == ip("192.0.2.10")`, "v4 mapped send resp report"},
	{`local.ip in cidr("2001:db8:ffff::/48")`, "v6"},
	{`remote.ip == local.ip`, "zero"},
	{`remote.ip != local.ip`, not("zero")},

	// Ports and port lists.
	{`local.port == 2855`, "v4 mapped zoned send report"},
	{`local.port != 2855`, "v6 resp zero"},
	{`local.port in [2855, 2856]`, "v4 v6 mapped zoned send report"},
	{`local.port not in [2855, 2856]`, "resp zero"},
	{`local.port in 2850..2860`, "v4 v6 mapped zoned send report"},
	{`local.port in [2856, 41000..41010]`, "v6 resp"},
	{`local.port in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2856]`, "v6"},
	{`remote.port > 40000`, "v6 mapped"},
	{`remote.port >= 40000 && remote.port < 50000`, "v4 mapped"},
	{`remote.port <= 2855`, "zoned resp zero"},
	{`40000 < remote.port`, "v6 mapped"},
	{`2855 >= remote.port`, "zoned resp zero"},
	{`remote.port == local.port`, "zoned zero"},
	{`remote.port == -1`, ""},

	// Connection strings.
	{`transport == "msrps"`, "v6 send report"},
	{`transport in ["msrp"]`, "v4 mapped zoned resp"},
	{`transport != "msrp"`, "v6 send report zero"},
	{`direction == "out"`, "v6 zoned resp report"},
	{`direction == "in" && event != "frame"`, "v4 mapped"},
	{`event == "frame"`, "send resp report"},
	{`event in ["accepted", "closed"]`, "v4 mapped"},
	{`event startsWith "connect"`, "zoned"},
	{`tls.subject contains "CN=relay.example.com"`, "v6"},
	{`tls.subject == ""`, not("v6 send")},
	{`tls.subject matches "(?i)cn=alice"`, "send"},

	// Frame fields.
	{`method == "SEND"`, "send"},
	{`"SEND" == method`, "send"},
	{`method in ["SEND", "REPORT"]`, "send report"},
	{`method in ["A", "B", "C", "D", "E", "F", "G", "H", "I", "REPORT"]`, "report"},
	{`method == ""`, not("send report")},
	{`status == 200`, "resp"},
	{`status in 200..299`, "resp"},
	{`status >= 400`, ""},
	{`status == 0 && event == "frame"`, "send report"},
	{`session == "abcd1234"`, "send resp"},
	{`session startsWith "zz"`, "report"},
	{`message_id == "msg-42"`, "send report"},
	{`message_id endsWith "42"`, "send report"},
	{`content_type == "text/plain"`, "send"},
	{`content_type matches "^text/"`, "send"},
	{`content_type not matches "^text/"`, not("send")},
	{`content_type contains "plain"`, "send"},
	{`content_type not contains "plain"`, not("send")},
	{`size > 1000`, "send"},
	{`size > 1e3`, "send"},
	{`size <= 150 && event == "frame"`, "resp report"},
	{`size in [80, 150]`, "resp report"},
	{`method < "S"`, "report" + " " + not("send report")},
	{`method >= "S"`, "send"},

	// Combinations and precedence.
	{`remote.ip in cidr("198.51.100.0/24") && (method == "SEND" || status == 200)`, "send resp"},
	{`not (transport == "msrp") and event == "frame"`, "send report"},
	{`remote.ip in cidr("203.0.113.0/24") || local.port == 2856 && direction == "out"`, "v4 v6 mapped"},
	{`(remote.ip in cidr("203.0.113.0/24") || local.port == 2856) && direction == "out"`, "v6"},
	{`!!(method == "SEND")`, "send"},
	{`(method == "SEND") == (transport == "msrps")`, not("v6 report")},
	{`(method == "SEND") != true`, not("send")},
	{`2855 in [2855]`, all},
	{"remote.ip in cidr(\"203.0.113.0/24\")\n  && local.port in [2855, 2856]", "v4 mapped"},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", tc.expr, err)
			continue
		}
		want := strings.Fields(tc.match)
		for _, name := range inputNames {
			if got := f.Match(inputs[name]); got != slices.Contains(want, name) {
				t.Errorf("%q on %s: got %v, want %v", tc.expr, name, got, !got)
			}
		}
	}
}

// TestSetEdges checks the edges of sets, one field at a time: every value
// in in must match, every value in out must not.
func TestSetEdges(t *testing.T) {
	ports := []struct {
		expr    string
		in, out []uint16
	}{
		// A range includes both ends.
		{`local.port in 5060..5061`, []uint16{5060, 5061}, []uint16{0, 5059, 5062, 65535}},
		{`local.port not in 5060..5061`, []uint16{0, 5059, 5062}, []uint16{5060, 5061}},
		{`local.port in [2855, 5060..5061]`, []uint16{2855, 5060, 5061}, []uint16{2854, 2856, 5059, 5062}},
		{`local.port in 0..65535`, []uint16{0, 1, 65534, 65535}, nil},
		// More than linearMax numbers, unsorted and with a duplicate: the
		// compiled set is searched by bisection, so it must be sorted.
		{`local.port in [9000, 65535, 5000, 2, 8999, 1, 7000, 4, 6000, 9000, 3]`,
			[]uint16{1, 2, 3, 4, 5000, 6000, 7000, 8999, 9000, 65535},
			[]uint16{0, 5, 4999, 8998, 9001, 65534}},
		{`local.port in [65535, 9, 8, 7, 6, 5, 4, 3, 2, 1, 10..20]`,
			[]uint16{1, 5, 9, 10, 20, 65535}, []uint16{0, 21, 65534}},
	}
	for _, tc := range ports {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tc.expr, err)
		}
		for _, p := range tc.in {
			if !f.Match(&Input{LocalPort: p}) {
				t.Errorf("%q does not match port %d", tc.expr, p)
			}
		}
		for _, p := range tc.out {
			if f.Match(&Input{LocalPort: p}) {
				t.Errorf("%q matches port %d", tc.expr, p)
			}
		}
	}

	addrs := []struct {
		expr    string
		in, out []string
	}{
		// ::ffff:0.0.0.0/96 holds the IPv4-mapped addresses: all of IPv4,
		// which remote.ip holds unmapped.
		{`remote.ip in cidr("::ffff:0.0.0.0/96")`,
			[]string{"0.0.0.0", "203.0.113.7", "255.255.255.255", "::ffff:198.51.100.1"},
			[]string{"::", "::1", "2001:db8::1", "::fffe:c000:201", "64:ff9b::c000:201"}},
		{`remote.ip in ["::ffff:0.0.0.0/96"]`,
			[]string{"0.0.0.0", "203.0.113.7", "::ffff:10.1.2.3"}, []string{"::1", "2001:db8::1"}},
		{`remote.ip in cidr("::ffff:192.0.2.0/120")`,
			[]string{"192.0.2.0", "192.0.2.255", "::ffff:192.0.2.9"},
			[]string{"192.0.1.255", "192.0.3.0", "::c000:209"}},
		{`remote.ip in cidr("::ffff:192.0.2.1/128")`,
			[]string{"192.0.2.1", "::ffff:192.0.2.1"}, []string{"192.0.2.0", "192.0.2.2"}},
		{`remote.ip in cidr("::/0")`, []string{"::", "2001:db8::1"}, []string{"0.0.0.0", "192.0.2.1"}},
	}
	for _, tc := range addrs {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tc.expr, err)
		}
		for _, a := range tc.in {
			if !f.Match(&Input{RemoteIP: netip.MustParseAddr(a)}) {
				t.Errorf("%q does not match %s", tc.expr, a)
			}
		}
		for _, a := range tc.out {
			if f.Match(&Input{RemoteIP: netip.MustParseAddr(a)}) {
				t.Errorf("%q matches %s", tc.expr, a)
			}
		}
	}
}

func TestNilFilter(t *testing.T) {
	var f *Filter
	if !f.Match(inputs["v4"]) || f.Uses() != 0 || f.String() != "true" {
		t.Fatal("nil filter must match everything and use nothing")
	}
}

var errorCases = []struct {
	expr      string
	line, col int
	msg       string // substring
}{
	// Unknown names.
	{`remote.iq == 1`, 1, 1, "unknown name remote.iq"},
	{`remote.port == 1 && locl.port == 2`, 1, 21, "unknown name locl.port"},
	{`foo == 1`, 1, 1, "unknown name foo"},
	{`remote == 1`, 1, 1, "remote is not a value: use remote.ip or remote.port"},
	{`tls == ""`, 1, 1, "use tls.subject"},
	{`method == "" || bar(1)`, 1, 17, "unknown function bar"},

	// Bad literals.
	{`remote.ip in cidr("203.0.113.0/33")`, 1, 19, `invalid CIDR "203.0.113.0/33": prefix length out of range`},
	{`remote.ip in cidr("2001:db8::/129")`, 1, 19, `invalid CIDR "2001:db8::/129"`},
	{`remote.ip in cidr("10.0.0.0/8", "banana")`, 1, 33, `invalid CIDR "banana"`},
	{"remote.port == 2855 &&\n  remote.ip in cidr(\"10.0.0/8\")", 2, 21, `invalid CIDR "10.0.0/8"`},
	{`remote.ip == ip("1.2.3")`, 1, 17, `invalid IP address "1.2.3"`},
	{`remote.ip == "not-an-ip"`, 1, 14, `invalid IP address "not-an-ip"`},
	{`remote.ip in ["10.0.0.0/8", "x/y"]`, 1, 29, `invalid CIDR "x/y"`},
	{`remote.ip in cidr()`, 1, 14, "cidr() needs at least one prefix"},
	{`remote.ip == ip("1.2.3.4", "1.2.3.5")`, 1, 14, "ip() takes one address"},
	{`remote.ip in cidr(method)`, 1, 19, "cidr() takes string literals"},
	{`method matches "("`, 1, 16, "bad regexp"},
	{`method matches session`, 1, 16, "pattern of matches must be a string literal"},
	{`size > 1.5`, 1, 8, "only whole numbers"},
	{`local.port in 10..1`, 1, 17, "empty range"},

	// Syntax errors.
	{`remote.port ==`, 1, 14, "unexpected token EOF"},
	{`(remote.port == 1`, 1, 17, "unexpected token EOF"},
	{`method == "SEND`, 1, 16, "literal not terminated"},
	{`remote.port == 1 &&& method == ""`, 1, 20, "unexpected token"},
	{"true &&\n\n   (", 3, 4, "unexpected"},

	// Not boolean.
	{`remote.port`, 1, 1, "must be a boolean expression, got number remote.port"},
	{`method`, 1, 1, "got string method"},
	{`"x"`, 1, 1, "must be a boolean"},
	{`1`, 1, 1, "must be a boolean"},
	{`cidr("10.0.0.0/8")`, 1, 1, "must be a boolean"},
	{`[1, 2]`, 1, 1, "must be a boolean"},
	{`remote.ip`, 1, 1, "got address remote.ip"},
	{`  ip("::1")`, 1, 3, "got address"},

	// Types.
	{`remote.port == "2855"`, 1, 13, `cannot compare number remote.port with string "2855"`},
	{`method == 1`, 1, 8, "cannot compare string method with number 1"},
	{`remote.ip < ip("1.2.3.4")`, 1, 11, "< needs numbers or strings"},
	{`remote.ip == 1`, 1, 11, "cannot compare address"},
	{`method && true`, 1, 8, "&& needs booleans on both sides, got string method"},
	{`true || size`, 1, 6, "got number size"},
	{`!method`, 1, 1, "! needs a boolean"},
	{`not size`, 1, 1, "not needs a boolean"},
	{`local.port in ["a"]`, 1, 16, `string "a" in a list of numbers`},
	{`method in [1]`, 1, 12, "number 1 in a list of strings"},
	{`remote.ip in [1]`, 1, 15, "in a list of addresses"},
	{`method in "SEND"`, 1, 11, "is not a set of strings"},
	{`local.port in 2855`, 1, 15, "is not a set of numbers"},
	{`remote.ip in method`, 1, 14, "is not a set of addresses"},
	{`[1] in [1]`, 1, 5, "in needs a number, string or address"},
	{`local.port in [size]`, 1, 16, "list elements must be"},
	{`method contains 1`, 1, 8, "contains needs strings"},
	{`size matches "1"`, 1, 6, "matches needs strings"},
	{`remote.ip == cidr("10.0.0.0/8")`, 1, 11, "cannot compare"},
	{`-size == 1`, 1, 1, "only supported on number literals"},

	// Enumerated values.
	{`event == "frame-in"`, 1, 10, `event is never "frame-in"`},
	{`transport == "tls"`, 1, 14, `transport is never "tls"`},
	{`"inbound" == direction`, 1, 1, `direction is never "inbound"`},
	{`direction in ["in", "inbound"]`, 1, 21, `direction is never "inbound"`},

	// Outside the filter language.
	{`size + 1 > 2`, 1, 6, "operator + is not supported"},
	{`size % 2 == 0`, 1, 6, "operator % is not supported"},
	{`len(method) > 0`, 1, 1, "function len is not supported"},
	{`upper(method) == "SEND"`, 1, 1, "function upper is not supported"},
	{`method == nil`, 1, 11, "nil is not supported"},
	{`let x = 1; x == 1`, 1, 5, "let is not supported"},
	{`remote.port == 1 ? true : false`, 1, 1, "conditionals"},
	{`if true { true } else { false }`, 1, 4, "conditionals"},
	{`{a: 1} == {a: 1}`, 1, 1, "maps are not supported"},
	{`method[0:1] == "S"`, 1, 7, "slices are not supported"},
	{`method[0] == "S"`, 1, 1, "is not supported in filters"},
	{`remote?.ip == ip("::1")`, 1, 1, "?. is not supported"},
	{`remote.ip.foo()`, 1, 1, "method calls are not supported"},
	{`any([1], # == 1)`, 1, 1, "function any is not supported"},
	{`true; true`, 1, 1, "; is not supported"},
	{`(method ?? "x") == "x"`, 1, 9, "operator ?? is not supported"},
	{`b"x" == b"x"`, 1, 1, "byte strings are not supported"},

	// Empty.
	{``, 1, 1, "empty expression"},
	{"  \n ", 1, 1, "empty expression"},
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range errorCases {
		f, err := Compile(tc.expr)
		if err == nil {
			t.Errorf("Compile(%q) = %v, want an error", tc.expr, f)
			continue
		}
		var fe *Error
		if !errors.As(fmt.Errorf("rule %q: %w", "r", err), &fe) {
			t.Errorf("Compile(%q): %T is not an *Error", tc.expr, err)
			continue
		}
		if fe.Expr != tc.expr || fe.Line != tc.line || fe.Column != tc.col || !strings.Contains(fe.Msg, tc.msg) {
			t.Errorf("Compile(%q):\n got line %d, column %d: %s\nwant line %d, column %d: …%s…",
				tc.expr, fe.Line, fe.Column, fe.Msg, tc.line, tc.col, tc.msg)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	_, err := Compile(`remote.port == 2855 && remote.iq == 1`)
	want := `filter "remote.port == 2855 && remote.iq == 1": line 1, column 24: unknown name remote.iq`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}

func TestUses(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		uses     Fields
		connOnly bool
	}{
		{`true`, 0, true},
		{`remote.ip in cidr("203.0.113.0/24") && local.port in [2855, 2856]`, FieldRemoteIP | FieldLocalPort, true},
		{`remote.port == 1 || local.ip == ip("::1")`, FieldRemotePort | FieldLocalIP, true},
		{`transport == "msrps" && tls.subject contains "CN=x"`, FieldTransport | FieldTLSSubject, true},
		{`method == "SEND"`, FieldMethod, false},
		{`direction == "in"`, FieldDirection, false},
		{`event == "accepted" && remote.ip in cidr("::/0")`, FieldEvent | FieldRemoteIP, false},
		{`status == 200 || size > 10`, FieldStatus | FieldSize, false},
		{`session == "a" && message_id == "b" && content_type == "c"`, FieldSession | FieldMessageID | FieldContentType, false},
		{`remote.ip == ip("::1") && remote.port == 1 && local.ip == ip("::1") && local.port == 1 &&
		  transport == "msrp" && tls.subject == "" && direction == "in" && event == "frame" && method == "" &&
		  status == 0 && session == "" && message_id == "" && content_type == "" && size == 0`,
			FieldRemoteIP | FieldRemotePort | FieldLocalIP | FieldLocalPort | FieldTransport | FieldTLSSubject |
				FieldDirection | FieldEvent | FieldMethod | FieldStatus | FieldSession | FieldMessageID |
				FieldContentType | FieldSize, false},
	} {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Uses(); got != tc.uses || got.ConnectionOnly() != tc.connOnly {
			t.Errorf("%q: Uses() = %s (connection only %v), want %s (%v)", tc.expr, got, got.ConnectionOnly(), tc.uses, tc.connOnly)
		}
	}
	if s := (FieldRemoteIP | FieldLocalPort | FieldSize).String(); s != "remote.ip|local.port|size" {
		t.Errorf("Fields.String() = %q", s)
	}
}

func TestConcurrentMatch(t *testing.T) {
	f, err := Compile(`remote.ip in cidr("203.0.113.0/24", "2001:db8::/32") && local.port in [2855, 2856] ||
		method in ["SEND", "REPORT"] && content_type matches "^text/"`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range inputNames {
		want[n] = f.Match(inputs[n])
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 64 {
		wg.Go(func() {
			in := new(Input)
			for i := range 2000 {
				n := inputNames[(g+i)%len(inputNames)]
				*in = *inputs[n]
				if f.Match(in) != want[n] {
					errs <- n
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for n := range errs {
		t.Errorf("concurrent Match on %s disagrees", n)
	}
}

// allocCases are representative expressions that must not allocate.
var allocCases = []struct{ name, expr, input string }{
	{"cidr_and_port_list", `remote.ip in cidr("203.0.113.0/24") && local.port in [2855, 2856]`, "v4"},
	{"cidr_v6_mapped", `remote.ip in cidr("203.0.113.0/24", "2001:db8::/32")`, "mapped"},
	{"ip_eq_zoned", `remote.ip == ip("fe80::1")`, "zoned"},
	{"method_eq", `method == "SEND"`, "send"},
	{"method_list", `method in ["SEND", "REPORT"]`, "report"},
	{"string_set_map", `session in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "abcd1234"]`, "send"},
	{"regexp", `content_type matches "^text/(plain|html)"`, "send"},
	{"tls_contains", `tls.subject contains "relay.example.com"`, "v6"},
	{"five_clause", `remote.ip in cidr("198.51.100.0/24") && local.port in [2855, 2856] && transport == "msrps" && method in ["SEND", "REPORT"] && size < 65536`, "send"},
}

func TestZeroAllocs(t *testing.T) {
	for _, tc := range allocCases {
		f, err := Compile(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		in := inputs[tc.input]
		if !f.Match(in) {
			t.Errorf("%s: does not match %s", tc.name, tc.input)
		}
		if n := testing.AllocsPerRun(1000, func() { f.Match(in) }); n != 0 {
			t.Errorf("%s: %v allocs per Match, want 0", tc.name, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	for _, tc := range allocCases {
		f, err := Compile(tc.expr)
		if err != nil {
			b.Fatal(err)
		}
		in := inputs[tc.input]
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Match(in)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(allocCases[len(allocCases)-1].expr); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzCompile(f *testing.F) {
	for _, tc := range matchCases {
		f.Add(tc.expr)
	}
	for _, tc := range errorCases {
		f.Add(tc.expr)
	}
	f.Fuzz(func(t *testing.T, src string) {
		flt, err := Compile(src)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || fe.Line < 1 || fe.Column < 1 || fe.Msg == "" || flt != nil {
				t.Fatalf("Compile(%q): bad error %#v", src, err)
			}
			_ = err.Error()
			return
		}
		_ = flt.Uses().ConnectionOnly()
		for _, n := range inputNames {
			flt.Match(inputs[n])
		}
	})
}
