package deploy

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// root is the repository root, relative to this package's folder (go test's working directory).
const root = "../.."

// composeFile is the part of the Compose specification docker-compose.yml uses. It is decoded
// strictly: a key this struct does not know (a typo, or a feature these checks do not cover) fails.
type composeFile struct {
	Name     string                   `yaml:"name"`
	Services map[string]*service      `yaml:"services"`
	Secrets  map[string]composeSecret `yaml:"secrets"`
	Volumes  map[string]struct{}      `yaml:"volumes"`
}

type service struct {
	Image       string             `yaml:"image"`
	Build       *build             `yaml:"build"`
	Command     []string           `yaml:"command"`
	Environment map[string]string  `yaml:"environment"`
	Secrets     []string           `yaml:"secrets"`
	Volumes     []string           `yaml:"volumes"`
	Ports       []string           `yaml:"ports"`
	Ulimits     map[string]ulimit  `yaml:"ulimits"`
	DependsOn   map[string]depends `yaml:"depends_on"`
	Healthcheck *healthcheck       `yaml:"healthcheck"`
	Restart     string             `yaml:"restart"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type ulimit struct {
	Soft int `yaml:"soft"`
	Hard int `yaml:"hard"`
}

type depends struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test     []string `yaml:"test"`
	Interval string   `yaml:"interval"`
	Timeout  string   `yaml:"timeout"`
	Retries  int      `yaml:"retries"`
}

type composeSecret struct {
	File        string `yaml:"file"`
	Environment string `yaml:"environment"`
}

func parseCompose(src []byte) (*composeFile, error) {
	var c composeFile
	if err := yaml.UnmarshalWithOptions(src, &c, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("docker-compose.yml: %w", err)
	}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("docker-compose.yml: no services")
	}
	return &c, nil
}

// deployment is everything the compose checks read: the files as bytes, so that a test can
// mutate one and see the check fail.
type deployment struct {
	compose    []byte
	envExample []byte
	msrpscope  []byte // internal/deploy/compose/msrpscope.yaml
	prometheus []byte // internal/deploy/prometheus/prometheus.yml
	// The repository as the checks see it (paths relative to the root, slash-separated).
	exists func(rel string) (dir bool, ok bool)
	read   func(rel string) ([]byte, error)
	glob   func(pattern string) []string
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func repoExists(rel string) (bool, bool) {
	fi, err := os.Stat(filepath.Join(root, rel))
	if err != nil {
		return false, false
	}
	return fi.IsDir(), true
}

func loadDeployment(t *testing.T) deployment {
	return deployment{
		compose:    readFile(t, "docker-compose.yml"),
		envExample: readFile(t, ".env.example"),
		msrpscope:  readFile(t, "internal/deploy/compose/msrpscope.yaml"),
		prometheus: readFile(t, "internal/deploy/prometheus/prometheus.yml"),
		exists:     repoExists,
		read:       func(rel string) ([]byte, error) { return os.ReadFile(filepath.Join(root, rel)) },
		glob: func(pattern string) []string {
			m, _ := filepath.Glob(filepath.Join(root, pattern))
			return m
		},
	}
}

// withTree is d with the folder dir (slash-separated, no trailing slash) replaced by files
// (paths relative to the root): for the tests of the checks that depend on a folder this
// branch does not have (dashboards/), and that must not see the real one once it is merged.
func (d deployment) withTree(dir string, files map[string]string) deployment {
	exists, read, glob := d.exists, d.read, d.glob
	inside := func(rel string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }
	d.exists = func(rel string) (bool, bool) {
		if !inside(rel) {
			return exists(rel)
		}
		for name := range files {
			if name == rel {
				return false, true
			}
			if strings.HasPrefix(name, rel+"/") {
				return true, true
			}
		}
		return false, false
	}
	d.read = func(rel string) ([]byte, error) {
		if !inside(rel) {
			return read(rel)
		}
		if b, ok := files[rel]; ok {
			return []byte(b), nil
		}
		return nil, &fs.PathError{Op: "open", Path: rel, Err: fs.ErrNotExist}
	}
	d.glob = func(pattern string) []string {
		if !inside(pattern) {
			return glob(pattern)
		}
		var m []string
		for name := range files {
			if ok, _ := path.Match(pattern, name); ok {
				m = append(m, name)
			}
		}
		return m
	}
	return d
}

// composeCheck is one check of the compose deployment; it returns every problem it finds.
type composeCheck struct {
	name string
	fn   func(d deployment, c *composeFile) []error
}

var composeChecks = []composeCheck{
	{"images pinned", checkImagesPinned},
	{"services complete", checkServices},
	{"referenced files", checkReferencedFiles},
	{"variables", checkVariables},
	{"ports", checkPorts},
	{"msrpscope config", checkMsrpscopeWiring},
	{"prometheus", checkPrometheus},
	{"homer", checkHomer},
}

func runComposeChecks(d deployment) []error {
	c, err := parseCompose(d.compose)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, ch := range composeChecks {
		for _, e := range ch.fn(d, c) {
			errs = append(errs, fmt.Errorf("%s: %w", ch.name, e))
		}
	}
	return errs
}

func TestCompose(t *testing.T) {
	d := loadDeployment(t)
	c, err := parseCompose(d.compose)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range composeChecks {
		t.Run(ch.name, func(t *testing.T) {
			for _, e := range ch.fn(d, c) {
				t.Error(e)
			}
		})
	}
	if _, ok := d.exists("dashboards"); !ok {
		t.Log("dashboards/ is not in this tree: the Grafana provisioning and dashboard checks did not run")
	}
}

// pinnedTag is a version tag: v1.2, 1.2.3, 17.11-alpine, 1.26.8-trixie (at least major.minor).
var pinnedTag = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)+(-[a-z0-9][a-z0-9.]*)?$`)

