package pcapsink

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/msrpscope/msrpscope/internal/faultfs"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/pcap"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// bigFrame is a frame event of about n bytes: one pcap packet (n < 1460).
func bigFrame(i, n int) *event.Event {
	e := frame(i)
	wire := "MSRP t1 SEND\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("x", n) + "\r\n-------t1$\r\n"
	e.Frame.Wire, e.Frame.Size = []byte(wire), int64(len(wire))
	return e
}

// onDisk returns our pcap files in dir and the packets they hold, each file
// read whole (a file cut short in a packet fails the test).
func onDisk(t *testing.T, dir string) (files []string, packets int) {
	t.Helper()
	files, _ = filepath.Glob(filepath.Join(dir, "msrpscope-*.pcap"))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, perm)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s (%d bytes): %v", f, len(data), err)
		}
		for {
			_, _, err := r.ReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: packet %d: %v", f, packets+1, err)
			}
			packets++
		}
	}
	return files, packets
}

// logLines is a slog handler's output, safe for the sink's goroutine.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// A full disk (a 4 MiB tmpfs, four times the writer's buffer): records that did not reach the file are
// dropped, not sent; the file that filled up stays a valid capture of
// exactly the records counted as sent, and no file is created per record.
func TestFullDisk(t *testing.T) {
	dir := faultfs.Tmpfs(t, 4<<20)
	var logs logLines
	const n = 16000 // ~16 MB of frames
	cfg, err := Kind{}.Decode(dirDecoder(dir))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Kind{}.Open(context.Background(), cfg, sink.Options{Name: "p", QueueSize: n,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s.Put(bigFrame(i, 1000))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Logf("close: %v", err) // the last write may fail too
	}
	st := s.Stats()
	files, packets := onDisk(t, dir)
	t.Logf("stats %+v; %d files, %d packets on disk", st, len(files), packets)
	if st.Sent+st.Dropped != n {
		t.Errorf("sent %d + dropped %d != %d put", st.Sent, st.Dropped, n)
	}
	if st.Sent == 0 || st.Dropped == 0 || st.Sent != uint64(packets) {
		t.Errorf("sent %d, dropped %d, %d packets on disk: sent must be what is on disk", st.Sent, st.Dropped, packets)
	}
	if len(files) > 2 {
		t.Errorf("%d files on a full disk", len(files))
	}
	if st.State != sink.StateDegraded || !strings.Contains(st.LastError, "no space") {
		t.Errorf("state %q, last error %q", st.State, st.LastError)
	}
	if c := logs.count("pcap write failed"); c < 1 || c > 3 {
		t.Errorf("%d log lines about failed writes:\n%s", c, logs.b.String())
	}
}

// The folder becomes read-only in the middle of a run: rotations fail, the
// writer waits before each new attempt instead of trying at every record,
// counts what it refuses as dropped, logs with counts, and writes again once
// the folder is writable.
func TestFolderReadOnlyMidRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pcaps")
	clk := &clock{t: time.Unix(1700000000, 0)}
	w, err := pcap.Open(pcap.Config{Dir: dir, MaxFileBytes: 16 << 10, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var logs logLines
	p := start(sink.Options{Name: "p", QueueSize: 1000, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, w, 0)
	const n, roAt, rwAt = 400, 100, 300
	at := make(chan int)
	release := make(chan struct{})
	i := 0
	p.beforeWrite = func() {
		if i == roAt || i == rwAt {
			at <- i
			<-release
		}
		i++
	}
	for i := range n {
		p.Put(bigFrame(i, 500))
	}
	<-at // record roAt is next
	undo := faultfs.ReadOnly(t, dir)
	release <- struct{}{}
	<-at // record rwAt is next
	mid := p.Stats()
	undo()
	clk.Advance(time.Minute) // past any wait
	release <- struct{}{}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	files, packets := onDisk(t, dir)
	t.Logf("while read-only: %+v\nat the end: %+v; %d files, %d packets", mid, st, len(files), packets)
	if st.Sent+st.Dropped != n || st.Sent != uint64(packets) {
		t.Errorf("sent %d + dropped %d != %d put, or %d packets on disk", st.Sent, st.Dropped, n, packets)
	}
	if mid.State != sink.StateDegraded || !strings.Contains(mid.LastError, "read-only") {
		t.Errorf("while read-only: state %q, last error %q", mid.State, mid.LastError)
	}
	// The clock stood still while the folder was read-only: one attempt to
	// create a file, not one per record.
	if mid.Errors != 1 || mid.Dropped < 150 {
		t.Errorf("while read-only: %d errors, %d dropped", mid.Errors, mid.Dropped)
	}
	if st.State != sink.StateOK || st.Errors != mid.Errors {
		t.Errorf("after: state %q, %d errors", st.State, st.Errors)
	}
	if st.Sent < roAt+n-rwAt-10 {
		t.Errorf("only %d sent", st.Sent)
	}
	if logs.count("pcap write failed") != 1 || logs.count("pcap sink writing again") != 1 {
		t.Errorf("log:\n%s", logs.b.String())
	}
}

// An unwritable folder at start does not stop the start: the sink starts
// degraded (readiness and metrics read that), creates nothing, and drops
// and counts what it cannot write.
func TestUnwritableAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"parent is a file", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(f, "pcaps")
		}},
		{"read-only folder", func(t *testing.T) string {
			dir := t.TempDir()
			faultfs.ReadOnly(t, dir)
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			var logs logLines
			cfg, err := Kind{}.Decode(dirDecoder(dir))
			if err != nil {
				t.Fatal(err)
			}
			s, err := Kind{}.Open(context.Background(), cfg, sink.Options{Name: "p", QueueSize: 100,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if st := s.Stats(); st.State != sink.StateDegraded || st.LastError == "" {
				t.Errorf("at start: %+v", st)
			}
			if logs.count("starts degraded") != 1 {
				t.Errorf("log:\n%s", logs.b.String())
			}
			for i := range 10 {
				s.Put(frame(i))
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Sent != 0 || st.Dropped != 10 || st.State != sink.StateDegraded {
				t.Errorf("after: %+v", st)
			}
			if entries, err := os.ReadDir(dir); err == nil && len(entries) != 0 {
				t.Errorf("files created: %v", entries)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrInvalid) && !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("read dir: %v", err)
			}
		})
	}
}

// A sink that gets no record creates no file (tracing off: nothing on disk).
func TestNoRecordNoFile(t *testing.T) {
	dir := t.TempDir()
	p := open(t, 10, dirDecoder(dir))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files: %v", entries)
	}
	if st := p.Stats(); st.State != sink.StateOK || st.Sent != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// clock is a settable clock, safe across goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// A folder that stays unwritable for minutes: attempts come after growing
// waits (1s doubling to 30s), and the warnings at most every 10s, each with
// the count of failures since the last one.
func TestFailureLogRateLimited(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(1700000000, 0)}
	w, err := pcap.Open(pcap.Config{Dir: filepath.Join(file, "pcaps"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var logs logLines
	p := start(sink.Options{Name: "p", QueueSize: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, w, 0)
	p.now = clk.Now
	p.beforeWrite = func() { clk.Advance(time.Second) } // one record a second, for 100 s
	const n = 100
	for i := range n {
		p.Put(frame(i))
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	// Attempts at 1, 2, 4, 8, 16, 32, 62, 92 s after the first record: 8 errors.
	if st.Errors != 8 || st.Dropped != n || st.Sent != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Lines at the failures of 1, 16, 32, 62 and 92 s; the second carries the 4 since the first.
	if c := logs.count("pcap write failed"); c != 5 || logs.count("failures_since_last_log=4") != 1 {
		t.Fatalf("%d warnings:\n%s", c, logs.b.String())
	}
}
