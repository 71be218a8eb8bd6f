// Package testenv decides what a test does when something it needs is not
// here (a program, a server, a privilege): it skips, or fails when CI is set.
package testenv

import (
	"os"
	"testing"
)

// CI reports whether the tests run in CI (the CI environment variable is
// set), where every test must run.
func CI() bool { return os.Getenv("CI") != "" }

// Missing ends the test for lack of what, which names the missing part and
// how to get it (e.g. "tshark not found (apt-get install tshark)"): a skip,
// or a failure when CI is set. bash .ci/test installs what it can first.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if CI() {
		tb.Fatalf("%s, and CI is set: this test must run in CI", what)
		return
	}
	tb.Skipf("%s; set CI=1 to make this a failure", what)
}
