//go:build chdb

package chdbtest

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

// engine is the test binary's chDB session.
var engine *Engine

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chdbtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	engine, err = Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	engine.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if err := engine.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
}

func rows(t *testing.T, query string, params map[string]string) []map[string]any {
	t.Helper()
	r, err := engine.Rows(query, params)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
