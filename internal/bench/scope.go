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
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
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
	proc     *proc.Proc
	logPath  string
}

func (s *scopeProc) uri() string { return "msrp://" + s.addr + ";tcp" }
func (s *scopeProc) pid() int    { return s.proc.Pid() }

// alive returns an error when the process has exited.
func (s *scopeProc) alive() error {
	if s.proc.Done() {
		return fmt.Errorf("msrpscope (%s) exited: %s", s.setup, s.proc.Cmd.ProcessState)
	}
	return nil
}

func (s *scopeProc) logTail(n int) string { return proc.Tail(proc.ReadLog(s.logPath), n) }

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
	ports, err := proc.FreePorts(2)
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
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MSRPSCOPE_DEMO_PASSWORD="+s.password)
	cmd.Stdout, cmd.Stderr = logf, logf
	s.proc, err = proc.Start(cmd, func() { logf.Close() })
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := proc.WaitTCP(ctx, s.addr, s.proc.Exited(), 20*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("msrpscope %s: %w; log:\n%s", setup, err, s.logTail(20))
	}
	return s, nil
}

// stop sends SIGTERM, then SIGKILL to the process group after 5 s.
func (s *scopeProc) stop() { s.proc.Stop(5 * time.Second) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
