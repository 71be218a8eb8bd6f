// Package clickhouse runs real ClickHouse servers (Debian clickhouse-server 18.16) and a ZooKeeper
// on loopback for tests: one server, or a two-shard cluster with distributed (ON CLUSTER) DDL.
//
// Start writes a config of its own into t.TempDir() (data, tmp, user files, format schemas and logs
// all inside it; free 127.0.0.1 ports; users.xml beside it), starts `clickhouse-server
// --config-file=...` and polls `SELECT 1` over HTTP until it answers, bounded by a timeout. A server
// can be stopped (SIGTERM), killed (SIGKILL) and restarted on the same data dir and ports. Every
// process is killed and reaped by t.Cleanup, also when the test fails. Without the binaries the test
// is skipped with a message naming the packages to install, unless the environment variable CI is
// set, when it fails: CI never silently skips.
package clickhouse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
	"github.com/msrpscope/msrpscope/internal/testenv"
)

// DefaultStartTimeout bounds the wait for a server to answer after start.
const DefaultStartTimeout = 60 * time.Second

// ClusterName is the name StartCluster gives its cluster in remote_servers.
const ClusterName = "msrpscope_test"

// Options selects what Start runs. The zero value is a single server.
type Options struct {
	// StartTimeout bounds the wait for the server to answer (default DefaultStartTimeout).
	StartTimeout time.Duration
	// ExtraConfig is inserted verbatim inside <yandex> of config.xml (remote_servers, zookeeper,
	// macros, ...).
	ExtraConfig string
}

// Server is one clickhouse-server process on loopback.
type Server struct {
	tb       testing.TB
	bin      string
	dir      string
	cfgPath  string
	logPath  string // the process's stdout and stderr
	errLog   string // the server's own error log
	tcpPort  int
	httpPort int
	timeout  time.Duration

	mu   sync.Mutex
	proc *proc.Proc // the current process; nil before the first start
}

// ServerBinary returns the path of clickhouse-server, or skips the test (fails it when CI is set).
func ServerBinary(tb testing.TB) string {
	tb.Helper()
	return need(tb, "clickhouse-server", "clickhouse-server clickhouse-client",
		"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")
}

func need(tb testing.TB, name, pkgs string, paths ...string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	testenv.Missing(tb, fmt.Sprintf("%s not found (apt-get install %s)", name, pkgs))
	return ""
}

// Start starts one server and waits until it answers. It fails the test when the server does not
// come up.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin := ServerBinary(tb)
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		s, err := start(tb, bin, opts)
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
		tb.Logf("clickhouse: port taken, retrying (%v)", err)
	}
	tb.Fatalf("clickhouse: %v", lastErr)
	return nil
}

var errBind = errors.New("could not bind a port")

func start(tb testing.TB, bin string, opts Options) (*Server, error) {
	ports, err := proc.FreePorts(3)
	if err != nil {
		return nil, err
	}
	return startOn(tb, bin, opts, opts.ExtraConfig, ports)
}

// startOn starts a server on the given native, HTTP and interserver ports with extra config.
func startOn(tb testing.TB, bin string, opts Options, extra string, ports []int) (*Server, error) {
	dir := tb.TempDir()
	s := &Server{
		tb:       tb,
		bin:      bin,
		dir:      dir,
		cfgPath:  filepath.Join(dir, "config.xml"),
		logPath:  filepath.Join(dir, "stdout.log"),
		errLog:   filepath.Join(dir, "log", "clickhouse-server.err.log"),
		tcpPort:  ports[0],
		httpPort: ports[1],
		timeout:  opts.StartTimeout,
	}
	var buf bytes.Buffer
	if err := configTemplate.Execute(&buf, map[string]any{
		"Dir":             dir,
		"TCPPort":         ports[0],
		"HTTPPort":        ports[1],
		"InterserverPort": ports[2],
		"Extra":           extra,
	}); err != nil {
		return nil, fmt.Errorf("config template: %w", err)
	}
	if err := os.WriteFile(s.cfgPath, buf.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(usersXML), 0o600); err != nil {
		return nil, fmt.Errorf("writing users.xml: %w", err)
	}
	tb.Cleanup(func() {
		s.kill()
		if tb.Failed() {
			tb.Logf("clickhouse %s: last lines of its logs:\n%s", s.Addr(), s.LogTail(30))
		}
	})
	if err := s.launch(); err != nil {
		s.kill()
		log := s.Log()
		if strings.Contains(log, "Address already in use") {
			return nil, fmt.Errorf("%w: %v", errBind, err)
		}
		return nil, fmt.Errorf("%v; log tail:\n%s", err, proc.Tail(log, 30))
	}
	return s, nil
}

