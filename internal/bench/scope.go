package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tracing setups of msrpscope the harness compares.
const (
	TracingOff     = "off"     // tracing: {enabled: false}
	TracingDefault = "default" // the embedded default: everything → [pcap, recent]
	TracingHEP     = "hep"     // every event and frame → HEP over UDP to the harness
	// TracingHEPGRO is TracingHEP with the harness's UDP socket using UDP_GRO
	// (Linux): the kernel queues each GSO run the relay sends as one buffer
	// instead of cutting it into datagrams in the relay's sendmsg (on
	// loopback the receive path runs in the sender's context and is charged
	// to the relay). A second figure beside the primary hep one, closer to
	// a collector on another host; not what the goals are measured with.
	TracingHEPGRO = "hep-gro"
)

// Limits the generated configs raise so that 2,000 pairs (4,000
// connections and sessions of one user from one address) fit.
const (
	scopeMaxSessionsPerUser  = 8192
	scopeMaxConnectionsPerIP = 8192
)

// scopeConfig returns the YAML config of one tracing setup. Only the
// listener, the admin address, the log level, the two limits above and the
// tracing part of the setup are set; every other key keeps its embedded
// default (metrics on, served by the admin API). The default setup sets no
// tracing key at all: its pcap sink writes into the working directory,
// which the harness makes a temporary one.
func scopeConfig(setup, listen, admin, hepAddr string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  - transport: msrp\n    addr: %q\n", listen)
	fmt.Fprintf(&b, "relay:\n  limits:\n    max_sessions_per_user: %d\n    max_connections_per_ip: %d\n    shutdown_grace: 1s\n",
		scopeMaxSessionsPerUser, scopeMaxConnectionsPerIP)
	fmt.Fprintf(&b, "admin:\n  addr: %q\n", admin)
	b.WriteString("log:\n  level: warn\n")
	switch setup {
	case TracingOff:
		b.WriteString("tracing:\n  enabled: false\n")
	case TracingDefault:
	case TracingHEP, TracingHEPGRO:
		if hepAddr == "" {
			return nil, errors.New("tracing hep: no collector address")
		}
		b.WriteString("tracing:\n  enabled: true\n  rules:\n    - name: everything\n      match: \"\"\n      events: true\n      frames: true\n      to: [hep]\n")
		fmt.Fprintf(&b, "sinks:\n  hep:\n    type: hep\n    addr: %q\n    transport: udp\n", hepAddr)
	default:
		return nil, fmt.Errorf("unknown tracing setup %q (want off, default or hep)", setup)
	}
	return []byte(b.String()), nil
}

// scopeProc is a running msrpscope.
type scopeProc struct {
	setup    string
	dir      string
	addr     string // MSRP listener host:port
	admin    string // admin API host:port
	password string // the demo user's
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
}

func (s *scopeProc) uri() string { return "msrp://" + s.addr + ";tcp" }
func (s *scopeProc) pid() int    { return s.cmd.Process.Pid }

// alive returns an error when the process has exited.
func (s *scopeProc) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("msrpscope (%s) exited: %s", s.setup, s.cmd.ProcessState)
	default:
		return nil
	}
}

func (s *scopeProc) logTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), n)
}

// startScope writes the config of setup into a new directory under
// parent, checks it with -check-config and runs msrpscope with it (as its
// working directory, where the default setup's pcap files go) until its
// MSRP port accepts connections; up to three times when a port is taken.
func startScope(ctx context.Context, bin, parent, setup, hepAddr string) (*scopeProc, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var s *scopeProc
		s, err = startScopeOnce(ctx, bin, parent, setup, hepAddr)
		if err == nil {
			return s, nil
		}
		// A free port taken by someone else between the pick and the bind.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func startScopeOnce(ctx context.Context, bin, parent, setup, hepAddr string) (*scopeProc, error) {
	dir, err := os.MkdirTemp(parent, "msrpscope-"+setup+"-")
	if err != nil {
		return nil, fmt.Errorf("msrpscope %s: %w", setup, err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	s := &scopeProc{
		setup:    setup,
		dir:      dir,
		addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		admin:    net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		password: randomHex(8),
		logPath:  filepath.Join(dir, "msrpscope.log"),
		exited:   make(chan struct{}),
	}
	cfg, err := scopeConfig(setup, s.addr, s.admin, hepAddr)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "msrpscope.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("msrpscope %s: %w", setup, err)
	}
	if out, err := exec.CommandContext(ctx, bin, "-check-config", cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("msrpscope -check-config %s: %w: %s", cfgPath, err, out)
	}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("msrpscope %s: %w", setup, err)
	}
	s.cmd = exec.Command(bin, "-config", cfgPath)
	s.cmd.Dir = dir
	s.cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD="+s.password)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	// Owned by s: ends when the process exits, which stop guarantees.
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	if err := waitListening(ctx, s.addr, s.exited, 20*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("msrpscope %s: %w; log:\n%s", setup, err, s.logTail(20))
	}
	return s, nil
}

// stop sends SIGTERM, then SIGKILL after 5 s.
func (s *scopeProc) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// waitListening polls a TCP connect to addr until it succeeds, exited is
// closed, or timeout passes.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(cctx, "tcp", addr)
		ccancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s: %w", addr, err)
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (held open
// together while picking, so they differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
