package filters

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
)

// Compile parses and checks src and builds its matcher. Errors are *Error.
func Compile(src string) (*Filter, error) {
	if strings.TrimSpace(src) == "" {
		return nil, newError(src, 0, "empty expression")
	}
	tree, err := parse(src)
	if err != nil {
		return nil, err
	}
	c := &compiler{src: src}
	root, err := c.compile(tree.Node)
	if err != nil {
		return nil, err
	}
	if root.kind != kBool {
		return nil, c.errAt(startPos(tree.Node), "filter must be a boolean expression, got %s %s", root.kind, describe(tree.Node))
	}
	return &Filter{src: src, uses: c.uses, eval: root.b}, nil
}

// parse runs expr's parser; its errors (syntax, with a position) become *Error.
func parse(src string) (tree *parser.Tree, err error) {
	defer func() {
		if r := recover(); r != nil { // an expr parser bug must not take the config loader down
			tree, err = nil, newError(src, 0, fmt.Sprintf("internal parser error: %v", r))
		}
	}()
	tree, err = parser.Parse(src)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, newError(src, fe.From, fe.Message)
		}
		return nil, newError(src, 0, err.Error())
	}
	return tree, nil
}

type kind uint8

const (
	kBool kind = iota + 1
	kInt
	kString
	kAddr
	kAddrSet // cidr(...)
	kIntSet  // a .. b
	kList    // [ ... ] literal; its use (after "in") decides its element type
)

func (k kind) String() string {
	switch k {
	case kBool:
		return "boolean"
	case kInt:
		return "number"
	case kString:
		return "string"
	case kAddr:
		return "address"
	case kAddrSet:
		return "CIDR set"
	case kIntSet:
		return "range"
	case kList:
		return "list"
	}
	return "?"
}

type fieldDef struct {
	name string
	bit  Fields
	kind kind
	enum []string // allowed string literals, nil: any
	i    func(*Input) int64
	s    func(*Input) string
	a    func(*Input) netip.Addr
}

// fieldDefs is in bit order.
var fieldDefs = []*fieldDef{
	{name: "remote.ip", bit: FieldRemoteIP, kind: kAddr, a: func(in *Input) netip.Addr { return normAddr(in.RemoteIP) }},
	{name: "remote.port", bit: FieldRemotePort, kind: kInt, i: func(in *Input) int64 { return int64(in.RemotePort) }},
	{name: "local.ip", bit: FieldLocalIP, kind: kAddr, a: func(in *Input) netip.Addr { return normAddr(in.LocalIP) }},
	{name: "local.port", bit: FieldLocalPort, kind: kInt, i: func(in *Input) int64 { return int64(in.LocalPort) }},
	{name: "transport", bit: FieldTransport, kind: kString, enum: []string{"msrp", "msrps"}, s: func(in *Input) string { return in.Transport }},
	{name: "tls.subject", bit: FieldTLSSubject, kind: kString, s: func(in *Input) string { return in.TLSSubject }},
	{name: "direction", bit: FieldDirection, kind: kString, enum: []string{"in", "out"}, s: func(in *Input) string { return in.Direction }},
	{name: "event", bit: FieldEvent, kind: kString,
		enum: []string{"accepted", "connect-start", "connected", "connect-failed", "tls-handshake", "closed", "frame"},
		s:    func(in *Input) string { return in.Event }},
	{name: "method", bit: FieldMethod, kind: kString, s: func(in *Input) string { return in.Method }},
	{name: "status", bit: FieldStatus, kind: kInt, i: func(in *Input) int64 { return int64(in.Status) }},
	{name: "session", bit: FieldSession, kind: kString, s: func(in *Input) string { return in.Session }},
	{name: "message_id", bit: FieldMessageID, kind: kString, s: func(in *Input) string { return in.MessageID }},
	{name: "content_type", bit: FieldContentType, kind: kString, s: func(in *Input) string { return in.ContentType }},
	{name: "size", bit: FieldSize, kind: kInt, i: func(in *Input) int64 { return in.Size }},
}

var fieldByName = func() map[string]*fieldDef {
	m := make(map[string]*fieldDef, len(fieldDefs))
	for _, d := range fieldDefs {
		m[d.name] = d
	}
	return m
}()

// normAddr is how addresses are compared: IPv4-mapped IPv6 unmapped, zone dropped.
func normAddr(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		a = a.WithZone("")
	}
	return a
}

