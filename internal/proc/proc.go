// Package proc runs the servers the tests and the bench harness start
// (msrpscope, Kamailio, ClickHouse, ZooKeeper, Prometheus): a command in a
// process group of its own, reaped by one goroutine; a stop that sends
// SIGTERM and, after a grace period, SIGKILL to the whole group; free
// loopback ports; a wait until a TCP port accepts.
package proc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a started command.
type Proc struct {
	Cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts cmd in a process group of its own (keeping any other
// SysProcAttr fields, e.g. Pdeathsig) and reaps it in a goroutine owned by
// the Proc: it ends when the process exits, which Stop and Kill guarantee.
// onExit, when not nil, runs after the process is reaped and before Exited
// is closed (e.g. to close the log file given to cmd).
func Start(cmd *exec.Cmd, onExit func()) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		if onExit != nil {
			onExit()
		}
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process's id, which is also its process group's.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed when the process has been reaped.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Done reports whether the process has been reaped.
func (p *Proc) Done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process (which stops its own children), then
// SIGKILL to its process group when it has not exited within grace, and
// returns when it is reaped. It reports whether SIGKILL was needed.
func (p *Proc) Stop(grace time.Duration) (killed bool) {
	return p.stop(p.Pid(), grace)
}

// StopGroup is Stop sending SIGTERM to the whole process group.
func (p *Proc) StopGroup(grace time.Duration) (killed bool) {
	return p.stop(-p.Pid(), grace)
}

func (p *Proc) stop(target int, grace time.Duration) bool {
	if p.Done() {
		return false
	}
	_ = syscall.Kill(target, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return false
	case <-t.C:
		p.Kill()
		return true
	}
}

// Kill sends SIGKILL to the process group and returns when the process is
// reaped.
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.exited
}

// FreePorts returns n distinct TCP ports free on 127.0.0.1 at the time of
// the call (held open together while picking, so they differ). Another
// process may take one before the caller binds it: callers retry on
// "address already in use".
func FreePorts(n int) ([]int, error) {
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

// FreePort is FreePorts(1).
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// WaitTCP polls a TCP connect to addr every 20 ms until one succeeds,
// exited is closed (nil: never), ctx ends or timeout passes.
func WaitTCP(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
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
			return fmt.Errorf("not listening on %s after %v: %w", addr, timeout, err)
		case <-tick.C:
		}
	}
}

// ReadLog returns the content of a started process's log file, or a line
// saying why it could not be read.
func ReadLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	return string(b)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
