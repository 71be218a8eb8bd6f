package spool

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
// them, printing "W i" after Append(i) returned nil, "P i" when Peek returned
// record i (before its Ack) and "A i" after the Ack of record i returned nil,
// until it is killed.
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
			say("P %d\n", i)
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
// random point; reopened, the spool must hold what checkRecovered accepts.
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
			c := crashLog{lastW: -1, lastP: -1, lastA: -1}
			writes := 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				kind, num, _ := strings.Cut(sc.Text(), " ")
				i, err := strconv.Atoi(num)
				if err != nil {
					t.Fatalf("child said %q", sc.Text())
				}
				switch kind {
				case "W":
					c.lastW = i
					writes++
					if writes == killAfter {
						cmd.Process.Kill() // SIGKILL; lines already in the pipe are still read
					}
				case "P":
					c.lastP = i
				case "A":
					c.lastA = i
				}
			}
			cmd.Wait()
			if writes < killAfter {
				t.Fatalf("child ended early after %d appends: %s", writes, stderr.String())
			}

			files := dirReport(dir)
			s := mustOpen(t, Config{Dir: dir, SegmentBytes: 2048})
			defer s.Close()
			got := drain(t, s, -1)
			if err := c.check(got); err != nil {
				t.Fatalf("%v\nspool before reopening:\n%s", err, files)
			}
			t.Logf("killed after %d appends: %+v, recovered %d records, stats %+v", writes, c, len(got), s.Stats())
		})
	}
}

// crashLog is what the crash child reported before it died: the last record
// whose Append returned nil (W), the last one Peek returned, its Ack then
// called (P), and the last one whose Ack returned nil (A); -1 for none.
type crashLog struct{ lastW, lastP, lastA int }

// check tells whether got, the records a reopened spool delivered, is what
// the child may have left: rec(first..last), in order and intact, where
//   - first is lastA+1, or lastA+2 when the Ack of lastA+1 had been called
//     (lastP == lastA+1): it may have been persisted before the kill
//     without "A" having been printed; got is then empty when that record
//     was also the last one appended;
//   - last is lastW, or lastW+1 when the next Append reached the disk
//     before the kill without "W" having been printed.
func (c crashLog) check(got []string) error {
	first := c.lastA + 1
	inFlightAck := c.lastP == c.lastA+1
	if inFlightAck && (len(got) == 0 || got[0] != string(rec(first))) {
		first++ // the Ack in flight was persisted
	}
	for k, r := range got {
		if r != string(rec(first+k)) {
			return fmt.Errorf("record %d after recovery = %.20q, want rec(%d) (%+v)", k, r, first+k, c)
		}
	}
	last := first + len(got) - 1
	if last < c.lastW {
		return fmt.Errorf("recovered rec(%d..%d), but Append(%d) had returned nil (%+v)", first, last, c.lastW, c)
	}
	if last > c.lastW+1 {
		return fmt.Errorf("recovered rec(%d..%d), but only Append(%d) can have been in flight (%+v)", first, last, c.lastW+1, c)
	}
	return nil
}

// TestCrashLogCheck pins the crash test's oracle, with the case that made
// TestCrashRecovery fail spuriously: the Ack of the last record appended
// persisted, the child killed before it printed "A", the reopened spool
// rightly empty.
func TestCrashLogCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    crashLog
		got  []int
		ok   bool
	}{
		{"all acknowledged", crashLog{lastW: 5, lastP: 5, lastA: 5}, nil, true},
		{"waiting records", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(3, 6), true},
		{"Append in flight reached disk", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(3, 7), true},
		{"Ack in flight not persisted", crashLog{lastW: 5, lastP: 3, lastA: 2}, span(3, 6), true},
		{"Ack in flight persisted", crashLog{lastW: 5, lastP: 3, lastA: 2}, span(4, 6), true},
		{"Ack in flight of the last record persisted", crashLog{lastW: 68, lastP: 68, lastA: 67}, nil, true},
		{"Ack in flight of the last record not persisted", crashLog{lastW: 68, lastP: 68, lastA: 67}, []int{68}, true},
		{"nothing appended", crashLog{lastW: -1, lastP: -1, lastA: -1}, nil, true},
		{"last record lost, not peeked", crashLog{lastW: 68, lastP: 67, lastA: 67}, nil, false},
		{"last records lost", crashLog{lastW: 70, lastP: 68, lastA: 67}, nil, false},
		{"tail lost", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(3, 5), false},
		{"acknowledged record replayed", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(2, 6), false},
		{"record skipped", crashLog{lastW: 5, lastP: 2, lastA: 2}, []int{3, 5}, false},
		{"first waiting record lost", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(4, 6), false},
		{"two Appends beyond the last reported", crashLog{lastW: 5, lastP: 2, lastA: 2}, span(3, 8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.check(want(tc.got...))
			if (err == nil) != tc.ok {
				t.Errorf("check(rec%v) = %v, want ok %v", tc.got, err, tc.ok)
			}
		})
	}
}

// TestAckOfLastRecordSurvivesReopen is the sequence the failed crash run went
// through, without the kill: every record appended is acknowledged, the last
// Ack in the active segment; reopened, the spool is empty, and new records
// go after it.
func TestAckOfLastRecordSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 2048}
	s := mustOpen(t, cfg)
	appendRange(t, s, 0, 69)
	if got := drain(t, s, -1); !slices.Equal(got, want(span(0, 69)...)) {
		t.Fatalf("drained %d records, want rec(0..68)", len(got))
	}
	s.Close()

	s = mustOpen(t, cfg)
	if got := drain(t, s, -1); len(got) != 0 {
		t.Fatalf("after reopen: %d records, first %.20q; want none", len(got), got[0])
	}
	if err := (crashLog{lastW: 68, lastP: 68, lastA: 67}).check(nil); err != nil {
		t.Fatalf("the crash test's oracle refuses this state: %v", err)
	}
	appendRange(t, s, 69, 72)
	s.Close()
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := drain(t, s, -1); !slices.Equal(got, want(69, 70, 71)) {
		t.Fatalf("after appending and reopening: %q, want rec(69..71)", got)
	}
}

// dirReport lists dir's files, the ack position and each segment's records,
// for a failure message.
func dirReport(dir string) string {
	var b strings.Builder
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, "%s: %d bytes", e.Name(), len(data))
		switch {
		case err != nil:
			fmt.Fprintf(&b, ", %v", err)
		case e.Name() == "ack":
			gen, a, err := decodeAck(data)
			fmt.Fprintf(&b, ", generation %d, position %+v, err %v", gen, a, err)
		case strings.HasSuffix(e.Name(), ".seg"):
			r, err := scanSegment(data)
			if err != nil {
				fmt.Fprintf(&b, ", %v", err)
			}
			for _, off := range r.offs {
				n, _ := recordAt(data, off)
				name, _, _ := strings.Cut(string(data[off+recHdrSize:off+recHdrSize+n]), "|")
				fmt.Fprintf(&b, " %s@%d", name, off)
			}
			if r.corrupt > 0 {
				fmt.Fprintf(&b, ", %d corrupt regions", r.corrupt)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
