package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
)

// Latency is a latency summary of msrpload's JSON, in nanoseconds.
type Latency struct {
	P50 int64 `json:"p50"`
	P90 int64 `json:"p90"`
	P99 int64 `json:"p99"`
	Max int64 `json:"max"`
}

// LoadReport is the part of msrpload's -json object the harness reads.
// Fields older or newer msrpload versions do not print stay at their zero
// value or nil: pointers and nil maps mean "unknown".
type LoadReport struct {
	Pairs            int              `json:"pairs"`
	Window           int              `json:"window"`
	BodyBytes        int              `json:"body_bytes"`
	ChunkBytes       int              `json:"chunk_bytes"`
	Seconds          float64          `json:"seconds"`
	Messages         int64            `json:"messages"`
	SendFrames       int64            `json:"send_frames"` // SENDs answered 200
	SendFramesPerSec float64          `json:"send_frames_per_sec"`
	MBPerSec         float64          `json:"mb_per_sec"`
	ReceivedSends    *int64           `json:"received_sends"`
	ReceivedBytes    *int64           `json:"received_bytes"`
	Errors           map[string]int64 `json:"errors"`
	// Newer fields.
	MessagesDelivered  *int64          `json:"messages_delivered"`
	SendLatency        *Latency        `json:"send_latency_ns"`
	DeliveryLatency    *Latency        `json:"delivery_latency_ns"`
	ExitStatus         *int            `json:"exit_status"`
	MsrploadCPUSeconds *float64        `json:"msrpload_cpu_seconds"`
	Hints              json.RawMessage `json:"hints,omitempty"`
	Schedule           *Schedule       `json:"schedule,omitempty"` // -rate runs
	// Older fields.
	LatencyP50 *int64 `json:"latency_p50_ns"`
	LatencyP99 *int64 `json:"latency_p99_ns"`
}

// Schedule is how a -rate run kept its schedule (msrpload's "schedule").
type Schedule struct {
	TargetPerSec   float64 `json:"target_per_sec"`
	AchievedPerSec float64 `json:"achieved_per_sec"`
	Started        int64   `json:"started"`
	Behind         int64   `json:"behind"`
	Late           int64   `json:"late"`
}

// errorCount is the sum of Errors.
func (r *LoadReport) errorCount() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// sendP99 returns the SEND→200 p99 in ns, or -1 when unknown.
func (r *LoadReport) sendP99() int64 {
	switch {
	case r.SendLatency != nil:
		return r.SendLatency.P99
	case r.LatencyP99 != nil:
		return *r.LatencyP99
	}
	return -1
}

// parseLoadJSON reads the first JSON object of msrpload's standard output
// (a summary line may follow it).
func parseLoadJSON(out []byte) (*LoadReport, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return nil, errors.New("no JSON object in msrpload's output")
	}
	var r LoadReport
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&r); err != nil {
		return nil, fmt.Errorf("msrpload's JSON: %w", err)
	}
	return &r, nil
}

// loadRun is one msrpload child process's outcome.
type loadRun struct {
	report   *LoadReport
	exitCode int
	cpu      time.Duration // the child's user+system time, from wait4
	stderr   string
}

// runLoad runs bin with args plus -json and returns its report. A
// non-zero exit with a report is not an error (msrpload exits non-zero
// when a relay lost messages, which is a result); no report is.
func runLoad(ctx context.Context, bin string, args []string) (*loadRun, error) {
	return runLoadProgress(ctx, bin, args, nil)
}

// progressPrefix starts msrpload's -progress-json lines on its stderr.
const progressPrefix = "progress "

// runLoadProgress is runLoad; with onSample, msrpload runs with
// -progress-json and onSample gets each progress line as it arrives (in
// the calling goroutine's stead: one goroutine reads msrpload's stderr
// and calls it; it has returned when runLoadProgress does).
func runLoadProgress(ctx context.Context, bin string, args []string, onSample func(progressSample)) (*loadRun, error) {
	args = append(append([]string(nil), args...), "-json")
	if onSample != nil {
		args = append(args, "-progress-json")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	var err error
	if onSample == nil {
		cmd.Stderr = &stderr
		err = cmd.Run()
	} else {
		err = runReadingStderr(cmd, &stderr, onSample)
	}
	lr := &loadRun{exitCode: -1, stderr: stderr.String()}
	if cmd.ProcessState != nil {
		lr.exitCode = cmd.ProcessState.ExitCode()
		lr.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	rep, perr := parseLoadJSON(stdout.Bytes())
	if perr != nil {
		if err == nil {
			err = perr
		}
		return lr, fmt.Errorf("msrpload %s: %w; stderr:\n%s", strings.Join(args, " "), err, proc.Tail(stderr.String(), 10))
	}
	lr.report = rep
	return lr, nil
}

// runReadingStderr runs cmd, passing its stderr's progress lines to
// onSample and keeping the other lines in other. The reader ends at EOF
// (the process and its children have closed the pipe) before Wait.
func runReadingStderr(cmd *exec.Cmd, other *bytes.Buffer, onSample func(progressSample)) error {
	pr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte(progressPrefix)); ok {
			var s progressSample
			if json.Unmarshal(rest, &s) == nil {
				onSample(s)
				continue
			}
		}
		other.Write(line)
		other.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		// A line over 1 MB: drain the rest so that msrpload is not
		// blocked writing, and say so.
		_, _ = io.Copy(io.Discard, pr)
		fmt.Fprintf(other, "(reading stderr: %v)\n", err)
	}
	return cmd.Wait()
}
