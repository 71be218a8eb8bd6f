package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// decodeYAML decodes one YAML document strictly (unknown keys are errors)
// into v, over what v already holds. Every error names the line and column
// and quotes the source line. An empty document leaves v as it is.
func decodeYAML(src []byte, v any) error {
	f, err := parser.ParseBytes(src, 0)
	if err != nil {
		return yamlError(src, nil, err)
	}
	empty := true
	for _, d := range f.Docs {
		if d.Body != nil {
			empty = false
		}
	}
	if empty {
		return nil // nothing but comments: the decoder would zero v
	}
	dec := yaml.NewDecoder(bytes.NewReader(src), yaml.Strict(),
		yaml.CustomUnmarshaler[time.Duration](unmarshalDuration))
	err = dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return yamlError(src, nil, err)
}

// badScalar is a scalar the decoder could not convert; the go-yaml decoder
// reports such errors without a position, so yamlError finds it in the source.
type badScalar struct {
	text string
	err  error
}

func (b *badScalar) Error() string { return b.err.Error() }

func unmarshalDuration(d *time.Duration, b []byte) error {
	s := strings.TrimSpace(string(b))
	s = strings.Trim(s, `"'`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return &badScalar{text: strings.TrimSpace(string(b)), err: fmt.Errorf("invalid duration %q (examples: 500ms, 10s, 1h)", s)}
	}
	*d = v
	return nil
}

// yamlError renders err with its position: go-yaml's own errors carry one;
// a badScalar is located by its text in root (or in src parsed, when root
// is nil), and src, when known, is quoted at that line.
func yamlError(src []byte, root ast.Node, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		return errors.New(strings.TrimRight(yaml.FormatError(err, false, src != nil), "\n"))
	}
	var bs *badScalar
	if !errors.As(err, &bs) {
		return err
	}
	var roots []ast.Node
	if root != nil {
		roots = append(roots, root)
	} else if f, perr := parser.ParseBytes(src, 0); perr == nil {
		for _, d := range f.Docs {
			roots = append(roots, d)
		}
	}
	for _, r := range roots {
		if line, col, ok := findScalar(r, bs.text); ok {
			if src == nil {
				return fmt.Errorf("[%d:%d] %w", line, col, bs.err)
			}
			return fmt.Errorf("[%d:%d] %w\n%s", line, col, bs.err, sourceLine(src, line, col))
		}
	}
	return bs.err
}

// findScalar returns the position of the first scalar under root whose
// source text is s.
func findScalar(root ast.Node, s string) (line, col int, ok bool) {
	ast.Walk(visitFunc(func(n ast.Node) bool {
		if ok {
			return false
		}
		if _, scalar := n.(ast.ScalarNode); scalar {
			if tk := n.GetToken(); tk != nil && tk.Position != nil && (tk.Value == s || strings.TrimSpace(tk.Origin) == s) {
				line, col, ok = tk.Position.Line, tk.Position.Column, true
				return false
			}
		}
		return true
	}), root)
	return line, col, ok
}

type visitFunc func(ast.Node) bool

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if f(n) {
		return f
	}
	return nil
}

// sourceLine quotes line (1-based) of src with a caret under col.
func sourceLine(src []byte, line, col int) string {
	lines := strings.Split(string(src), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	return fmt.Sprintf(">  %d | %s\n%s^", line, lines[line-1], strings.Repeat(" ", len(fmt.Sprintf(">  %d | ", line))+max(col-1, 0)))
}

// yamlErrorAt is an error at n's position.
func yamlErrorAt(n ast.Node, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return fmt.Errorf("[%d:%d] %s", tk.Position.Line, tk.Position.Column, msg)
	}
	return errors.New(msg)
}
