package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
)

// ZooKeeper is one standalone ZooKeeper 3.8 (Debian package zookeeper) on loopback.
type ZooKeeper struct {
	port    int
	dir     string
	logPath string
	proc    *proc.Proc
}

// Debian's zookeeper.jar names its dependencies in its manifest; slf4j-simple gives it a logger.
var zkJars = []string{"/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"}

// StartZooKeeper starts a standalone ZooKeeper with its data in t.TempDir() on a free 127.0.0.1
// port and waits until it serves requests. Without java or the jars the test is skipped (fails when
// CI is set).
func StartZooKeeper(tb testing.TB, timeout time.Duration) *ZooKeeper {
	tb.Helper()
	java := need(tb, "java", "zookeeper default-jre-headless", "/usr/bin/java")
	for _, j := range zkJars {
		if _, err := os.Stat(j); err != nil {
			need(tb, j, "zookeeper", j)
		}
	}
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		z, err := startZK(tb, java, timeout)
		if err == nil {
			return z
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
		tb.Logf("zookeeper: port taken, retrying (%v)", err)
	}
	tb.Fatalf("zookeeper: %v", lastErr)
	return nil
}

func startZK(tb testing.TB, java string, timeout time.Duration) (*ZooKeeper, error) {
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	dir := tb.TempDir()
	z := &ZooKeeper{port: ports[0], dir: dir, logPath: filepath.Join(dir, "zookeeper.log")}
	cfg := fmt.Sprintf(`tickTime=500
initLimit=10
syncLimit=5
dataDir=%s/data
clientPort=%d
clientPortAddress=127.0.0.1
maxSessionTimeout=30000
admin.enableServer=false
4lw.commands.whitelist=srvr
`, dir, z.port)
	cfgPath := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("writing zoo.cfg: %w", err)
	}
	logf, err := os.Create(z.logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(java, "-Xmx256m", "-XX:+UseSerialGC", "-Dzookeeper.jmx.log4j.disable=true",
		"-cp", strings.Join(zkJars, ":"), "org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if z.proc, err = proc.Start(cmd, func() { logf.Close() }); err != nil {
		logf.Close()
		return nil, err
	}
	tb.Cleanup(func() {
		z.Kill()
		if tb.Failed() {
			tb.Logf("zookeeper %s: last lines of its log:\n%s", z.Addr(), proc.Tail(z.Log(), 20))
		}
	})
	if err := z.waitReady(timeout); err != nil {
		z.Kill()
		log := z.Log()
		if strings.Contains(log, "Address already in use") {
			return nil, fmt.Errorf("%w: %v", errBind, err)
		}
		return nil, fmt.Errorf("%v; log tail:\n%s", err, proc.Tail(log, 20))
	}
	return z, nil
}

func (z *ZooKeeper) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = z.ready(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-z.proc.Exited():
			return fmt.Errorf("zookeeper exited before answering (last: %v)", lastErr)
		case <-ctx.Done():
			return fmt.Errorf("zookeeper did not answer within %v: %v", timeout, lastErr)
		case <-tick.C:
		}
	}
}

// ready sends ZooKeeper's four-letter "srvr" and expects a "Mode:" line: "ruok" answers "imok"
// before the server serves requests, and a client connecting then is dropped.
func (z *ZooKeeper) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", z.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("srvr")); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "\nMode: ") {
		return fmt.Errorf("srvr answered %q", b)
	}
	return nil
}

// Addr is the client address, 127.0.0.1:port.
func (z *ZooKeeper) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(z.port)) }

// Port is the client port.
func (z *ZooKeeper) Port() int { return z.port }

// Log returns ZooKeeper's output.
func (z *ZooKeeper) Log() string { return proc.ReadLog(z.logPath) }

// Kill ends ZooKeeper with SIGKILL and waits until it is reaped.
func (z *ZooKeeper) Kill() { z.proc.Kill() }

// Cluster is a ZooKeeper and two clickhouse-server processes forming ClusterName: two shards of one
// replica each, macros {cluster}, {shard} (01, 02) and {replica} (r1) set on each server.
type Cluster struct {
	Name   string
	ZK     *ZooKeeper
	Shards []*Server
}

// StartCluster starts a ZooKeeper and two servers configured as ClusterName and waits until each
// server answers and reaches ZooKeeper, so ON CLUSTER DDL can run at once.
func StartCluster(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	ServerBinary(tb)
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	zk := StartZooKeeper(tb, opts.StartTimeout)
	// The remote_servers section names each server by its native port, so the ports are chosen
	// first and every server gets the same section (a server finds itself in it by host and port).
	ports, err := proc.FreePorts(6)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{Name: ClusterName, ZK: zk}
	var shards strings.Builder
	for i := range 2 {
		fmt.Fprintf(&shards, `
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>%d</port></replica>
            </shard>`, ports[3*i])
	}
	remote := fmt.Sprintf(`
    <remote_servers>
        <%s>%s
        </%s>
    </remote_servers>
    <zookeeper>
        <node><host>127.0.0.1</host><port>%d</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>`, ClusterName, shards.String(), ClusterName, zk.Port())
	bin := ServerBinary(tb)
	for i := range 2 {
		extra := remote + fmt.Sprintf(`
    <macros>
        <cluster>%s</cluster>
        <shard>%02d</shard>
        <replica>r1</replica>
    </macros>`, ClusterName, i+1)
		s, err := startOn(tb, bin, opts, extra, ports[3*i:3*i+3])
		if err != nil {
			tb.Fatalf("clickhouse shard %d: %v", i+1, err)
		}
		c.Shards = append(c.Shards, s)
	}
	// ZooKeeper sessions are opened lazily: wait until each server reads ZooKeeper.
	for _, s := range c.Shards {
		if err := s.poll(`SELECT count() FROM system.zookeeper WHERE path = '/'`); err != nil {
			tb.Fatalf("clickhouse %s: ZooKeeper not reachable: %v", s.Addr(), err)
		}
	}
	return c
}

// poll runs query until it succeeds or the start timeout passes.
func (s *Server) poll(query string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.QueryContext(qctx, query)
		qcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%q did not succeed within %v: %v", query, s.timeout, err)
		case <-tick.C:
		}
	}
}

// Addrs returns the native addresses of the shards.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Shards))
	for i, s := range c.Shards {
		a[i] = s.Addr()
	}
	return a
}
