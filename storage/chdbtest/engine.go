//go:build chdb

package chdbtest

// Build with -tags chdb and CHDB_LIB_PATH naming libchdb.so (npm package
// @chdb/lib-linux-x64-gnu@26.7.3-stable.1; .ci/chdb installs it): chdb-go loads the library in its
// init and panics when it is missing, which is why this package sits behind a build tag.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/chdb-io/chdb-go/chdb"
)

// Engine is the process's one chDB session (chdb-go keeps a single session per process).
// Its methods serialise statements: query parameters are session state.
type Engine struct {
	mu  sync.Mutex
	s   *chdb.Session
	dir string
}

// Open starts the session with its data in dir. Call it once per test binary (TestMain) and Close
// it at the end.
func Open(dir string) (*Engine, error) {
	if p := os.Getenv("CHDB_LIB_PATH"); p == "" {
		return nil, fmt.Errorf("CHDB_LIB_PATH is not set (run bash .ci/chdb to install libchdb.so)")
	}
	s, err := chdb.NewSession(dir)
	if err != nil {
		return nil, fmt.Errorf("chdb session in %s: %w", dir, err)
	}
	return &Engine{s: s, dir: dir}, nil
}

// Close ends the session (its data dir is the caller's).
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.s.Close()
}

// Exec runs one statement and discards its output.
func (e *Engine) Exec(query string) error {
	_, err := e.run(query, nil, "TabSeparated")
	return err
}

// Query runs one statement with parameters ({name:Type} in query; values in ClickHouse's escaped
// text form, as clickhouse-go sends them) and returns its output in format.
func (e *Engine) Query(query string, params map[string]string, format string) (string, error) {
	return e.run(query, params, format)
}

// Rows runs one statement with parameters and decodes its JSONEachRow output, numbers as
// json.Number (64-bit integers arrive quoted, as strings).
func (e *Engine) Rows(query string, params map[string]string) ([]map[string]any, error) {
	out, err := e.run(query, params, "JSONEachRow")
	if err != nil {
		return nil, err
	}
	var rows []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", out, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (e *Engine) run(query string, params map[string]string, format string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(params) > 0 {
		// SET param_<name> = '<value>' is how a session binds query parameters; the literal's
		// content is the parameter's text, the same text clickhouse-go sends on the wire.
		names := make([]string, 0, len(params))
		for n := range params {
			names = append(names, n)
		}
		sort.Strings(names)
		var set bytes.Buffer
		set.WriteString("SET ")
		for i, n := range names {
			if i > 0 {
				set.WriteString(", ")
			}
			fmt.Fprintf(&set, "param_%s = %s", n, quote(params[n]))
		}
		if _, err := e.s.Query(set.String(), "TabSeparated"); err != nil {
			return "", fmt.Errorf("%s: %w", set.String(), err)
		}
	}
	r, err := e.s.Query(query, format)
	if err != nil {
		return "", fmt.Errorf("%s: %w", firstLine(query), err)
	}
	defer r.Free()
	if err := r.Error(); err != nil {
		return "", fmt.Errorf("%s: %w", firstLine(query), err)
	}
	return r.String(), nil
}

// quote is a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
