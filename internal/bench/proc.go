package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on Linux for every architecture Go supports.
const clkTck = 100

// statFields are what bench reads from /proc/<pid>/stat (proc(5)).
type statFields struct {
	ppid  int
	ticks uint64 // utime + stime, in 1/clkTck s
}

// parseStat reads ppid (field 4) and utime+stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself, so fields are counted from the
// last ')'.
func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, errors.New("stat: no ')' after the command name")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 13 {
		return statFields{}, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return statFields{}, fmt.Errorf("stat: ppid: %w", err)
	}
	ut, err := strconv.ParseUint(string(f[11]), 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(string(f[12]), 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("stat: stime: %w", err)
	}
	return statFields{ppid: ppid, ticks: ut + st}, nil
}

// readStat parses /proc/<pid>/stat.
func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return statFields{}, err
	}
	sf, err := parseStat(b)
	if err != nil {
		return statFields{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return sf, nil
}

// processTree returns pid and all its descendants (Kamailio's main
// process forks its workers), found by the ppid of every process in /proc.
func processTree(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sf, err := readStat(p)
		if err != nil {
			continue // exited meanwhile, or not readable
		}
		children[sf.ppid] = append(children[sf.ppid], p)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}

// cpuTicks sums utime+stime over pids. A process that has exited is left
// out (its ticks are lost to the sum, as they would be to top).
func cpuTicks(pids []int) (uint64, error) {
	var sum uint64
	n := 0
	var firstErr error
	for _, p := range pids {
		sf, err := readStat(p)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sum += sf.ticks
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("no process to read CPU time of: %w", firstErr)
	}
	return sum, nil
}

// memInfo is a relay's memory after a load phase, in KiB.
type memInfo struct {
	// RSSKB: VmRSS for one process; for several, the sum of their Pss
	// (/proc/<pid>/smaps_rollup), which counts shared memory (Kamailio's
	// shm) once instead of once per process.
	RSSKB int64 `json:"rss_kib"`
	// HWMKB is the peak VmRSS (VmHWM) of the main process.
	HWMKB int64 `json:"hwm_kib"`
}

// parseStatusKB returns the value in kB of the "key:" line of
// /proc/<pid>/status or smaps_rollup, or -1 when absent.
func parseStatusKB(b []byte, key string) int64 {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		rest, ok := bytes.CutPrefix(line, []byte(key+":"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return -1
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// readMem reads memInfo of pids (pids[0] the main process).
func readMem(pids []int) (memInfo, error) {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/status")
	if err != nil {
		return memInfo{}, err
	}
	m := memInfo{RSSKB: parseStatusKB(st, "VmRSS"), HWMKB: parseStatusKB(st, "VmHWM")}
	if len(pids) == 1 {
		return m, nil
	}
	m.RSSKB = 0
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/smaps_rollup")
		if err != nil {
			continue
		}
		if v := parseStatusKB(b, "Pss"); v > 0 {
			m.RSSKB += v
		}
	}
	return m, nil
}