// operand is a compiled sub-expression: a getter of its kind, plus its
// value when it is a literal.
type operand struct {
	kind  kind
	node  ast.Node
	field *fieldDef // a direct read of a name
	konst bool

	b func(*Input) bool
	i func(*Input) int64
	s func(*Input) string
	a func(*Input) netip.Addr

	cb    bool
	ci    int64
	cs    string
	ca    netip.Addr
	addrs *addrSet  // kAddrSet
	ints  *intSet   // kIntSet
	elems []operand // kList
}

func constBool(n ast.Node, v bool) operand {
	return operand{kind: kBool, node: n, konst: true, cb: v, b: func(*Input) bool { return v }}
}

func constInt(n ast.Node, v int64) operand {
	return operand{kind: kInt, node: n, konst: true, ci: v, i: func(*Input) int64 { return v }}
}

func constString(n ast.Node, v string) operand {
	return operand{kind: kString, node: n, konst: true, cs: v, s: func(*Input) string { return v }}
}

func constAddr(n ast.Node, v netip.Addr) operand {
	return operand{kind: kAddr, node: n, konst: true, ca: v, a: func(*Input) netip.Addr { return v }}
}

type compiler struct {
	src  string
	uses Fields
}

func (c *compiler) errAt(pos int, format string, args ...any) *Error {
	return newError(c.src, pos, fmt.Sprintf(format, args...))
}

// startPos is where the text of n begins (expr places member and binary
// nodes at their property or operator token).
func startPos(n ast.Node) int {
	if n == nil {
		return 0
	}
	switch n := n.(type) {
	case *ast.BinaryNode:
		return min(startPos(n.Left), n.Location().From)
	case *ast.MemberNode:
		return startPos(n.Node)
	case *ast.ChainNode:
		return startPos(n.Node)
	case *ast.SliceNode:
		return startPos(n.Node)
	case *ast.CallNode:
		return startPos(n.Callee)
	case *ast.ConditionalNode:
		return startPos(n.Cond)
	}
	return n.Location().From
}

// describe renders n for a message, shortened.
func describe(n ast.Node) string {
	if n == nil {
		return ""
	}
	s := n.String()
	if r := []rune(s); len(r) > 40 {
		s = string(r[:37]) + "..."
	}
	return s
}

func (c *compiler) compile(n ast.Node) (operand, error) {
	switch n := n.(type) {
	case *ast.BoolNode:
		return constBool(n, n.Value), nil
	case *ast.IntegerNode:
		return constInt(n, int64(n.Value)), nil
	case *ast.FloatNode:
		v := n.Value
		if v != math.Trunc(v) || v < -(1<<63) || v >= 1<<63 {
			return operand{}, c.errAt(n.Location().From, "only whole numbers are supported in filters, got %v", v)
		}
		return constInt(n, int64(v)), nil
	case *ast.StringNode:
		return constString(n, n.Value), nil
	case *ast.IdentifierNode:
		return c.name(n, n.Value)
	case *ast.MemberNode:
		name, ok := dotted(n)
		if !ok {
			return operand{}, c.errAt(startPos(n), "%s is not supported in filters (names are remote.ip, local.port, tls.subject, ...)", describe(n))
		}
		return c.name(n, name)
	case *ast.UnaryNode:
		return c.unary(n)
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.CallNode:
		return c.call(n)
	case *ast.ArrayNode:
		return c.array(n)
	case *ast.BuiltinNode:
		return operand{}, c.errAt(n.Location().From, "function %s is not supported in filters (functions are cidr and ip)", n.Name)
	case *ast.NilNode:
		return operand{}, c.errAt(n.Location().From, "nil is not supported in filters")
	case *ast.ConditionalNode:
		return operand{}, c.errAt(startPos(n), "conditionals (?: and if/else) are not supported in filters")
	case *ast.VariableDeclaratorNode:
		return operand{}, c.errAt(n.Location().From, "let is not supported in filters")
	case *ast.SequenceNode:
		return operand{}, c.errAt(n.Location().From, "; is not supported in filters")
	case *ast.ChainNode:
		return operand{}, c.errAt(startPos(n), "?. is not supported in filters")
	case *ast.MapNode, *ast.PairNode:
		return operand{}, c.errAt(n.Location().From, "maps are not supported in filters")
	case *ast.SliceNode:
		return operand{}, c.errAt(n.Location().From, "slices are not supported in filters")
	case *ast.BytesNode:
		return operand{}, c.errAt(n.Location().From, "byte strings are not supported in filters")
	case nil:
		return operand{}, c.errAt(0, "empty expression")
	}
	return operand{}, c.errAt(startPos(n), "%s is not supported in filters", describe(n))
}

