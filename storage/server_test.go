package storage

// A minimal ClickHouse server starter for these tests, to be replaced by
// the shared harness (internal/clickhouse) when it lands.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

type chServer struct {
	t        testing.TB
	bin, dir string
	tcpPort  int
	cmd      *exec.Cmd
	exited   chan struct{}
}

// startServer starts clickhouse-server on loopback in a temporary folder.
// Without the binary the test is skipped, or fails when CI=true.
func startServer(t testing.TB) *chServer {
	t.Helper()
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		bin = "/usr/bin/clickhouse-server"
		if _, serr := os.Stat(bin); serr != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("clickhouse-server not installed (apt-get install clickhouse-server clickhouse-client)")
			}
			t.Skip("clickhouse-server not installed")
		}
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	users, err := os.ReadFile("/etc/clickhouse-server/users.xml")
	if err != nil {
		t.Fatalf("clickhouse users.xml: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), users, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`<yandex>
 <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/server.err.log</errorlog></logger>
 <tcp_port>%[2]d</tcp_port>
 <listen_host>127.0.0.1</listen_host>
 <path>%[1]s/data/</path>
 <tmp_path>%[1]s/tmp/</tmp_path>
 <user_files_path>%[1]s/user_files/</user_files_path>
 <format_schema_path>%[1]s/format_schemas/</format_schema_path>
 <users_config>users.xml</users_config>
 <default_profile>default</default_profile>
 <default_database>default</default_database>
 <mark_cache_size>536870912</mark_cache_size>
</yandex>
`, dir, port)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &chServer{t: t, bin: bin, dir: dir, tcpPort: port}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func (s *chServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) }

func (s *chServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--config-file="+filepath.Join(s.dir, "config.xml"))
	s.cmd.Dir = s.dir
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start clickhouse-server: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.exited)
	// Readiness: the server answers SELECT 1 on its native port.
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr()}, DialTimeout: time.Second})
		if err == nil {
			err = conn.Ping(context.Background())
			conn.Close()
			if err == nil {
				return
			}
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.err.log"))
			s.t.Fatalf("clickhouse-server exited: %s", log)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("clickhouse-server not ready: %v", err)
		}
	}
}

// Kill SIGKILLs the server and waits for it to exit.
func (s *chServer) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// Restart starts the server again on the same port and data.
func (s *chServer) Restart() { s.start() }

func (s *chServer) conn(t testing.TB) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func queryUint(t testing.TB, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}
