package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recTB records what Missing does instead of ending the test.
type recTB struct {
	testing.TB
	fatal, skip string
}

func (r *recTB) Helper()                        {}
func (r *recTB) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recTB) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

// Missing skips naming what to install; with CI set it fails instead.
func TestMissing(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recTB{TB: t}
		Missing(r, "frob not found (apt-get install frob)")
		got, other := r.skip, r.fatal
		if ci != "" {
			got, other = r.fatal, r.skip
		}
		if other != "" || !strings.Contains(got, "apt-get install frob") {
			t.Fatalf("CI=%q: skip %q, fatal %q", ci, r.skip, r.fatal)
		}
	}
}