// dotted returns "a.b.c" for a plain member chain.
func dotted(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		return n.Value, true
	case *ast.MemberNode:
		p, ok := n.Property.(*ast.StringNode)
		if !ok || n.Optional || n.Method {
			return "", false
		}
		base, ok := dotted(n.Node)
		if !ok {
			return "", false
		}
		return base + "." + p.Value, true
	}
	return "", false
}

func (c *compiler) name(n ast.Node, name string) (operand, error) {
	d := fieldByName[name]
	if d == nil {
		switch name {
		case "remote", "local":
			return operand{}, c.errAt(startPos(n), "%s is not a value: use %s.ip or %s.port", name, name, name)
		case "tls":
			return operand{}, c.errAt(startPos(n), "tls is not a value: use tls.subject")
		}
		return operand{}, c.errAt(startPos(n), "unknown name %s", name)
	}
	c.uses |= d.bit
	return operand{kind: d.kind, node: n, field: d, i: d.i, s: d.s, a: d.a}, nil
}

func (c *compiler) unary(n *ast.UnaryNode) (operand, error) {
	x, err := c.compile(n.Node)
	if err != nil {
		return operand{}, err
	}
	switch n.Operator {
	case "!", "not":
		if x.kind != kBool {
			return operand{}, c.errAt(n.Location().From, "%s needs a boolean, got %s %s", n.Operator, x.kind, describe(n.Node))
		}
		f := x.b
		return operand{kind: kBool, node: n, b: func(in *Input) bool { return !f(in) }}, nil
	case "-", "+":
		if x.kind != kInt || !x.konst {
			return operand{}, c.errAt(n.Location().From, "unary %s is only supported on number literals", n.Operator)
		}
		if n.Operator == "-" {
			return constInt(n, -x.ci), nil
		}
		return constInt(n, x.ci), nil
	}
	return operand{}, c.errAt(n.Location().From, "operator %s is not supported in filters", n.Operator)
}

func (c *compiler) binary(n *ast.BinaryNode) (operand, error) {
	switch n.Operator {
	case "&&", "and", "||", "or", "==", "!=", "<", "<=", ">", ">=", "in",
		"contains", "startsWith", "endsWith", "matches", "..":
	default:
		return operand{}, c.errAt(n.Location().From, "operator %s is not supported in filters", n.Operator)
	}
	l, err := c.compile(n.Left)
	if err != nil {
		return operand{}, err
	}
	r, err := c.compile(n.Right)
	if err != nil {
		return operand{}, err
	}
	pos := n.Location().From
	out := operand{kind: kBool, node: n}
	switch n.Operator {
	case "&&", "and", "||", "or":
		if l.kind != kBool || r.kind != kBool {
			bad := l
			if l.kind == kBool {
				bad = r
			}
			return operand{}, c.errAt(pos, "%s needs booleans on both sides, got %s %s", n.Operator, bad.kind, describe(bad.node))
		}
		lf, rf := l.b, r.b
		if n.Operator == "&&" || n.Operator == "and" {
			out.b = func(in *Input) bool { return lf(in) && rf(in) }
		} else {
			out.b = func(in *Input) bool { return lf(in) || rf(in) }
		}
		return out, nil

	case "==", "!=", "<", "<=", ">", ">=":
		return c.compare(n, l, r)

	case "in":
		return c.member(n, l, r)

	case "contains", "startsWith", "endsWith", "matches":
		if l.kind != kString || r.kind != kString {
			return operand{}, c.errAt(pos, "%s needs strings on both sides, got %s %s and %s %s",
				n.Operator, l.kind, describe(l.node), r.kind, describe(r.node))
		}
		out.b = stringOp(n.Operator, l, r)
		if n.Operator == "matches" {
			if !r.konst {
				return operand{}, c.errAt(startPos(r.node), "the pattern of matches must be a string literal")
			}
			re, err := regexp.Compile(r.cs)
			if err != nil {
				return operand{}, c.errAt(startPos(r.node), "bad regexp: %v", err)
			}
			g := l.s
			out.b = func(in *Input) bool { return re.MatchString(g(in)) }
		}
		return out, nil

	case "..":
		if l.kind != kInt || r.kind != kInt || !l.konst || !r.konst {
			return operand{}, c.errAt(pos, ".. needs number literals on both sides")
		}
		if l.ci > r.ci {
			return operand{}, c.errAt(pos, "empty range %d..%d", l.ci, r.ci)
		}
		return operand{kind: kIntSet, node: n, konst: true, ints: &intSet{ranges: [][2]int64{{l.ci, r.ci}}}}, nil
	}
	panic("unreachable")
}