// imagePinned says why an image reference is not pinned to a version, or "" when it is.
func imagePinned(ref string) string {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		if strings.HasPrefix(digest, "sha256:") && len(digest) == len("sha256:")+64 {
			return ""
		}
		return "bad digest"
	}
	name, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	switch {
	case name == "":
		return "no image name"
	case tag == "":
		return "no tag (means latest)"
	case !pinnedTag.MatchString(tag):
		return fmt.Sprintf("tag %q is not a version", tag)
	}
	return ""
}

func checkImagesPinned(_ deployment, c *composeFile) []error {
	var errs []error
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		switch {
		case s.Build != nil && s.Image == "":
		case s.Build != nil:
			errs = append(errs, fmt.Errorf("service %s: both build and image", name))
		case s.Image == "":
			errs = append(errs, fmt.Errorf("service %s: no image and no build", name))
		default:
			if why := imagePinned(s.Image); why != "" {
				errs = append(errs, fmt.Errorf("service %s: image %s: %s", name, s.Image, why))
			}
		}
	}
	return errs
}

// checkServices: the services the deployment promises exist, and every reference between
// services, volumes and secrets resolves.
func checkServices(_ deployment, c *composeFile) []error {
	var errs []error
	for _, want := range []string{"msrpscope", "clickhouse", "grafana", "prometheus", "heplify-server", "homer-db", "homer-app"} {
		if c.Services[want] == nil {
			errs = append(errs, fmt.Errorf("no service %s", want))
		}
	}
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		for dep, d := range s.DependsOn {
			if c.Services[dep] == nil {
				errs = append(errs, fmt.Errorf("service %s depends on unknown service %s", name, dep))
			}
			if !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition) {
				errs = append(errs, fmt.Errorf("service %s: depends_on %s: condition %q", name, dep, d.Condition))
			}
			if d.Condition == "service_healthy" && c.Services[dep] != nil && c.Services[dep].Healthcheck == nil && c.Services[dep].Build == nil {
				errs = append(errs, fmt.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep))
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				errs = append(errs, fmt.Errorf("service %s: undeclared secret %s", name, sec))
			}
		}
		for _, v := range s.Volumes {
			src, _, err := splitVolume(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", name, err))
				continue
			}
			if !isBind(src) {
				if _, ok := c.Volumes[src]; !ok {
					errs = append(errs, fmt.Errorf("service %s: undeclared volume %s", name, src))
				}
			}
		}
		if s.Restart != "unless-stopped" && s.Restart != "always" {
			errs = append(errs, fmt.Errorf("service %s: restart %q: a deployment restarts its services", name, s.Restart))
		}
	}
	for sec, s := range c.Secrets {
		if (s.File == "") == (s.Environment == "") {
			errs = append(errs, fmt.Errorf("secret %s: exactly one of file and environment", sec))
		}
	}
	return errs
}

