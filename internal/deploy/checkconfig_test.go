package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/internal/testenv"
)

// secretRef and stateRef are the container paths the compose configuration names: the test
// copy points them at files and folders of its own (-check-config reads the files it names).
var (
	secretRef = regexp.MustCompile(`/run/secrets/[A-Za-z0-9_.-]+`)
	stateRef  = regexp.MustCompile(`/var/lib/msrpscope(/[A-Za-z0-9_./-]*)?`)
)

// testCopy writes the compose configuration with its secrets and state paths moved into dir;
// secrets named in skip are not created.
func testCopy(t *testing.T, src []byte, dir string, skip ...string) string {
	t.Helper()
	out := secretRef.ReplaceAllStringFunc(string(src), func(p string) string {
		name := filepath.Base(p)
		local := filepath.Join(dir, "secrets", name)
		for _, s := range skip {
			if s == name {
				return local
			}
		}
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, []byte("test-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return local
	})
	out = stateRef.ReplaceAllStringFunc(out, func(p string) string {
		return filepath.Join(dir, "state", strings.TrimPrefix(p, "/var/lib/msrpscope"))
	})
	path := filepath.Join(dir, "msrpscope.yaml")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func checkConfig(t *testing.T, bin, path string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, "-check-config", path)
	cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD=test")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMsrpscopeConfigChecks runs the real msrpscope -check-config on the configuration
// docker-compose.yml mounts, and on broken copies of it, which it must refuse.
func TestMsrpscopeConfigChecks(t *testing.T) {
	bin := msrpscopeBinary(t)
	src := readFile(t, "internal/deploy/compose/msrpscope.yaml")
	if !secretRef.Match(src) {
		t.Fatal("the compose configuration names no /run/secrets file: the test copies would check nothing")
	}

	t.Run("compose config", func(t *testing.T) {
		path := testCopy(t, src, t.TempDir())
		out, err := checkConfig(t, bin, path)
		if err != nil || !strings.Contains(out, "configuration OK") {
			t.Fatalf("msrpscope -check-config: %v\n%s", err, out)
		}
	})
	// The Dockerfile's build stage runs this on the embedded defaults' file.
	t.Run("embedded defaults", func(t *testing.T) {
		out, err := checkConfig(t, bin, filepath.Join(root, "cmd/msrpscope/default.yaml"))
		if err != nil {
			t.Fatalf("msrpscope -check-config default.yaml: %v\n%s", err, out)
		}
	})

	broken := []struct {
		name     string
		old, new string
		skip     string // a secret not created
		want     string
	}{
		{"token file missing", "", "", "msrpscope_admin_token", "msrpscope_admin_token"},
		{"no token on 0.0.0.0", "token_file: /run/secrets/msrpscope_admin_token", `token_file: ""`, "", "not a loopback address"},
		{"listener without uri", `    uri: "msrp://127.0.0.1:2855;tcp"` + "\n", "", "", "uri"},
		{"unknown key", "metrics_auth: false", "metrics_auth: false\n  metric_auth: false", "", "metric_auth"},
		{"hep without port", `addr: "heplify-server:9060"`, `addr: "heplify-server"`, "", "heplify-server"},
	}
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			b := string(src)
			if tt.old != "" {
				if strings.Count(b, tt.old) != 1 {
					t.Fatalf("%q does not occur once", tt.old)
				}
				b = strings.Replace(b, tt.old, tt.new, 1)
			}
			path := testCopy(t, []byte(b), t.TempDir(), tt.skip)
			out, err := checkConfig(t, bin, path)
			if err == nil {
				t.Fatalf("msrpscope -check-config passed a broken file:\n%s", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("error does not mention %q:\n%s", tt.want, out)
			}
		})
	}
}

// TestPrometheusConfig runs promtool on the Prometheus configuration compose mounts, where
// promtool is installed (Debian prometheus); the wiring (scrape target) is TestCompose's.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool not found (apt-get install prometheus)")
	}
	good := filepath.Join(root, "internal/deploy/prometheus/prometheus.yml")
	if out, err := exec.Command(promtool, "check", "config", good).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	// promtool can fail: a misspelt key is refused.
	bad := filepath.Join(t.TempDir(), "prometheus.yml")
	b := strings.Replace(string(readFile(t, "internal/deploy/prometheus/prometheus.yml")), "scrape_interval", "scrape_intervall", 1)
	if err := os.WriteFile(bad, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", bad).CombinedOutput(); err == nil {
		t.Fatalf("promtool passed a misspelt key:\n%s", out)
	}
}

// TestDockerComposeConfig has Docker Compose itself load the file (schema, interpolation with
// .env.example), where the compose plugin is installed; `config` needs no engine. Skipped
// here: the docker CLI on this machine has no compose plugin.
func TestDockerComposeConfig(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil || exec.Command(docker, "compose", "version").Run() != nil {
		t.Skip("docker compose not installed")
	}
	cmd := exec.Command(docker, "compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config", "--quiet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}

// TestShellScripts: the scripts compose mounts into containers parse (sh -n), and are
// executable (postgres's entry point runs executable init scripts, sources the others).
func TestShellScripts(t *testing.T) {
	for _, rel := range []string{"internal/deploy/homer/init-user-db.sh"} {
		p := filepath.Join(root, rel)
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", rel, err, out)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", rel, err)
		}
	}
}