// compare builds ==, !=, <, <=, >, >=.
func (c *compiler) compare(n *ast.BinaryNode, l, r operand) (operand, error) {
	op, pos := n.Operator, n.Location().From
	var err error
	// A string literal against an address is an address literal.
	if l.kind == kAddr && r.kind == kString && r.konst {
		if r, err = c.addrLiteral(r); err != nil {
			return operand{}, err
		}
	} else if r.kind == kAddr && l.kind == kString && l.konst {
		if l, err = c.addrLiteral(l); err != nil {
			return operand{}, err
		}
	}
	if l.kind != r.kind || !(l.kind == kBool || l.kind == kInt || l.kind == kString || l.kind == kAddr) {
		return operand{}, c.errAt(pos, "cannot compare %s %s with %s %s", l.kind, describe(l.node), r.kind, describe(r.node))
	}
	ordered := op != "==" && op != "!="
	if ordered && l.kind != kInt && l.kind != kString {
		return operand{}, c.errAt(pos, "%s needs numbers or strings, got %s", op, l.kind)
	}
	if err := c.checkEnum(l, r); err != nil {
		return operand{}, err
	}
	if err := c.checkEnum(r, l); err != nil {
		return operand{}, err
	}
	// Literal on the right.
	if l.konst && !r.konst {
		l, r = r, l
		op = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
	}
	out := operand{kind: kBool, node: n}
	switch l.kind {
	case kInt:
		out.b = compareOrdered(op, l.i, r.i, r.ci, r.konst)
	case kString:
		out.b = compareOrdered(op, l.s, r.s, r.cs, r.konst)
	case kAddr:
		lf, rf, rc := l.a, r.a, r.ca
		switch {
		case r.konst && op == "==":
			out.b = func(in *Input) bool { return lf(in) == rc }
		case r.konst:
			out.b = func(in *Input) bool { return lf(in) != rc }
		case op == "==":
			out.b = func(in *Input) bool { return lf(in) == rf(in) }
		default:
			out.b = func(in *Input) bool { return lf(in) != rf(in) }
		}
	case kBool:
		lf, rf := l.b, r.b
		if op == "==" {
			out.b = func(in *Input) bool { return lf(in) == rf(in) }
		} else {
			out.b = func(in *Input) bool { return lf(in) != rf(in) }
		}
	}
	return out, nil
}

func compareOrdered[T cmp.Ordered](op string, l, r func(*Input) T, rc T, rConst bool) func(*Input) bool {
	if rConst {
		switch op {
		case "==":
			return func(in *Input) bool { return l(in) == rc }
		case "!=":
			return func(in *Input) bool { return l(in) != rc }
		case "<":
			return func(in *Input) bool { return l(in) < rc }
		case "<=":
			return func(in *Input) bool { return l(in) <= rc }
		case ">":
			return func(in *Input) bool { return l(in) > rc }
		default:
			return func(in *Input) bool { return l(in) >= rc }
		}
	}
	switch op {
	case "==":
		return func(in *Input) bool { return l(in) == r(in) }
	case "!=":
		return func(in *Input) bool { return l(in) != r(in) }
	case "<":
		return func(in *Input) bool { return l(in) < r(in) }
	case "<=":
		return func(in *Input) bool { return l(in) <= r(in) }
	case ">":
		return func(in *Input) bool { return l(in) > r(in) }
	default:
		return func(in *Input) bool { return l(in) >= r(in) }
	}
}

func stringOp(op string, l, r operand) func(*Input) bool {
	lf, rf, rc := l.s, r.s, r.cs
	var f func(s, sub string) bool
	switch op {
	case "contains":
		f = strings.Contains
	case "startsWith":
		f = strings.HasPrefix
	case "endsWith":
		f = strings.HasSuffix
	default:
		return nil // matches: built by the caller
	}
	if r.konst {
		return func(in *Input) bool { return f(lf(in), rc) }
	}
	return func(in *Input) bool { return f(lf(in), rf(in)) }
}