// splitVolume splits a short-syntax volume "source:target[:mode]".
func splitVolume(v string) (src, target string, err error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") {
		return "", "", fmt.Errorf("volume %q: want source:/target[:ro]", v)
	}
	if len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
		return "", "", fmt.Errorf("volume %q: mode %q", v, parts[2])
	}
	return parts[0], parts[1], nil
}

func isBind(src string) bool { return strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") }

// dashboardsMounts are the paths the dashboards engineer fixed (issue 13): checked when
// dashboards/ exists in the tree, skipped otherwise.
var dashboardsMounts = map[string]string{
	"./dashboards/provisioning": "/etc/grafana/provisioning",
	"./dashboards/json":         "/var/lib/grafana/dashboards",
}

func checkReferencedFiles(d deployment, c *composeFile) []error {
	var errs []error
	_, haveDashboards := d.exists("dashboards")
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		if s.Build != nil {
			ctx := filepath.Clean(s.Build.Context)
			df := s.Build.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			if dir, ok := d.exists(filepath.Join(ctx, df)); !ok || dir {
				errs = append(errs, fmt.Errorf("service %s: build file %s missing", name, filepath.Join(ctx, df)))
			}
		}
		for _, v := range s.Volumes {
			src, target, err := splitVolume(v)
			if err != nil || !isBind(src) {
				continue
			}
			if strings.HasPrefix(src, "/") {
				errs = append(errs, fmt.Errorf("service %s: bind mount %s names a host path outside the repository", name, src))
				continue
			}
			if want, ok := dashboardsMounts[src]; ok {
				if target != want {
					errs = append(errs, fmt.Errorf("service %s: %s mounted at %s, want %s", name, src, target, want))
				}
				if !haveDashboards {
					continue // conditional: dashboards/ is written in parallel
				}
			}
			if _, ok := d.exists(filepath.Clean(src)); !ok {
				errs = append(errs, fmt.Errorf("service %s: bind mount source %s does not exist", name, src))
			}
		}
	}
	if g := c.Services["grafana"]; g != nil {
		for src := range dashboardsMounts {
			if !slices.ContainsFunc(g.Volumes, func(v string) bool { return strings.HasPrefix(v, src+":") }) {
				errs = append(errs, fmt.Errorf("grafana does not mount %s", src))
			}
		}
	}
	if haveDashboards {
		errs = append(errs, checkDashboards(d, c)...)
	}
	return errs
}

