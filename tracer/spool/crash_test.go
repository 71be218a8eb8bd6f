package spool

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const crashEnv = "SPOOL_CRASH_CHILD_DIR"

// TestMain runs the crash child when re-executed by TestCrashRecovery.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// crashChild appends rec(0), rec(1), ... forever while a consumer drains
// them, printing "W i" after Append(i) returned nil and "A i" after the Ack of
// record i returned nil, until it is killed.
func crashChild(dir string) {
	s, err := Open(Config{Dir: dir, SegmentBytes: 2048})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format, a...)
		mu.Unlock()
	}
	more := make(chan struct{}, 1)
	go func() {
		for {
			r, ok, err := s.Peek()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if !ok {
				<-more
				continue
			}
			i, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(string(r), "|", 2)[0], "rec-"))
			if err := s.Ack(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			say("A %d\n", i)
		}
	}()
	for i := 0; ; i++ {
		if err := s.Append(rec(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		say("W %d\n", i)
		select {
		case more <- struct{}{}:
		default:
		}
	}
}

// TestCrashRecovery SIGKILLs a process appending and acknowledging at a
// random point; reopened, the spool holds exactly the records from the first
// one not acknowledged (or the one whose Ack was in flight) to at least the
// last one whose Append returned, in order and intact.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round := range 6 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashEnv+"="+dir)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killAfter := 1 + rand.IntN(150)
			lastW, lastA, writes := -1, -1, 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				kind, num, _ := strings.Cut(sc.Text(), " ")
				i, err := strconv.Atoi(num)
				if err != nil {
					t.Fatalf("child said %q", sc.Text())
				}
				switch kind {
				case "W":
					lastW = i
					writes++
					if writes == killAfter {
						cmd.Process.Kill() // SIGKILL; lines already in the pipe are still read
					}
				case "A":
					lastA = i
				}
			}
			cmd.Wait()
			if writes < killAfter {
				t.Fatalf("child ended early after %d appends: %s", writes, stderr.String())
			}

			s := mustOpen(t, Config{Dir: dir, SegmentBytes: 2048})
			defer s.Close()
			got := drain(t, s, -1)
			// Expected: rec(first..last) with first ∈ {lastA+1, lastA+2}
			// (the Ack in flight may or may not have been persisted) and
			// last ≥ lastW (an Append in flight may have reached the disk).
			first := lastA + 1
			if len(got) > 0 && got[0] != string(rec(first)) && got[0] == string(rec(first+1)) {
				first++
			}
			for k, r := range got {
				if r != string(rec(first+k)) {
					t.Fatalf("record %d after recovery = %.20q, want rec(%d) (lastA %d, lastW %d)", k, r, first+k, lastA, lastW)
				}
			}
			if last := first + len(got) - 1; last < lastW {
				t.Fatalf("recovered rec(%d..%d), but Append(%d) had returned nil", first, last, lastW)
			}
			t.Logf("killed after %d appends: lastA %d, lastW %d, recovered %d records, stats %+v",
				writes, lastA, lastW, len(got), s.Stats())
		})
	}
}
