// Package faultfs makes disk faults for tests: a small tmpfs that fills up,
// a folder made read-only under a running writer. Linux, as root.
package faultfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/msrpscope/msrpscope/internal/testenv"
)

// Tmpfs mounts a tmpfs of size bytes on a new folder and returns it; a
// Cleanup unmounts it. Where mounting is not allowed (not root, no
// CAP_SYS_ADMIN, not Linux) the test ends through testenv.Missing.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := mountTmpfs(dir, size); err != nil {
		testenv.Missing(tb, fmt.Sprintf("cannot mount a tmpfs (needs root on Linux): %v", err))
	}
	tb.Cleanup(func() { _ = unmount(dir) })
	return dir
}

// ReadOnly makes dir read-only by mounting it on itself read-only: creating,
// removing or opening files for writing there fails with EROFS, while files
// opened before keep being writable (as when an operator remounts a disk
// read-only or a permission changes under a running writer). The returned
// func makes it writable again; a Cleanup calls it too.
func ReadOnly(tb testing.TB, dir string) (undo func()) {
	tb.Helper()
	if err := bindReadOnly(dir); err != nil {
		testenv.Missing(tb, fmt.Sprintf("cannot mount %s read-only (needs root on Linux): %v", dir, err))
	}
	done := false
	undo = func() {
		if !done {
			done = true
			_ = unmount(dir)
		}
	}
	tb.Cleanup(undo)
	return undo
}