// checkDashboards (only when dashboards/ exists): the provisioning files the mounts promise,
// pointing at this compose file's services.
func checkDashboards(d deployment, c *composeFile) []error {
	var errs []error
	read := func(rel string) []byte {
		b, err := d.read(rel)
		if err != nil {
			errs = append(errs, err)
		}
		return b
	}
	var ds struct {
		Datasources []struct {
			UID            string         `yaml:"uid"`
			Type           string         `yaml:"type"`
			URL            string         `yaml:"url"`
			JSONData       map[string]any `yaml:"jsonData"`
			SecureJSONData map[string]any `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	if b := read("dashboards/provisioning/datasources/msrpscope.yaml"); b != nil {
		if err := yaml.Unmarshal(b, &ds); err != nil {
			errs = append(errs, fmt.Errorf("datasources: %w", err))
		}
		found := map[string]bool{}
		for _, s := range ds.Datasources {
			found[s.UID] = true
			switch s.UID {
			case "msrpscope-clickhouse":
				host, port := fmt.Sprint(s.JSONData["host"]), fmt.Sprint(s.JSONData["port"])
				chs := c.Services[host]
				if chs == nil || port != "9000" {
					errs = append(errs, fmt.Errorf("datasource %s: host %s port %s: want a compose service on 9000", s.UID, host, port))
					break
				}
				user, pass := clickhouseUser(chs)
				if u := str(s.JSONData["username"], "default"); u != user {
					errs = append(errs, fmt.Errorf("datasource %s: username %s, the server's user is %s", s.UID, u, user))
				}
				// A password is written as $VAR (Grafana expands its environment in provisioning):
				// Grafana's VAR must be the server's password.
				dp := str(s.SecureJSONData["password"], "")
				if g := c.Services["grafana"]; pass != "" && (g == nil || !strings.HasPrefix(dp, "$") || g.Environment[strings.Trim(dp, "${}")] != pass) {
					errs = append(errs, fmt.Errorf("datasource %s: password %q is not the server's %s", s.UID, dp, pass))
				}
			case "msrpscope-prometheus":
				if s.URL != "http://prometheus:9090" {
					errs = append(errs, fmt.Errorf("datasource %s: url %s, want http://prometheus:9090", s.UID, s.URL))
				}
			}
		}
		for _, uid := range []string{"msrpscope-clickhouse", "msrpscope-prometheus"} {
			if !found[uid] {
				errs = append(errs, fmt.Errorf("datasources: no uid %s", uid))
			}
		}
	}
	var dp struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if b := read("dashboards/provisioning/dashboards/msrpscope.yaml"); b != nil {
		if err := yaml.Unmarshal(b, &dp); err != nil {
			errs = append(errs, fmt.Errorf("dashboard providers: %w", err))
		}
		if !slices.ContainsFunc(dp.Providers, func(p struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		}) bool {
			return p.Options.Path == "/var/lib/grafana/dashboards"
		}) {
			errs = append(errs, fmt.Errorf("dashboard providers: none reads /var/lib/grafana/dashboards"))
		}
	}
	if len(d.glob("dashboards/json/*.json")) == 0 {
		errs = append(errs, fmt.Errorf("dashboards/json has no *.json"))
	}
	return errs
}

// interpolation matches ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err} and
// $VAR; $$ is a literal dollar.
var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func parseEnvFile(b []byte) (map[string]string, error) {
	env := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			return nil, fmt.Errorf(".env.example line %d: want KEY=value", i+1)
		}
		if _, dup := env[k]; dup {
			return nil, fmt.Errorf(".env.example: %s twice", k)
		}
		env[k] = v
	}
	return env, nil
}

// checkVariables: every variable the compose file interpolates has a default or is defined in
// .env.example, and so is every variable a secret is read from; .env.example defines nothing
// unused.
func checkVariables(d deployment, c *composeFile) []error {
	env, err := parseEnvFile(d.envExample)
	if err != nil {
		return []error{err}
	}
	// Compose interpolates values, not comments: scan the decoded tree's strings.
	var tree any
	if err := yaml.Unmarshal(d.compose, &tree); err != nil {
		return []error{err}
	}
	var strs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				strs = append(strs, k)
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			strs = append(strs, v)
		}
	}
	walk(tree)
	var errs []error
	used := map[string]bool{}
	for _, m := range interpolation.FindAllStringSubmatch(strings.Join(strs, "\n"), -1) {
		name, op := m[1], m[2]
		if m[0] == "$$" {
			continue
		}
		if name == "" {
			name = m[3]
		}
		used[name] = true
		if strings.HasSuffix(op, "-") {
			continue // has a default
		}
		if _, ok := env[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: no default and not in .env.example", m[0]))
		}
	}
	for name, s := range c.Secrets {
		if s.Environment == "" {
			continue
		}
		used[s.Environment] = true
		if _, ok := env[s.Environment]; !ok {
			errs = append(errs, fmt.Errorf("secret %s: variable %s not in .env.example", name, s.Environment))
		}
	}
	for _, k := range sortedKeys(env) {
		if !used[k] {
			errs = append(errs, fmt.Errorf(".env.example defines %s, which docker-compose.yml does not use", k))
		}
	}
	return errs
}

// published is one published port: host address (empty: every address), host port, container
// port, protocol.
type published struct {
	ip             string
	host, cont     int
	proto, service string
}

// parsePort reads the short syntax [ip:]host:container[/proto]; a port range or a bare
// container port (published on a random host port) is refused.
func parsePort(s string) (published, error) {
	var p published
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return p, fmt.Errorf("port %q: protocol %q", s, proto)
	}
	p.proto = proto
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 2:
	case 3:
		p.ip = parts[0]
		if net.ParseIP(p.ip) == nil {
			return p, fmt.Errorf("port %q: bad address %q", s, p.ip)
		}
		parts = parts[1:]
	default:
		return p, fmt.Errorf("port %q: want [ip:]host:container[/proto]", s)
	}
	var err1, err2 error
	p.host, err1 = strconv.Atoi(parts[0])
	p.cont, err2 = strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || p.host < 1 || p.host > 65535 || p.cont < 1 || p.cont > 65535 {
		return p, fmt.Errorf("port %q: bad port number", s)
	}
	return p, nil
}

// userPorts are the only ports published on the host: those a user needs. The admin API is
// published on loopback only.
var userPorts = map[string][]string{
	"msrpscope": {"2855:2855", "127.0.0.1:8055:8055"},
	"grafana":   {"3000:3000"},
	"homer-app": {"9080:80"},
}

func checkPorts(d deployment, c *composeFile) []error {
	var errs []error
	seen := map[string]published{}
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		if !slices.Equal(s.Ports, userPorts[name]) {
			errs = append(errs, fmt.Errorf("service %s publishes %q, want %q", name, s.Ports, userPorts[name]))
		}
		for _, ps := range s.Ports {
			p, err := parsePort(ps)
			if err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", name, err))
				continue
			}
			p.service = name
			// An unspecified address collides with every address on the same port.
			for k, q := range seen {
				if q.host == p.host && q.proto == p.proto && (q.ip == "" || p.ip == "" || q.ip == p.ip) {
					errs = append(errs, fmt.Errorf("host port %d/%s published by %s and %s (%s)", p.host, p.proto, q.service, name, k))
				}
			}
			seen[ps+"@"+name] = p
		}
	}
	ms := c.Services["msrpscope"]
	if ms == nil {
		return errs
	}
	cfg, err := parseMsrpscope(d.msrpscope)
	if err != nil {
		return append(errs, err)
	}
	// Every container port msrpscope publishes is one of its listeners or its admin API, every
	// listener is published, and the admin API only on loopback.
	listenPorts := map[int]bool{}
	for _, l := range cfg.Listen {
		_, port, err := net.SplitHostPort(l.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("msrpscope listen %q: %w", l.Addr, err))
			continue
		}
		n, _ := strconv.Atoi(port)
		listenPorts[n] = true
	}
	_, ap, err := net.SplitHostPort(cfg.Admin.Addr)
	if err != nil {
		return append(errs, fmt.Errorf("msrpscope admin.addr %q: %w", cfg.Admin.Addr, err))
	}
	adminPort, _ := strconv.Atoi(ap)
	pub := map[int]bool{}
	for _, ps := range ms.Ports {
		p, err := parsePort(ps)
		if err != nil {
			continue
		}
		pub[p.cont] = true
		switch {
		case listenPorts[p.cont]:
		case p.cont == adminPort:
			if !net.ParseIP(p.ip).IsLoopback() {
				errs = append(errs, fmt.Errorf("msrpscope admin port %d published on %q, want 127.0.0.1 only", p.cont, p.ip))
			}
		default:
			errs = append(errs, fmt.Errorf("msrpscope publishes container port %d, which its config does not listen on", p.cont))
		}
	}
	for port := range listenPorts {
		if !pub[port] {
			errs = append(errs, fmt.Errorf("msrpscope listens on %d, which is not published", port))
		}
	}
	return errs
}

// msrpscopeConfig is the part of the compose msrpscope.yaml the wiring checks read; the daemon's
// own check (TestMsrpscopeConfigChecks) validates all of it.
type msrpscopeConfig struct {
	Listen []struct {
		Transport string `yaml:"transport"`
		Addr      string `yaml:"addr"`
		URI       string `yaml:"uri"`
	} `yaml:"listen"`
	Tracing struct {
		Rules []struct {
			To []string `yaml:"to"`
		} `yaml:"rules"`
	} `yaml:"tracing"`
	Sinks map[string]map[string]any `yaml:"sinks"`
	Admin struct {
		Addr        string `yaml:"addr"`
		Token       string `yaml:"token"`
		TokenFile   string `yaml:"token_file"`
		MetricsAuth bool   `yaml:"metrics_auth"`
	} `yaml:"admin"`
}

func parseMsrpscope(b []byte) (*msrpscopeConfig, error) {
	var m msrpscopeConfig
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("msrpscope.yaml: %w", err)
	}
	return &m, nil
}

const configMount = "./internal/deploy/compose/msrpscope.yaml"

// secretPath is where compose mounts a service's secret.
func secretPath(name string) string { return "/run/secrets/" + name }

// checkMsrpscopeWiring: msrpscope reads the mounted config, its sinks reach the compose services
// on the ports they listen on with the credentials they were given, the files it names are
// secrets it has or lie on its volume.
func checkMsrpscopeWiring(d deployment, c *composeFile) []error {
	var errs []error
	ms := c.Services["msrpscope"]
	if ms == nil {
		return nil
	}
	cfg, err := parseMsrpscope(d.msrpscope)
	if err != nil {
		return []error{err}
	}
	target := mountTarget(ms, configMount)
	if target == "" {
		errs = append(errs, fmt.Errorf("msrpscope does not mount %s", configMount))
	} else if i := slices.Index(ms.Command, "-config"); i < 0 || i+1 >= len(ms.Command) || ms.Command[i+1] != target {
		errs = append(errs, fmt.Errorf("msrpscope command %q does not read the mounted config %s", ms.Command, target))
	}
	hasSecret := func(path string) bool {
		return slices.ContainsFunc(ms.Secrets, func(s string) bool { return secretPath(s) == path })
	}
	used := map[string]bool{}
	for _, r := range cfg.Tracing.Rules {
		for _, s := range r.To {
			used[s] = true
		}
	}
	var hep, ch map[string]any
	for name, s := range cfg.Sinks {
		if !used[name] {
			continue
		}
		switch s["type"] {
		case "hep":
			hep = s
		case "clickhouse":
			ch = s
		}
	}
	if hep == nil {
		errs = append(errs, fmt.Errorf("no rule sends to a hep sink (Homer)"))
	} else {
		errs = append(errs, checkHEPSink(hep, c)...)
	}
	if ch == nil {
		errs = append(errs, fmt.Errorf("no rule sends to a clickhouse sink"))
	} else {
		chs := c.Services["clickhouse"]
		host, port, _ := net.SplitHostPort(fmt.Sprint(ch["addr"]))
		if host != "clickhouse" || port != "9000" {
			errs = append(errs, fmt.Errorf("clickhouse sink addr %v, want clickhouse:9000 (native)", ch["addr"]))
		}
		if chs != nil {
			user, pass := clickhouseUser(chs)
			if u := str(ch["username"], "default"); u != user {
				errs = append(errs, fmt.Errorf("clickhouse sink username %s, the server's user (CLICKHOUSE_USER) is %s", u, user))
			}
			if db := chs.Environment["CLICKHOUSE_DB"]; str(ch["database"], "msrpscope") != db {
				errs = append(errs, fmt.Errorf("clickhouse sink database %v, the server's CLICKHOUSE_DB is %q", ch["database"], db))
			}
			pf := str(ch["password_file"], "")
			switch {
			case pass == "" && user == "default" && chs.Environment["CLICKHOUSE_SKIP_USER_SETUP"] != "1":
				errs = append(errs, fmt.Errorf("clickhouse: user default without a password is limited to localhost by the image unless CLICKHOUSE_SKIP_USER_SETUP=1"))
			case pass == "" && (pf != "" || str(ch["password"], "") != ""):
				errs = append(errs, fmt.Errorf("clickhouse sink sends a password, the server has none"))
			case pass != "" && !hasSecret(pf):
				errs = append(errs, fmt.Errorf("clickhouse sink password_file %q is not a secret of msrpscope", pf))
			case pass != "":
				// The password file is the secret read from the same variable as the server's password.
				sec := strings.TrimPrefix(pf, "/run/secrets/")
				if v := c.Secrets[sec].Environment; varName(pass) != v {
					errs = append(errs, fmt.Errorf("clickhouse password: secret %s reads $%s, the server gets %s", sec, v, pass))
				}
			}
		}
		if sd, _ := ch["spool_dir"].(string); sd == "" {
			errs = append(errs, fmt.Errorf("clickhouse sink has no spool_dir"))
		} else if !onVolume(ms, c, sd) {
			errs = append(errs, fmt.Errorf("clickhouse spool_dir %s is not on a named volume of msrpscope", sd))
		}
	}
	switch {
	case cfg.Admin.Token != "":
		errs = append(errs, fmt.Errorf("admin.token in a committed file: use token_file with a secret"))
	case !hasSecret(cfg.Admin.TokenFile):
		errs = append(errs, fmt.Errorf("admin.token_file %q is not a secret of msrpscope", cfg.Admin.TokenFile))
	}
	if cfg.Admin.MetricsAuth {
		errs = append(errs, fmt.Errorf("admin.metrics_auth is on: Prometheus scrapes without a token"))
	}
	if host, _, _ := net.SplitHostPort(cfg.Admin.Addr); host != "0.0.0.0" && host != "" && host != "::" {
		errs = append(errs, fmt.Errorf("admin.addr %s: Prometheus (another container) cannot reach it", cfg.Admin.Addr))
	}
	if ms.Environment["MSRPSCOPE_DEMO_PASSWORD"] == "" {
		errs = append(errs, fmt.Errorf("msrpscope has no MSRPSCOPE_DEMO_PASSWORD (the config has no users_file)"))
	}
	return errs
}

// clickhouseUser is the user the clickhouse/clickhouse-server image sets up from its
// environment, and its password as written in the compose file ("" for none).
func clickhouseUser(chs *service) (user, pass string) {
	return str(chs.Environment["CLICKHOUSE_USER"], "default"), chs.Environment["CLICKHOUSE_PASSWORD"]
}

// str is v as a string, or def when v is absent or empty.
func str(v any, def string) string {
	if v == nil || fmt.Sprint(v) == "" {
		return def
	}
	return fmt.Sprint(v)
}

// varName is the variable an expression like ${NAME:?message} or $NAME interpolates, or "".
func varName(expr string) string {
	m := interpolation.FindStringSubmatch(expr)
	if m == nil || m[0] != expr {
		return ""
	}
	if m[1] != "" {
		return m[1]
	}
	return m[3]
}

func checkHEPSink(hep map[string]any, c *composeFile) []error {
	var errs []error
	host, port, _ := net.SplitHostPort(fmt.Sprint(hep["addr"]))
	hs := c.Services[host]
	if hs == nil {
		return []error{fmt.Errorf("hep sink addr %v: no service %q", hep["addr"], host)}
	}
	tr, _ := hep["transport"].(string)
	if tr == "" {
		tr = "udp"
	}
	key := map[string]string{"udp": "HEPLIFYSERVER_HEPADDR", "tcp": "HEPLIFYSERVER_HEPTCPADDR", "tls": "HEPLIFYSERVER_HEPTLSADDR"}[tr]
	_, lport, err := net.SplitHostPort(hs.Environment[key])
	if err != nil || lport != port {
		errs = append(errs, fmt.Errorf("hep sink sends %s to port %s; %s listens on %s=%q", tr, port, host, key, hs.Environment[key]))
	}
	if pt := fmt.Sprint(hep["proto_type"]); pt != "100" && pt != "<nil>" {
		errs = append(errs, fmt.Errorf("hep sink proto_type %s: a stock Homer 7 shows only 100 (LOG)", pt))
	}
	return errs
}

// mountTarget is where service s mounts the bind source src, or "".
func mountTarget(s *service, src string) string {
	for _, v := range s.Volumes {
		if vs, target, err := splitVolume(v); err == nil && vs == src {
			return target
		}
	}
	return ""
}

// onVolume says whether path lies under one of s's named volumes.
func onVolume(s *service, c *composeFile, path string) bool {
	for _, v := range s.Volumes {
		src, target, err := splitVolume(v)
		if err != nil || isBind(src) {
			continue
		}
		if _, ok := c.Volumes[src]; ok && (path == target || strings.HasPrefix(path, target+"/")) {
			return true
		}
	}
	return false
}

const prometheusMount = "./internal/deploy/prometheus/prometheus.yml"

// checkPrometheus: Prometheus reads the mounted prometheus.yml, which scrapes msrpscope's admin
// port at /metrics.
func checkPrometheus(d deployment, c *composeFile) []error {
	ps := c.Services["prometheus"]
	if ps == nil {
		return nil
	}
	var errs []error
	target := mountTarget(ps, prometheusMount)
	if target == "" || !slices.Contains(ps.Command, "--config.file="+target) {
		errs = append(errs, fmt.Errorf("prometheus does not read %s (mounted at %q, command %q)", prometheusMount, target, ps.Command))
	}
	var pc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(d.prometheus, &pc); err != nil {
		return append(errs, fmt.Errorf("prometheus.yml: %w", err))
	}
	cfg, err := parseMsrpscope(d.msrpscope)
	if err != nil {
		return append(errs, err)
	}
	_, ap, _ := net.SplitHostPort(cfg.Admin.Addr)
	want := net.JoinHostPort("msrpscope", ap)
	found := false
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, want) && (sc.MetricsPath == "" || sc.MetricsPath == "/metrics") {
				found = true
			}
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("prometheus.yml scrapes no %s/metrics", want))
	}
	return errs
}

// checkHomer: heplify-server stores into the Homer database with homer-app's credentials.
func checkHomer(_ deployment, c *composeFile) []error {
	hs, app := c.Services["heplify-server"], c.Services["homer-app"]
	if hs == nil || app == nil {
		return nil
	}
	var errs []error
	e := hs.Environment
	if e["HEPLIFYSERVER_DBDRIVER"] != "postgres" || e["HEPLIFYSERVER_DBSHEMA"] != "homer7" {
		errs = append(errs, fmt.Errorf("heplify-server: DBDRIVER %q DBSHEMA %q, want postgres homer7", e["HEPLIFYSERVER_DBDRIVER"], e["HEPLIFYSERVER_DBSHEMA"]))
	}
	dbHost, _, err := net.SplitHostPort(e["HEPLIFYSERVER_DBADDR"])
	db := c.Services[dbHost]
	if err != nil || db == nil {
		return append(errs, fmt.Errorf("heplify-server DBADDR %q: no such service", e["HEPLIFYSERVER_DBADDR"]))
	}
	if app.Environment["DB_HOST"] != dbHost {
		errs = append(errs, fmt.Errorf("homer-app DB_HOST %q, heplify-server writes to %q", app.Environment["DB_HOST"], dbHost))
	}
	user, pass := db.Environment["POSTGRES_USER"], db.Environment["POSTGRES_PASSWORD"]
	if e["HEPLIFYSERVER_DBUSER"] != user || app.Environment["DB_USER"] != user {
		errs = append(errs, fmt.Errorf("database user: postgres %q, heplify-server %q, homer-app %q", user, e["HEPLIFYSERVER_DBUSER"], app.Environment["DB_USER"]))
	}
	if pass == "" || e["HEPLIFYSERVER_DBPASS"] != pass || app.Environment["DB_PASS"] != pass {
		errs = append(errs, fmt.Errorf("database password: postgres %q, heplify-server %q, homer-app %q", pass, e["HEPLIFYSERVER_DBPASS"], app.Environment["DB_PASS"]))
	}
	if e["HEPLIFYSERVER_DBDATATABLE"] != "homer_data" || e["HEPLIFYSERVER_DBCONFTABLE"] != "homer_config" {
		errs = append(errs, fmt.Errorf("heplify-server databases: %q %q, homer-app reads homer_data and homer_config", e["HEPLIFYSERVER_DBDATATABLE"], e["HEPLIFYSERVER_DBCONFTABLE"]))
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestReadmeNamesImages: the README's Deployment section names every image compose runs, at
// the version it runs (a tag bumped in one place only fails here).
func TestReadmeNamesImages(t *testing.T) {
	readme := string(readFile(t, "README.md"))
	_, sec, ok := strings.Cut(readme, "\n## Deployment\n")
	if !ok {
		t.Fatal("README.md has no Deployment section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	c, err := parseCompose(readFile(t, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedKeys(c.Services) {
		if img := c.Services[name].Image; img != "" && !strings.Contains(sec, "`"+img+"`") {
			t.Errorf("README Deployment does not name service %s's image `%s`", name, img)
		}
	}
}