// checkEnum refuses a string literal lit that field f can never hold.
func (c *compiler) checkEnum(f, lit operand) error {
	if f.field == nil || f.field.enum == nil || lit.kind != kString || !lit.konst {
		return nil
	}
	if slices.Contains(f.field.enum, lit.cs) {
		return nil
	}
	return c.errAt(startPos(lit.node), "%s is never %q (values: %s)", f.field.name, lit.cs, strings.Join(f.field.enum, ", "))
}

// addrLiteral turns a string literal into an address literal.
func (c *compiler) addrLiteral(s operand) (operand, error) {
	a, err := netip.ParseAddr(s.cs)
	if err != nil {
		return operand{}, c.errAt(startPos(s.node), "invalid IP address %q: %s", s.cs, netipReason(err))
	}
	return constAddr(s.node, normAddr(a)), nil
}

// netipReason strips the `netip.ParseX("...")` prefix netip puts on its errors.
func netipReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "): "); i >= 0 && (strings.HasPrefix(msg, "netip.") || strings.HasPrefix(msg, "ParseAddr(")) {
		return msg[i+3:]
	}
	return msg
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// member builds "x in set".
func (c *compiler) member(n *ast.BinaryNode, l, r operand) (operand, error) {
	pos := n.Location().From
	out := operand{kind: kBool, node: n}
	switch l.kind {
	case kInt:
		set, err := c.intSetOf(r)
		if err != nil {
			return operand{}, err
		}
		g := l.i
		out.b = func(in *Input) bool { return set.has(g(in)) }
	case kString:
		set, err := c.strSetOf(l, r)
		if err != nil {
			return operand{}, err
		}
		g := l.s
		out.b = func(in *Input) bool { return set.has(g(in)) }
	case kAddr:
		set, err := c.addrSetOf(r)
		if err != nil {
			return operand{}, err
		}
		g := l.a
		out.b = func(in *Input) bool { return set.has(g(in)) }
	default:
		return operand{}, c.errAt(pos, "in needs a number, string or address on the left, got %s %s", l.kind, describe(l.node))
	}
	return out, nil
}

func (c *compiler) notASet(r operand, of string) error {
	return c.errAt(startPos(r.node), "%s %s is not a set of %s (use a list [...]%s)", r.kind, describe(r.node), of,
		map[string]string{"numbers": " or a range a..b", "addresses": ` or cidr("...")`}[of])
}

func (c *compiler) intSetOf(r operand) (*intSet, error) {
	switch r.kind {
	case kIntSet:
		return r.ints, nil
	case kList:
		s := &intSet{}
		for _, e := range r.elems {
			switch e.kind {
			case kInt:
				s.vals = append(s.vals, e.ci)
			case kIntSet:
				s.ranges = append(s.ranges, e.ints.ranges...)
			default:
				return nil, c.errAt(startPos(e.node), "%s %s in a list of numbers", e.kind, describe(e.node))
			}
		}
		slices.Sort(s.vals)
		s.vals = slices.Compact(s.vals)
		return s, nil
	}
	return nil, c.notASet(r, "numbers")
}

func (c *compiler) strSetOf(l, r operand) (*strSet, error) {
	if r.kind != kList {
		return nil, c.notASet(r, "strings")
	}
	s := &strSet{}
	for _, e := range r.elems {
		if e.kind != kString {
			return nil, c.errAt(startPos(e.node), "%s %s in a list of strings", e.kind, describe(e.node))
		}
		if err := c.checkEnum(l, e); err != nil {
			return nil, err
		}
		s.vals = append(s.vals, e.cs)
	}
	slices.Sort(s.vals)
	s.vals = slices.Compact(s.vals)
	if len(s.vals) > linearMax {
		s.m = make(map[string]struct{}, len(s.vals))
		for _, v := range s.vals {
			s.m[v] = struct{}{}
		}
	}
	return s, nil
}

