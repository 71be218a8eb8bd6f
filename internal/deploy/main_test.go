package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binDir string
	binMu  sync.Mutex
	built  = map[string]error{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// msrpscopeBinary builds ./cmd/msrpscope once per test run: the checks run the daemon's own
// configuration check, not a copy of it.
func msrpscopeBinary(t *testing.T) string { return buildCmd(t, "msrpscope") }

// buildCmd builds ./cmd/<name> statically (as the Dockerfile does), once per test run.
func buildCmd(t *testing.T, name string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	path := filepath.Join(binDir, name)
	err, done := built[name]
	if !done {
		cmd := exec.Command("go", "build", "-o", path, "./cmd/"+name)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, e, out)
		}
		built[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}
