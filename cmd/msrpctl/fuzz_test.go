package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The command line parser: any arguments give positional arguments and
// flags, or an error; never a panic. Every argument that is not a flag or
// a flag's value comes back, in order.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{
		"trace\x00on\x00--session\x00abc\x00--for\x0010m\x00--to\x00homer,pcap",
		"trace\x00ip\x00127.0.0.1/32\x00--since\x001h\x00--json",
		"--\x00-x\x00y", "sessions\x00--all\x00--limit\x001\x00--cursor\x00c", "-n\x00x", "--for", "--to\x00,,,",
		"trace\x00top\x00-n\x00-3\x00--until\x002026-12-01T10:00:00Z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		o := &options{timeout: time.Second}
		var q traceFlags
		fs := newFlags(o)
		q.define(fs)
		pos, err := parseInterleaved(fs, args)
		if err != nil {
			return
		}
		// The positional arguments are the arguments in order, less flags.
		i := 0
		for _, p := range pos {
			for i < len(args) && args[i] != p {
				i++
			}
			if i == len(args) {
				t.Fatalf("positional %q not among the arguments %q in order", p, args)
			}
			i++
		}
		now := time.Now()
		for _, a := range args {
			_, _ = timeArg("since", a, now)
			if p, err := prefixArg(a); err == nil && !p.IsValid() {
				t.Fatalf("prefixArg(%q) = invalid prefix without an error", a)
			}
		}
	})
}

// orderedObject reads any JSON without panicking; for an object it returns
// every member once per occurrence, in order.
func FuzzOrderedObject(f *testing.F) {
	for _, s := range []string{`{"Connections": 12, "Sessions": 9, "x": "y", "n": null, "o": {"a": [1]}}`, `{}`, `[]`, `{"a":`, `{"a":1}{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kv, err := orderedObject(b)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return // a valid first object followed by junk: the table shows the object
		}
		seen := map[string]bool{}
		for _, p := range kv {
			if _, ok := m[p[0]]; !ok {
				t.Fatalf("member %q not in %s", p[0], b)
			}
			seen[p[0]] = true
		}
		if len(seen) != len(m) {
			t.Fatalf("%d distinct members, want %d, in %s", len(seen), len(m), b)
		}
	})
}