func (c *compiler) addrSetOf(r operand) (*addrSet, error) {
	s := &addrSet{}
	var add func(e operand) error
	add = func(e operand) error {
		switch {
		case e.kind == kAddrSet:
			s.v4 = append(s.v4, e.addrs.v4...)
			s.v6 = append(s.v6, e.addrs.v6...)
		case e.kind == kAddr && e.konst:
			s.add(netip.PrefixFrom(e.ca, e.ca.BitLen()))
		case e.kind == kString && e.konst && strings.Contains(e.cs, "/"):
			p, err := parsePrefix(e.cs)
			if err != nil {
				return c.errAt(startPos(e.node), "invalid CIDR %q: %s", e.cs, netipReason(err))
			}
			s.add(p)
		case e.kind == kString && e.konst:
			a, err := c.addrLiteral(e)
			if err != nil {
				return err
			}
			return add(a)
		default:
			return c.errAt(startPos(e.node), "%s %s in a list of addresses", e.kind, describe(e.node))
		}
		return nil
	}
	switch {
	case r.kind == kList:
		for _, e := range r.elems {
			if err := add(e); err != nil {
				return nil, err
			}
		}
	case r.kind == kAddrSet || r.kind == kString && r.konst:
		if err := add(r); err != nil {
			return nil, err
		}
	default:
		return nil, c.notASet(r, "addresses")
	}
	return s, nil
}

func (c *compiler) call(n *ast.CallNode) (operand, error) {
	id, ok := n.Callee.(*ast.IdentifierNode)
	if !ok {
		return operand{}, c.errAt(startPos(n), "method calls are not supported in filters")
	}
	pos := id.Location().From
	if id.Value != "cidr" && id.Value != "ip" {
		return operand{}, c.errAt(pos, "unknown function %s (functions are cidr and ip)", id.Value)
	}
	lits := make([]*ast.StringNode, 0, len(n.Arguments))
	for _, a := range n.Arguments {
		s, ok := a.(*ast.StringNode)
		if !ok {
			return operand{}, c.errAt(startPos(a), "%s() takes string literals, got %s", id.Value, describe(a))
		}
		lits = append(lits, s)
	}
	switch id.Value {
	case "cidr":
		if len(lits) == 0 {
			return operand{}, c.errAt(pos, `cidr() needs at least one prefix, like cidr("203.0.113.0/24")`)
		}
		s := &addrSet{}
		for _, l := range lits {
			p, err := parsePrefix(l.Value)
			if err != nil {
				return operand{}, c.errAt(l.Location().From, "invalid CIDR %q: %s", l.Value, netipReason(err))
			}
			s.add(p)
		}
		return operand{kind: kAddrSet, node: n, konst: true, addrs: s}, nil
	}
	if len(lits) != 1 {
		return operand{}, c.errAt(pos, `ip() takes one address, like ip("192.0.2.1")`)
	}
	return c.addrLiteral(constString(lits[0], lits[0].Value))
}

func (c *compiler) array(n *ast.ArrayNode) (operand, error) {
	out := operand{kind: kList, node: n, konst: true}
	for _, e := range n.Nodes {
		o, err := c.compile(e)
		if err != nil {
			return operand{}, err
		}
		if !o.konst || o.kind == kBool || o.kind == kList {
			return operand{}, c.errAt(startPos(e), "list elements must be number, string, ip() or cidr() literals, got %s", describe(e))
		}
		out.elems = append(out.elems, o)
	}
	return out, nil
}

// linearMax is the set size up to which a linear scan beats a lookup.
const linearMax = 8

type intSet struct {
	vals   []int64 // sorted
	ranges [][2]int64
}

func (s *intSet) has(v int64) bool {
	if len(s.vals) <= linearMax {
		for _, x := range s.vals {
			if x == v {
				return true
			}
		}
	} else if _, ok := slices.BinarySearch(s.vals, v); ok {
		return true
	}
	for _, r := range s.ranges {
		if v >= r[0] && v <= r[1] {
			return true
		}
	}
	return false
}

type strSet struct {
	vals []string
	m    map[string]struct{} // when len(vals) > linearMax
}

func (s *strSet) has(v string) bool {
	if s.m != nil {
		_, ok := s.m[v]
		return ok
	}
	for _, x := range s.vals {
		if x == v {
			return true
		}
	}
	return false
}

type addrSet struct {
	v4, v6 []netip.Prefix
}

func (s *addrSet) add(p netip.Prefix) {
	if p.Addr().Is4() {
		s.v4 = append(s.v4, p)
	} else {
		s.v6 = append(s.v6, p)
	}
}

func (s *addrSet) has(a netip.Addr) bool {
	ps := s.v6
	if a.Is4() {
		ps = s.v4
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
