package relay_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/relay"
)

// relay.outbound.insecure_skip_verify is never silent: the relay logs a WARN when it
// starts and one (rate-limited) for each msrps next hop it connects to without
// verification (issue 15, defect 6). A verifying relay logs neither.
func TestOutboundInsecureWarns(t *testing.T) {
	pki := newPKI(t)
	for _, insecure := range []bool{false, true} {
		t.Run(map[bool]string{false: "verified", true: "insecure"}[insecure], func(t *testing.T) {
			listen := []relay.Listen{{Transport: "msrps", Addr: "127.0.0.1:0", Cert: pki.certFile, Key: pki.keyFile}}
			logs := &syncBuffer{}
			r1 := startRelay(t, func(c *relay.Config) {
				c.Listen = listen
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
				c.Outbound = relay.Outbound{CAFile: pki.caFile, InsecureSkipVerify: insecure}
				if insecure {
					c.Outbound.CAFile = "" // nothing could verify R2
				}
			})
			r2 := startRelay(t, func(c *relay.Config) { c.Listen = listen })
			a, _ := tlsClient(t, r1, pki, "alice")
			// R1 dials R2 (msrps) before it forwards the AUTH: its line is written by now.
			if _, _, err := a.AuthPath(ctxT(t), []string{r1.uri, r2.uri}, "alice", testUsers["alice"], 0); err != nil {
				t.Fatalf("AUTH at R2 through R1: %v", err)
			}
			out := logs.String()
			for _, w := range []string{
				"level=WARN msg=\"relay.outbound.insecure_skip_verify is on",     // start
				"level=WARN msg=\"msrps next hop connected without verification", // the dial
			} {
				if strings.Contains(out, w) != insecure {
					t.Errorf("insecure %v: log has %q: %v, want %v\n%s", insecure, w, !insecure, insecure, out)
				}
			}
		})
	}
}
