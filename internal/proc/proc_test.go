package proc

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStopTerminates(t *testing.T) {
	p, err := Start(exec.Command("sleep", "60"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done() {
		t.Fatal("done before stop")
	}
	if killed := p.Stop(time.Minute); killed {
		t.Fatal("sleep needed SIGKILL")
	}
	if !p.Done() {
		t.Fatal("Stop returned before the process was reaped")
	}
	p.Stop(time.Minute) // a second stop returns at once
}

// A process that ignores SIGTERM is killed after the grace period, its
// whole group with it (the child sleep too).
func TestStopKillsGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", `trap "" TERM; sleep 60 & echo $!; wait`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	onExit := make(chan struct{})
	p, err := Start(cmd, func() { close(onExit) })
	if err != nil {
		t.Fatal(err)
	}
	// The child's pid, printed after the trap is set.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		p.Kill()
		t.Fatal(err)
	}
	child := strings.TrimSpace(line)
	if !p.Stop(200 * time.Millisecond) {
		t.Fatal("a process ignoring SIGTERM was not killed")
	}
	select {
	case <-onExit:
	default:
		t.Fatal("onExit did not run before Exited closed")
	}
	// SIGKILL reaches the child asynchronously: it must become a zombie
	// (or be gone) soon; without the group kill it sleeps for a minute.
	deadline := time.Now().Add(10 * time.Second)
	for !deadOrZombie(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %s of the killed group still runs", child)
		}
		runtime.Gosched()
	}
}

func deadOrZombie(pid string) bool {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v", ports)
		}
		seen[p] = true
	}
}

func TestWaitTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := WaitTCP(context.Background(), addr, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Close()
	exited := make(chan struct{})
	close(exited)
	err = WaitTCP(context.Background(), addr, exited, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before listening") {
		t.Fatalf("closed port, exited process: %v", err)
	}
	err = WaitTCP(context.Background(), addr, nil, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("closed port: %v", err)
	}
}

func TestTail(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"", 3, ""},
	} {
		if got := Tail(c.in, c.n); got != c.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestReadLog(t *testing.T) {
	p := t.TempDir() + "/x.log"
	if err := os.WriteFile(p, []byte("one\ntwo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ReadLog(p); got != "one\ntwo\n" {
		t.Fatalf("ReadLog = %q", got)
	}
	if got := ReadLog(p + ".missing"); !strings.HasPrefix(got, "(reading ") {
		t.Fatalf("ReadLog of a missing file = %q", got)
	}
}