// launch starts the process on the existing config and waits until it answers.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	cmd := exec.Command(s.bin, "--config-file="+s.cfgPath)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed with the test binary if it dies before its cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p, err := proc.Start(cmd, func() { logf.Close() })
	if err != nil {
		logf.Close()
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return s.waitReady(p.Exited())
}

// waitReady polls SELECT 1 until it answers, the process exits, or the start timeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		out, err := s.QueryContext(qctx, "SELECT 1")
		qcancel()
		if err == nil && strings.TrimSpace(out) == "1" {
			return nil
		}
		lastErr = err
		select {
		case <-exited:
			return fmt.Errorf("clickhouse-server exited before answering (last query error: %v)", lastErr)
		case <-ctx.Done():
			return fmt.Errorf("clickhouse-server did not answer within %v: %v", s.timeout, lastErr)
		case <-tick.C:
		}
	}
}

// Addr is the native-protocol address (for clickhouse-go), 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) }

// TCPPort is the native-protocol port.
func (s *Server) TCPPort() int { return s.tcpPort }

// HTTPAddr is the HTTP interface's address.
func (s *Server) HTTPAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpPort)) }

// Dir is the server's temp dir (config, data under data/, logs under log/).
func (s *Server) Dir() string { return s.dir }

// Exited is closed when the current process has exited.
func (s *Server) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	return s.proc.Exited()
}

// Query runs one statement over the HTTP interface and returns its output (TabSeparated unless the
// statement says FORMAT). For tests and the harness; the code under test uses the native protocol.
func (s *Server) Query(query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.QueryContext(ctx, query)
}

// QueryContext is Query with a context.
func (s *Server) QueryContext(ctx context.Context, query string) (string, error) {
	u := "http://" + s.HTTPAddr() + "/?" + url.Values{"database": {"default"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(query))
	if err != nil {
		return "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading answer to %q: %w", query, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse %s: %q: %s", s.Addr(), query, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// MustQuery is Query that fails the test on error.
func (s *Server) MustQuery(tb testing.TB, query string) string {
	tb.Helper()
	out, err := s.Query(query)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// No keep-alive: a killed server must not leave pooled connections behind.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// Stop ends the server with SIGTERM and waits for it to exit (SIGKILL after the start timeout).
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return
	}
	if p.StopGroup(s.timeout) {
		s.tb.Logf("clickhouse %s: no exit %v after SIGTERM; killed", s.Addr(), s.timeout)
	}
}

// Kill ends the server with SIGKILL (no shutdown of its own) and waits until it is reaped.
func (s *Server) Kill() { s.kill() }

func (s *Server) kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Restart starts the server again on the same config, data dir and ports after Stop or Kill (it
// kills a running one first) and waits until it answers; a failure fails the test.
func (s *Server) Restart() {
	s.tb.Helper()
	s.kill()
	var err error
	// A killed server's ports are free at once (SO_REUSEADDR); a port taken by another process
	// in the meantime fails the restart with the log saying so.
	if err = s.launch(); err != nil {
		s.kill()
		s.tb.Fatalf("clickhouse %s: restart: %v; log tail:\n%s", s.Addr(), err, s.LogTail(30))
	}
}

// Log returns the process output and the server's error log.
func (s *Server) Log() string {
	var b strings.Builder
	for _, p := range []string{s.logPath, s.errLog} {
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(&b, "(reading %s: %v)\n", p, err)
		}
		b.Write(data)
	}
	return b.String()
}

// LogTail returns the last n lines of Log.
func (s *Server) LogTail(n int) string { return proc.Tail(s.Log(), n) }

var configTemplate = template.Must(template.New("config.xml").Parse(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{{.Dir}}/log/clickhouse-server.log</log>
        <errorlog>{{.Dir}}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{{.HTTPPort}}</http_port>
    <tcp_port>{{.TCPPort}}</tcp_port>
    <interserver_http_port>{{.InterserverPort}}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>{{.Dir}}/data/</path>
    <tmp_path>{{.Dir}}/tmp/</tmp_path>
    <user_files_path>{{.Dir}}/user_files/</user_files_path>
    <format_schema_path>{{.Dir}}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
{{.Extra}}
</yandex>
`))

const usersXML = `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>in_order</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`
