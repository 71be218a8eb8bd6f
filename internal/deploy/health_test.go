package deploy

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// healthCmd is the Dockerfile's HEALTHCHECK command (exec form) with its admin port replaced.
func healthCmd(t *testing.T, port string) []string {
	t.Helper()
	ins, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.cmd != "HEALTHCHECK" {
			continue
		}
		_, js, ok := strings.Cut(in.args, "CMD ")
		var argv []string
		if !ok || json.Unmarshal([]byte(js), &argv) != nil || len(argv) == 0 {
			t.Fatalf("HEALTHCHECK %q: want CMD [\"exec\", \"form\"]", in.args)
		}
		for i := range argv {
			if strings.Contains(argv[i], "/8055") {
				argv[i] = strings.ReplaceAll(argv[i], "/8055", "/"+port)
			}
		}
		return argv
	}
	t.Fatal("no HEALTHCHECK")
	return nil
}

var adminListening = regexp.MustCompile(`admin listening.* addr=(\S+)`)

// TestHealthCheckCommand runs the image's health check command against a real msrpscope on
// loopback: it passes while the admin API answers /healthz, and fails with nothing listening.
func TestHealthCheckCommand(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	bin := msrpscopeBinary(t)
	dir := t.TempDir()
	cfg := dir + "/msrpscope.yaml"
	if err := os.WriteFile(cfg, []byte(`listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0"}
tracing: {enabled: false}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD=test")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			if m := adminListening.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				addr <- m[1]
			}
		}
		if !found {
			close(addr)
		}
	}()
	a, ok := <-addr
	if !ok {
		t.Fatal("msrpscope exited without starting its admin API")
	}
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		t.Fatal(err)
	}
	argv := healthCmd(t, port)
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("health check %q against a running msrpscope: %v\n%s", argv, err, out)
	}

	// Nothing listening: the check fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, free, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	argv = healthCmd(t, free)
	if err := exec.Command(argv[0], argv[1:]...).Run(); err == nil {
		t.Fatal("health check passed with nothing listening")
	}

	// An HTTP server that answers /healthz with 503: the check fails.
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not healthy", http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	_, port, _ = net.SplitHostPort(sick.Listener.Addr().String())
	argv = healthCmd(t, port)
	if err := exec.Command(argv[0], argv[1:]...).Run(); err == nil {
		t.Fatal("health check passed on a 503")
	}
}
