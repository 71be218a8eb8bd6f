package storage

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestDDLGolden pins the generated DDL of every variant.
func TestDDLGolden(t *testing.T) {
	for _, fl := range []Flavor{Modern, Old} {
		for _, top := range []Topology{Single, Cluster, Replicated} {
			s := Schema{Database: "msrpscope", Cluster: "traces", Flavor: fl, Topology: top, RetentionDays: 30}
			name := "ddl-" + fl.String() + "-" + top.String() + ".sql"
			t.Run(name, func(t *testing.T) {
				got := s.DDL()
				path := filepath.Join("testdata", name)
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run with -update to create)", err)
				}
				if got != string(want) {
					t.Errorf("DDL of %s differs from %s (run with -update after checking the change):\n%s", name, path, got)
				}
			})
		}
	}
}

func TestDDLRules(t *testing.T) {
	for _, fl := range []Flavor{Modern, Old} {
		for _, top := range []Topology{Single, Cluster, Replicated} {
			s := Schema{Database: "msrpscope", Cluster: "traces", Flavor: fl, Topology: top, RetentionDays: 7}
			ddl := s.DDL()
			for _, st := range append(s.Bootstrap(), stepStmts(s)...) {
				if !strings.Contains(st, "IF NOT EXISTS") {
					t.Errorf("%s/%s: statement not idempotent: %s", fl, top, firstLine(st))
				}
				if top != Single && strings.HasPrefix(st, "CREATE") && !strings.Contains(st, "ON CLUSTER traces") &&
					!strings.Contains(st, TableSchemaMigrations) {
					t.Errorf("%s/%s: statement without ON CLUSTER: %s", fl, top, firstLine(st))
				}
			}
			for _, bad := range []string{"DateTime64", "IPv6", "LowCardinality", "CODEC", "TTL"} {
				if fl == Old && strings.Contains(ddl, bad) {
					t.Errorf("old DDL (%s) uses %s, which 18.16 refuses", top, bad)
				}
				if fl == Modern && !strings.Contains(ddl, bad) {
					t.Errorf("modern DDL (%s) lacks %s", top, bad)
				}
			}
			if got := strings.Contains(ddl, "Replicated"); got != (top == Replicated) {
				t.Errorf("%s/%s: Replicated engines present = %v", fl, top, got)
			}
		}
	}
}

func stepStmts(s Schema) []string {
	var out []string
	for _, st := range s.Steps() {
		out = append(out, st.Stmts...)
	}
	return out
}

func TestStepsAppendOnly(t *testing.T) {
	s := Schema{Database: "d", Flavor: Old, Topology: Single}
	for i, st := range s.Steps() {
		if st.Version != i+1 {
			t.Errorf("step %d has version %d: versions are 1, 2, 3, ... in order", i, st.Version)
		}
	}
}

func TestFlavorOf(t *testing.T) {
	for v, want := range map[string]Flavor{"18.16.1": Old, "21.8.15.7": Old, "22.3.1": Modern, "26.7.3.1": Modern, "": Old} {
		if got := FlavorOf(v); got != want {
			t.Errorf("FlavorOf(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestInsertColumnLists(t *testing.T) {
	old := Schema{Database: "msrpscope", Flavor: Old, Topology: Single}
	if got := old.InsertFrames(); !strings.HasPrefix(got, "INSERT INTO msrpscope.frames (ts, ts_us, direction,") {
		t.Errorf("old frames insert: %s", got)
	}
	mod := Schema{Database: "msrpscope", Flavor: Modern, Topology: Cluster, Cluster: "c"}
	if got := mod.InsertEvents(); !strings.HasPrefix(got, "INSERT INTO msrpscope.events (ts, event, reason,") {
		t.Errorf("modern events insert: %s", got)
	}
	// Every insert column has a Go column in both flavors.
	var fc frameCols
	var ec eventCols
	for _, s := range []Schema{old, mod} {
		for _, c := range s.FrameColumns() {
			if fc.column(c, s.Flavor == Old) == nil {
				t.Errorf("frames column %s has no Go column", c)
			}
		}
		for _, c := range s.EventColumns() {
			if ec.column(c, s.Flavor == Old) == nil {
				t.Errorf("events column %s has no Go column", c)
			}
		}
	}
}
