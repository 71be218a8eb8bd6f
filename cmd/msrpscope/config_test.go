package main

import (
	"context"
	"strings"
	"testing"
)

// stopWhenListening ends a run as soon as it logs that it listens.
type stopWhenListening struct {
	cancel context.CancelFunc
	buf    strings.Builder
}

func (w *stopWhenListening) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "msg=listening") {
		w.cancel()
	}
	return len(p), nil
}

// Every configuration goes through -check-config and through start-up:
// both must give the same verdict and the same message (one validation
// path). A good configuration starts, listens and is stopped.
func TestConfigTable(t *testing.T) {
	t.Chdir(t.TempDir()) // the default pcap sink writes to "."
	users := writeFile(t, "users.yaml", "users:\n  - name: alice\n    password: pw\n")
	token := writeFile(t, "token", "  t0ken\n")
	empty := writeFile(t, "empty", " \n")
	const listen = "listen:\n  - {transport: msrp, addr: \"127.0.0.1:0\"}\n"
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; none: the configuration is good
	}{
		{"defaults", listen, nil},
		{"only comments", listen + "# nothing else\n", nil},
		{"users file", listen + "relay:\n  auth:\n    users_file: " + users + "\n", nil},
		{"hep sink with a spool", listen + "sinks:\n  homer: {type: hep, addr: \"127.0.0.1:9060\", transport: tcp, spool_dir: spool}\ntracing:\n  rules:\n    - {name: all, frames: true, to: [homer]}\n", nil},
		{"clickhouse sink", listen + "sinks:\n  ch: {type: clickhouse, addr: \"127.0.0.1:1\", spool_dir: chspool, batch_age: 2s}\ntracing:\n  rules:\n    - {name: all, frames: true, to: [ch]}\n", nil},
		{"clickhouse sink, addresses listed", listen + "sinks:\n  ch: {type: clickhouse, addr: [\"127.0.0.1:1\", \"[::1]:1\"]}\ntracing:\n  rules:\n    - {name: all, frames: true, to: [ch]}\n", nil},
		{"hep sink", listen + "sinks:\n  homer: {type: hep, addr: \"127.0.0.1:9060\"}\ntracing:\n  rules:\n    - {name: all, frames: true, to: [homer]}\n", nil},

		// YAML itself: line and column, and the source line quoted.
		{"unclosed brace on line 2", "log: {level: info}\nrelay: {uris: [\n", []string{"[2:", "relay: {uris: ["}},
		{"unknown key", listen + "relay:\n  auht: {}\n", []string{`[4:3] unknown field "auht"`, "auht: {}"}},
		{"bad duration", listen + "relay:\n  limits: {idle_timeout: soon}\n", []string{`[4:26] invalid duration "soon"`, "idle_timeout: soon"}},
		{"number expected", listen + "relay:\n  limits:\n    write_queue: many\n", []string{"[5:18]", "write_queue"}},
		{"tab indentation", listen + "log:\n\tlevel: info\n", []string{"[4:"}},

		// The relay's own checks.
		{"bad transport", "listen:\n  - {transport: udp, addr: \"127.0.0.1:0\"}\n", []string{"transport must be msrp or msrps"}},
		{"msrps without cert", "listen:\n  - {transport: msrps, addr: \"127.0.0.1:0\"}\n", []string{"msrps needs cert and key"}},
		{"unspecified address without uri", "listen:\n  - {transport: msrp, addr: \"0.0.0.0:0\"}\n", []string{"needs an explicit uri"}},
		{"listen without port", "listen:\n  - {transport: msrp, addr: \"127.0.0.1\"}\n", []string{`listen "127.0.0.1"`}},
		{"missing users file", listen + "relay:\n  auth:\n    users_file: /nonexistent/users.yaml\n", []string{"users file", "no such file"}},
		{"bad expires", listen + "relay:\n  auth: {expires: 10, min_expires: 60}\n", []string{"min_expires <= expires"}},
		{"bad log level", listen + "log: {level: loud}\n", []string{"log.level"}},

		// The tracer's: rules, sinks, filters.
		{"rule without name", listen + "tracing:\n  rules:\n    - {frames: true, to: [pcap]}\n", []string{"rule 1: no name"}},
		{"rule with neither events nor frames", listen + "tracing:\n  rules:\n    - {name: r, to: [pcap]}\n", []string{`rule "r": neither events nor frames`}},
		{"rule without sinks", listen + "tracing:\n  rules:\n    - {name: r, frames: true}\n", []string{`rule "r": no sinks`}},
		{"rule naming an unknown sink", listen + "tracing:\n  rules:\n    - {name: r, frames: true, to: [homer]}\n", []string{`unknown sink "homer"`}},
		{"bad filter expression", listen + "tracing:\n  rules:\n    - {name: r, match: \"remote.port ==\", frames: true, to: [pcap]}\n", []string{`rule "r"`}},
		{"unknown sink key", listen + "sinks:\n  pcap:\n    type: pcap\n    dri: /tmp\n", []string{`sink "pcap"`, `[6:5] unknown field "dri"`}},
		{"unknown sink type", listen + "sinks:\n  pcap: {type: kafka}\n", []string{`unknown type "kafka"`}},
		{"hep addr without port", listen + "sinks:\n  pcap: {type: hep, addr: 127.0.0.1}\n", []string{"want host:port"}},
		{"hep bad transport", listen + "sinks:\n  pcap: {type: hep, addr: \"127.0.0.1:9060\", transport: sctp}\n", []string{"udp, tcp or tls"}},
		{"hep spool over udp", listen + "sinks:\n  pcap: {type: hep, addr: \"127.0.0.1:9060\", spool_dir: /tmp/x}\n", []string{"spool_dir needs transport tcp or tls"}},
		{"clickhouse without addr", listen + "sinks:\n  pcap: {type: clickhouse}\n", []string{"clickhouse sink needs addr"}},
		{"clickhouse addr without port", listen + "sinks:\n  pcap: {type: clickhouse, addr: [\"127.0.0.1\"]}\n", []string{"want host:port"}},
		{"clickhouse unknown key", listen + "sinks:\n  pcap: {type: clickhouse, addr: \"127.0.0.1:9000\", batchrows: 5}\n", []string{"[4:52] unknown field \"batchrows\""}},
		{"clickhouse replicated without cluster", listen + "sinks:\n  pcap: {type: clickhouse, addr: \"127.0.0.1:9000\", replicated: true}\n", []string{"replicated needs cluster"}},
		{"bad sink duration", listen + "sinks:\n  pcap: {type: pcap, max_file_age: soon}\n", []string{`sink "pcap"`, `[4:36] invalid duration "soon"`}},
		{"sink not a mapping", listen + "sinks:\n  pcap: 5\n", []string{"[4:9]", "mapping"}},

		// The admin API and the metrics: the same checks offline as at start.
		{"admin off", listen + "admin: {addr: \"\"}\nmetrics: {enabled: false}\n", nil},
		{"admin token file", listen + "admin: {addr: \"127.0.0.1:0\", token_file: " + token + "}\n", nil},
		{"admin not loopback without token", listen + "admin: {addr: \"0.0.0.0:0\"}\n", []string{"0.0.0.0:0 is not a loopback address", "admin.token"}},
		{"admin all interfaces without token", listen + "admin: {addr: \":8055\"}\n", []string{"is not a loopback address"}},
		{"admin token twice", listen + "admin: {addr: \"127.0.0.1:0\", token: x, token_file: " + token + "}\n", []string{"not both"}},
		{"admin empty token file", listen + "admin: {addr: \"127.0.0.1:0\", token_file: " + empty + "}\n", []string{"is empty"}},
		{"admin tls cert without key", listen + "admin: {addr: \"127.0.0.1:0\", tls_cert: x.pem}\n", []string{"both admin.tls_cert and admin.tls_key"}},
		{"admin addr without port", listen + "admin: {addr: \"127.0.0.1\"}\n", []string{"admin.addr"}},
		{"metrics bad otlp endpoint", listen + "metrics: {otlp_endpoint: \"collector:4318\"}\n", []string{"metrics.otlp_endpoint"}},
		{"metrics unknown key", listen + "metrics: {otlp_url: x}\n", []string{`unknown field "otlp_url"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := tc.yaml
			if tc.want == nil && !strings.Contains(yaml, "admin:") {
				// Tests run many relays at once: the admin API on a free port, never 8055.
				yaml += "admin: {addr: \"127.0.0.1:0\"}\n"
			}
			file := writeFile(t, "c.yaml", yaml)
			var out strings.Builder
			checkErr := run(context.Background(), []string{"-check-config", file}, &out)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			startErr := run(ctx, []string{"-config", file}, &stopWhenListening{cancel: cancel})
			if tc.want == nil {
				if checkErr != nil || !strings.Contains(out.String(), "configuration OK") {
					t.Fatalf("-check-config: err %v, output %q", checkErr, out.String())
				}
				if startErr != nil {
					t.Fatalf("start: %v", startErr)
				}
				return
			}
			for _, w := range tc.want {
				if checkErr == nil || !strings.Contains(checkErr.Error(), w) {
					t.Errorf("-check-config: err %v, want one containing %q", checkErr, w)
				}
			}
			if startErr == nil || checkErr == nil || startErr.Error() != checkErr.Error() {
				t.Errorf("start: err %v, want the same as -check-config's", startErr)
			}
		})
	}
}
