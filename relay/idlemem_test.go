package relay_test

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay"
)

// rssKB is this process's resident set size (Linux /proc).
func rssKB(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// memNow is the Go memory in use (heap objects and goroutine stacks)
// after a full collection, and the RSS.
func memNow(t *testing.T) (inuse uint64, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse, rssKB(t)
}

// Issue 14 defect 7: memory per idle connection (accepted, nothing sent
// yet, and after an AUTH-free idle wait) and memory returned after they
// close. The relay runs in this process, so the figures include the
// client side's sockets (a net.Conn each, small). BENCHMARKS.md.
//
//	go test -run TestIdleConnectionMemory -v ./relay
func TestIdleConnectionMemory(t *testing.T) {
	if relay.RaceEnabled {
		t.Skip("memory differs under -race; run without it")
	}
	const n = 2000
	tr := startRelay(t, func(c *relay.Config) { c.Limits.MaxConnectionsPerIP = 2 * n })
	base, baseRSS := memNow(t)
	for round := 1; round <= 3; round++ {
		conns := make([]net.Conn, 0, n)
		for range n {
			nc, err := net.Dial("tcp", tr.addr())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
		}
		for tr.Stats().Connections < n {
			time.Sleep(time.Millisecond) // polling a state
		}
		inuse, rss := memNow(t)
		per := (int64(inuse) - int64(base)) / n
		t.Logf("round %d: %d idle connections: Go heap+stacks %d KB/conn, RSS %d → %d MB (%d KB/conn)",
			round, n, per>>10, baseRSS>>10, rss>>10, (rss-baseRSS)/n)
		for _, nc := range conns {
			_ = nc.Close()
		}
		for tr.Stats().Connections > 0 {
			time.Sleep(time.Millisecond) // polling a state
		}
		inuse, rss = memNow(t)
		t.Logf("round %d: after close: Go heap+stacks %+d KB, RSS %d MB", round, (int64(inuse)-int64(base))>>10, rss>>10)
		if round == 3 && per > 16<<10 { // 86 KiB before
			t.Errorf("%d bytes per idle connection, want at most 16 KiB", per)
		}
	}
}
