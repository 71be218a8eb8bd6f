package deploy

import (
	"strings"
	"testing"
)

// mutation changes one file of the deployment: old must occur exactly once.
type mutation struct {
	file     string // compose, env, msrpscope, prometheus
	old, new string
}

func (m mutation) apply(t *testing.T, d deployment) deployment {
	t.Helper()
	p := map[string]*[]byte{"compose": &d.compose, "env": &d.envExample, "msrpscope": &d.msrpscope, "prometheus": &d.prometheus}[m.file]
	if p == nil {
		t.Fatalf("unknown file %q", m.file)
	}
	if n := strings.Count(string(*p), m.old); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want once", m.file, m.old, n)
	}
	*p = []byte(strings.Replace(string(*p), m.old, m.new, 1))
	return d
}

// TestComposeChecksCatch breaks the deployment one way at a time: each check must see it.
func TestComposeChecksCatch(t *testing.T) {
	tests := []struct {
		name string
		m    mutation
		want string
	}{
		{"latest tag", mutation{"compose", "postgres:17.11-alpine", "postgres:latest"}, `tag "latest" is not a version`},
		{"no tag", mutation{"compose", "grafana/grafana:12.2.0", "grafana/grafana"}, "no tag"},
		{"branch tag", mutation{"compose", "homer-app:1.5.21", "homer-app:master"}, "is not a version"},
		{"image and build", mutation{"compose", "    build:\n      context: .", "    image: msrpscope:1.0.0\n    build:\n      context: ."}, "both build and image"},
		{"unknown key", mutation{"compose", "    restart: unless-stopped\n\n  grafana:", "    restrat: unless-stopped\n\n  grafana:"}, `unknown field "restrat"`},
		{"missing bind source", mutation{"compose", "./internal/deploy/homer/init-user-db.sh:", "./internal/deploy/homer/init.sh:"}, "does not exist"},
		{"host path", mutation{"compose", "./internal/deploy/homer/init-user-db.sh:", "/opt/homer/init-user-db.sh:"}, "outside the repository"},
		{"undeclared volume", mutation{"compose", "- clickhouse-data:/var/lib/clickhouse", "- ch-data:/var/lib/clickhouse"}, "undeclared volume ch-data"},
		{"undeclared secret", mutation{"compose", "- msrpscope_admin_token    #", "- admin_token    #"}, "undeclared secret admin_token"},
		{"unknown dependency", mutation{"compose", "      heplify-server:\n        condition: service_started", "      heplify:\n        condition: service_started"}, "unknown service heplify"},
		{"healthy without healthcheck", mutation{"compose", "      prometheus:\n        condition: service_started", "      prometheus:\n        condition: service_healthy"}, "has no healthcheck"},
		{"variable not in env", mutation{"env", "GRAFANA_ADMIN_PASSWORD=change-me-grafana\n", ""}, "${GRAFANA_ADMIN_PASSWORD:?"},
		{"secret variable not in env", mutation{"env", "MSRPSCOPE_ADMIN_TOKEN=change-me-admin-token\n", ""}, "variable MSRPSCOPE_ADMIN_TOKEN not in .env.example"},
		{"plain variable not in env", mutation{"compose", "HEPLIFYSERVER_DBDROPDAYS: \"7\"", "HEPLIFYSERVER_DBDROPDAYS: \"$DROP_DAYS\""}, "$DROP_DAYS: no default"},
		{"unused env", mutation{"env", "HOMER_ADMIN_PASSWORD=change-me-homer\n", "HOMER_ADMIN_PASSWORD=change-me-homer\nUNUSED=1\n"}, "defines UNUSED"},
		{"port collision", mutation{"compose", `"3000:3000"`, `"2855:3000"`}, "host port 2855/tcp published by"},
		{"admin on every address", mutation{"compose", `"127.0.0.1:8055:8055"`, `"8055:8055"`}, "want 127.0.0.1 only"},
		{"extra published port", mutation{"compose", `      - "9080:80"`, `      - "9080:80"` + "\n" + `      - "5432:5432"`}, "homer-app publishes"},
		{"listener not published", mutation{"msrpscope", `addr: "0.0.0.0:2855"`, `addr: "0.0.0.0:2857"`}, "listens on 2857, which is not published"},
		{"config not read", mutation{"compose", `"-config", "/etc/msrpscope/msrpscope.yaml"`, `"-config", "/etc/msrpscope/other.yaml"`}, "does not read the mounted config"},
		{"hep port", mutation{"msrpscope", `addr: "heplify-server:9060"`, `addr: "heplify-server:9061"`}, "listens on HEPLIFYSERVER_HEPADDR"},
		{"hep host", mutation{"msrpscope", `addr: "heplify-server:9060"`, `addr: "homer:9060"`}, `no service "homer"`},
		{"hep type", mutation{"msrpscope", "proto_type: 100", "proto_type: 89"}, "proto_type 89"},
		{"no hep rule", mutation{"msrpscope", "to: [homer, clickhouse]", "to: [clickhouse]"}, "no rule sends to a hep sink"},
		{"clickhouse addr", mutation{"msrpscope", `addr: "clickhouse:9000"`, `addr: "clickhouse:8123"`}, "want clickhouse:9000"},
		{"clickhouse user", mutation{"msrpscope", "username: default", "username: msrpscope"}, "CLICKHOUSE_USER"},
		{"clickhouse default user closed", mutation{"compose", "      CLICKHOUSE_SKIP_USER_SETUP: \"1\"", "      CLICKHOUSE_SKIP_USER_SETUP: \"0\""}, "limited to localhost"},
		{"clickhouse password unsent", mutation{"compose", "      CLICKHOUSE_DB: msrpscope\n", "      CLICKHOUSE_DB: msrpscope\n      CLICKHOUSE_PASSWORD: ${HOMER_DB_PASSWORD:?x}\n"}, "password_file \"\" is not a secret"},
		{"clickhouse password sent", mutation{"msrpscope", "username: default", "username: default\n    password: x"}, "the server has none"},
		{"spool off volume", mutation{"msrpscope", "spool_dir: /var/lib/msrpscope/spool/clickhouse", "spool_dir: /tmp/spool"}, "not on a named volume"},
		{"token in file", mutation{"msrpscope", "token_file: /run/secrets/msrpscope_admin_token", "token: secret"}, "admin.token in a committed file"},
		{"metrics auth", mutation{"msrpscope", "metrics_auth: false", "metrics_auth: true"}, "metrics_auth is on"},
		{"admin loopback", mutation{"msrpscope", `addr: "0.0.0.0:8055"`, `addr: "127.0.0.1:8055"`}, "cannot reach it"},
		{"scrape target", mutation{"prometheus", `"msrpscope:8055"`, `"msrpscope:9999"`}, "scrapes no msrpscope:8055/metrics"},
		{"prometheus config", mutation{"compose", `"--config.file=/etc/prometheus/prometheus.yml"`, `"--config.file=/etc/prometheus/p.yml"`}, "prometheus does not read"},
		{"homer db host", mutation{"compose", "DB_HOST: homer-db", "DB_HOST: db"}, "homer-app DB_HOST"},
		{"homer db password", mutation{"compose", "DB_PASS: ${HOMER_DB_PASSWORD:?", "DB_PASS: ${HOMER_ADMIN_PASSWORD:?"}, "database password"},
		{"heplify driver", mutation{"compose", "HEPLIFYSERVER_DBDRIVER: postgres", "HEPLIFYSERVER_DBDRIVER: mysql"}, "want postgres homer7"},
	}
	base := loadDeployment(t)
	if errs := runComposeChecks(base); len(errs) > 0 {
		t.Fatalf("the deployment itself fails: %v", errs)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := runComposeChecks(tt.m.apply(t, base))
			for _, e := range errs {
				if strings.Contains(e.Error(), tt.want) {
					return
				}
			}
			t.Errorf("no error containing %q; got %v", tt.want, errs)
		})
	}
}

