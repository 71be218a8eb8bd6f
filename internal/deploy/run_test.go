package deploy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/hep"
)

// TestComposeConfigRuns starts msrpscope on the compose configuration, with the compose
// network's names moved to loopback (heplify-server: a UDP socket of the test standing in for
// heplify-server, which cannot run here; clickhouse: a closed port), drives traffic through it
// with msrpload, and checks what the other services rely on: the admin API wants the token
// from the secret, /metrics does not (Prometheus), and the HEP that reaches the collector is
// what heplify-server stores (type 100, a correlation id, the capture id and node).
func TestComposeConfigRuns(t *testing.T) {
	bin := msrpscopeBinary(t)
	load := buildCmd(t, "msrpload")
	dir := t.TempDir()

	collector, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer collector.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chAddr := closed.Addr().String()
	closed.Close()

	path := testCopy(t, readFile(t, "internal/deploy/compose/msrpscope.yaml"), dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for _, r := range [][2]string{
		{`addr: "0.0.0.0:2855"`, `addr: "127.0.0.1:0"`},
		{`addr: "0.0.0.0:8055"`, `addr: "127.0.0.1:0"`},
		{`addr: "heplify-server:9060"`, `addr: "` + collector.LocalAddr().String() + `"`},
		{`addr: "clickhouse:9000"`, `addr: "` + chAddr + `"`},
	} {
		if strings.Count(cfg, r[0]) != 1 {
			t.Fatalf("%q does not occur once in the compose config", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(dir, "secrets", "msrpscope_admin_token"))
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-config", path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD=demo-secret")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	// The JSON log (log.format: json) says where the listener and the admin API are.
	type logLine struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	addrs := make(chan logLine, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		n := 0
		for sc.Scan() {
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Msg == "listening" || l.Msg == "admin listening") && n < 2 {
				n++
				addrs <- l
			}
		}
		close(addrs)
	}()
	var msrpAddr, adminAddr string
	for msrpAddr == "" || adminAddr == "" {
		l, ok := <-addrs
		if !ok {
			t.Fatal("msrpscope exited before listening")
		}
		if l.Msg == "listening" {
			msrpAddr = l.Addr
		} else {
			adminAddr = l.Addr
		}
	}

	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/api/v1/stats", ""); code != http.StatusUnauthorized {
		t.Errorf("stats without the token: %d, want 401", code)
	}
	if code, body := get("/api/v1/stats", strings.TrimSpace(string(token))); code != http.StatusOK {
		t.Errorf("stats with the secret's token: %d %s", code, body)
	}
	if code, body := get("/metrics", ""); code != http.StatusOK || !strings.Contains(body, "# TYPE") {
		t.Errorf("/metrics without a token (Prometheus): %d %.200s", code, body)
	}

	// Traffic: one pair, a few messages, through the listener URI the compose config announces.
	out, err := exec.Command(load, "-relay", "msrp://127.0.0.1:2855;tcp", "-addr", msrpAddr,
		"-user", "demo", "-password", "demo-secret", "-pairs", "1", "-count", "5", "-timeout", "10s").CombinedOutput()
	if err != nil {
		t.Fatalf("msrpload through the compose config: %v\n%s", err, out)
	}

	// The collector got HEP as heplify-server stores it (docs/HEP.md): type 100 with a
	// correlation id, and the frames include the SENDs.
	buf := make([]byte, 65536)
	sends := 0
	for sends < 5 {
		collector.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure, not a wait
		n, _, err := collector.ReadFrom(buf)
		if err != nil {
			t.Fatalf("HEP collector after %d SENDs: %v", sends, err)
		}
		p, err := hep.Decode(buf[:n])
		if err != nil {
			t.Fatalf("HEP packet: %v", err)
		}
		if p.ProtoType != 100 || len(p.CorrelationID) == 0 || p.CaptureID != 2001 || string(p.NodeName) != "msrpscope" {
			t.Fatalf("HEP packet type %d, correlation id %q, capture id %d, node %q: want 100, non-empty, 2001, msrpscope",
				p.ProtoType, p.CorrelationID, p.CaptureID, p.NodeName)
		}
		if strings.Contains(string(p.Payload), " SEND\r\n") {
			sends++
		}
	}
}
