package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
)

func TestRunAgainstKamailio(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{})
	t.Setenv("MSRPSCOPE_DEMO_PASSWORD", kamailio.Password)
	var out, errOut bytes.Buffer
	code := run([]string{"-relay", k.URI(), "-user", kamailio.User, "-pairs", "2", "-window", "8",
		"-size", "200", "-count", "100", "-timeout", "10s", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	s := out.String()
	i := strings.LastIndex(strings.TrimRight(s, "\n"), "\n")
	var rep load.Report
	if err := json.Unmarshal([]byte(s[:i]), &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, s)
	}
	summary := s[i+1:]
	if rep.Frames != 200 || rep.Messages != 200 || len(rep.Errors) != 0 || !strings.HasPrefix(summary, "msrpload: 2 pairs") {
		t.Fatalf("report %+v, summary %q", rep, summary)
	}
	t.Log(strings.TrimSpace(summary))
}

func TestRunBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"-nosuch"}, 2},
		{"bad relay URI", []string{"-relay", "http://x", "-count", "1"}, 1},
		{"msrps without TLS material is fine, bad CA is not", []string{"-relay", "msrps://127.0.0.1:1;tcp", "-ca", "/nonexistent"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != tc.want {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.want, errOut.String())
			}
		})
	}
}