// Good dashboards files as the dashboards engineer agreed to write them (issue 13).
var goodDashboards = map[string]string{
	"dashboards/provisioning/datasources/msrpscope.yaml": `apiVersion: 1
datasources:
  - name: ClickHouse
    type: grafana-clickhouse-datasource
    uid: msrpscope-clickhouse
    jsonData: {host: clickhouse, port: 9000, protocol: native, defaultDatabase: msrpscope}
  - name: Prometheus
    type: prometheus
    uid: msrpscope-prometheus
    url: http://prometheus:9090
`,
	"dashboards/provisioning/dashboards/msrpscope.yaml": `apiVersion: 1
providers:
  - name: msrpscope
    type: file
    options: {path: /var/lib/grafana/dashboards}
`,
	"dashboards/json/overview.json": `{}`,
}

// TestDashboardsChecks runs the checks that apply once dashboards/ exists, on stand-in files:
// this branch has no dashboards/ (written in parallel), so TestCompose skips them.
func TestDashboardsChecks(t *testing.T) {
	with := func(change map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range goodDashboards {
			m[k] = v
		}
		for k, v := range change {
			if v == "" {
				delete(m, k)
				continue
			}
			m[k] = v
		}
		return m
	}
	ds := "dashboards/provisioning/datasources/msrpscope.yaml"
	dp := "dashboards/provisioning/dashboards/msrpscope.yaml"
	tests := []struct {
		name  string
		files map[string]string
		want  string // "" for no error
	}{
		{"good", with(nil), ""},
		{"clickhouse host", with(map[string]string{ds: strings.Replace(goodDashboards[ds], "host: clickhouse", "host: ch", 1)}), "want a compose service on 9000"},
		{"clickhouse port", with(map[string]string{ds: strings.Replace(goodDashboards[ds], "port: 9000", "port: 8123", 1)}), "want a compose service on 9000"},
		{"prometheus url", with(map[string]string{ds: strings.Replace(goodDashboards[ds], "prometheus:9090", "localhost:9090", 1)}), "want http://prometheus:9090"},
		{"clickhouse user", with(map[string]string{ds: strings.Replace(goodDashboards[ds], "protocol: native", "protocol: native, username: grafana", 1)}), "username grafana, the server's user is default"},
		{"uid", with(map[string]string{ds: strings.Replace(goodDashboards[ds], "uid: msrpscope-prometheus", "uid: prom", 1)}), "no uid msrpscope-prometheus"},
		{"provider path", with(map[string]string{dp: strings.Replace(goodDashboards[dp], "/var/lib/grafana/dashboards", "/dashboards", 1)}), "none reads /var/lib/grafana/dashboards"},
		{"no datasources file", with(map[string]string{ds: ""}), "msrpscope.yaml"},
		{"no dashboards", with(map[string]string{"dashboards/json/overview.json": "", "dashboards/json/README": "x"}), "has no *.json"},
	}
	base := loadDeployment(t)
	if _, ok := base.exists("dashboards"); ok {
		t.Log("dashboards/ exists: TestCompose checks the real files too")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := runComposeChecks(base.withTree("dashboards", tt.files))
			if tt.want == "" {
				if len(errs) > 0 {
					t.Fatalf("unexpected errors: %v", errs)
				}
				return
			}
			for _, e := range errs {
				if strings.Contains(e.Error(), tt.want) {
					return
				}
			}
			t.Errorf("no error containing %q; got %v", tt.want, errs)
		})
	}
}
