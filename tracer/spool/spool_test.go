package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rec returns record i: its index and a body of varying length (0-96 bytes
// after the prefix), so records straddle segment boundaries differently.
func rec(i int) []byte {
	b := fmt.Appendf(nil, "rec-%06d|", i)
	for j := range i % 97 {
		b = append(b, byte('a'+(i+j)%26))
	}
	return b
}

func frameSize(i int) int64 { return recHdrSize + int64(len(rec(i))) }

func mustOpen(t testing.TB, cfg Config) *Spool {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func appendRange(t testing.TB, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Append(rec(i)); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
}

// drain peeks and acks up to max records (all when max < 0) and returns them.
func drain(t testing.TB, s *Spool, max int) []string {
	t.Helper()
	var got []string
	for max < 0 || len(got) < max {
		r, ok, err := s.Peek()
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if !ok {
			break
		}
		got = append(got, string(r))
		if err := s.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	return got
}

func want(idx ...int) []string {
	var w []string
	for _, i := range idx {
		w = append(w, string(rec(i)))
	}
	return w
}

func span(from, to int) []int {
	var r []int
	for i := from; i < to; i++ {
		r = append(r, i)
	}
	return r
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestOrderAcrossReopenAndRotation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		segBytes int64
		n        int
	}{
		{"one segment", 0, 200},
		{"rotating every record", 1, 50},
		{"rotating every few", 300, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{Dir: dir, SegmentBytes: tc.segBytes}
			s := mustOpen(t, cfg)
			appendRange(t, s, 0, tc.n)
			if got := s.Len(); got != tc.n {
				t.Fatalf("Len = %d, want %d", got, tc.n)
			}
			got := drain(t, s, tc.n/4)
			s.Close()

			s = mustOpen(t, cfg)
			if got := s.Len(); got != tc.n-tc.n/4 {
				t.Fatalf("Len after reopen = %d, want %d", got, tc.n-tc.n/4)
			}
			got = append(got, drain(t, s, tc.n/4)...)
			appendRange(t, s, tc.n, tc.n+10)
			s.Close()

			s = mustOpen(t, cfg)
			defer s.Close()
			got = append(got, drain(t, s, -1)...)
			if w := want(span(0, tc.n+10)...); !slices.Equal(got, w) {
				t.Fatalf("records out of order or missing:\ngot  %q\nwant %q", got, w)
			}
			st := s.Stats()
			if st.Corrupt != 0 || st.CorruptFiles != 0 || st.Records != 0 {
				t.Fatalf("Stats = %+v", st)
			}
			// Fully acknowledged segments are deleted; the active one may stay.
			if segs := segFiles(t, dir); len(segs) > 1 {
				t.Fatalf("segments left after draining: %v", segs)
			}
		})
	}
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	// Room for the segment magic and exactly 5 records of rec(0..4) sizes.
	var max int64 = int64(len(segMagic))
	for i := range 5 {
		max += frameSize(i)
	}
	s := mustOpen(t, Config{Dir: dir, MaxBytes: max})
	defer s.Close()
	appendRange(t, s, 0, 5)
	if err := s.Append(rec(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append beyond MaxBytes: err = %v, want ErrFull", err)
	}
	if err := s.Append(nil); !errors.Is(err, ErrFull) {
		t.Fatalf("empty Append beyond MaxBytes: err = %v, want ErrFull", err)
	}
	if err := s.Append(make([]byte, max)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append larger than MaxBytes: err = %v, want ErrTooLarge", err)
	}
	st := s.Stats()
	if st.Full != 3 || st.Bytes != max || st.Records != 5 || st.Appended != 5 {
		t.Fatalf("Stats = %+v, want Full 3, Bytes %d, Records 5", st, max)
	}
	// Draining frees the space: the full segment is deleted once a new one
	// is active (the active one is kept).
	if got := drain(t, s, -1); !slices.Equal(got, want(span(0, 5)...)) {
		t.Fatalf("drain = %q", got)
	}
	// The drained segment is deleted when the next Append rotates.
	appendRange(t, s, 0, 5)
	if segs := segFiles(t, dir); len(segs) != 1 {
		t.Fatalf("segments = %v", segs)
	}
	s.Close()
	s = mustOpen(t, Config{Dir: dir, MaxBytes: max})
	defer s.Close()
	if got := drain(t, s, -1); !slices.Equal(got, want(span(0, 5)...)) {
		t.Fatalf("drain after reopen = %q", got)
	}
}

func TestFullRotatingFreesSpace(t *testing.T) {
	dir := t.TempDir()
	seg := int64(len(segMagic)) + frameSize(0) + frameSize(1)
	s := mustOpen(t, Config{Dir: dir, MaxBytes: 2 * seg, SegmentBytes: seg})
	defer s.Close()
	appendRange(t, s, 0, 2) // segment 1 full
	appendRange(t, s, 0, 1) // segment 2
	if err := s.Append(rec(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	drain(t, s, 2) // segment 1 acknowledged and deleted
	if err := s.Append(rec(1)); err != nil {
		t.Fatalf("Append after the oldest segment was drained: %v", err)
	}
	if got := drain(t, s, -1); !slices.Equal(got, want(0, 1)) {
		t.Fatalf("drain = %q", got)
	}
}

// offsetOf returns the offset of record k in a segment holding rec(0..).
func offsetOf(k int) int64 {
	off := int64(len(segMagic))
	for i := range k {
		off += frameSize(i)
	}
	return off
}

func TestCorruption(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name         string
		damage       func(t *testing.T, dir, seg string)
		want         []int
		corrupt      int64
		corruptFiles int64
	}{
		{
			name:    "flipped payload byte",
			damage:  func(t *testing.T, dir, seg string) { flip(t, seg, offsetOf(3)+recHdrSize+2) },
			want:    append(span(0, 3), span(4, n)...),
			corrupt: 1,
		},
		{
			name:    "flipped length byte (resync)",
			damage:  func(t *testing.T, dir, seg string) { flip(t, seg, offsetOf(4)+1) },
			want:    append(span(0, 4), span(5, n)...),
			corrupt: 1,
		},
		{
			name:    "flipped header checksum byte",
			damage:  func(t *testing.T, dir, seg string) { flip(t, seg, offsetOf(0)+9) },
			want:    span(1, n),
			corrupt: 1,
		},
		{
			name: "two damaged records",
			damage: func(t *testing.T, dir, seg string) {
				flip(t, seg, offsetOf(2)+recHdrSize)
				flip(t, seg, offsetOf(7)+5)
			},
			want:    []int{0, 1, 3, 4, 5, 6, 8, 9},
			corrupt: 2,
		},
		{
			name:    "torn tail mid-payload",
			damage:  func(t *testing.T, dir, seg string) { truncate(t, seg, offsetOf(n-1)+recHdrSize+3) },
			want:    span(0, n-1),
			corrupt: 1,
		},
		{
			name:    "torn tail mid-header",
			damage:  func(t *testing.T, dir, seg string) { truncate(t, seg, offsetOf(n-1)+5) },
			want:    span(0, n-1),
			corrupt: 1,
		},
		{
			name:    "zeros appended (crash after the size grew)",
			damage:  func(t *testing.T, dir, seg string) { appendBytes(t, seg, make([]byte, 100)) },
			want:    span(0, n),
			corrupt: 1,
		},
		{
			name:         "flipped segment magic",
			damage:       func(t *testing.T, dir, seg string) { flip(t, seg, 3) },
			corruptFiles: 1,
		},
		{
			name: "garbage file named like a segment",
			damage: func(t *testing.T, dir, seg string) {
				write(t, filepath.Join(dir, "00000000000000000000.seg"), []byte("garbage, not a segment"))
			},
			want:         span(0, n),
			corruptFiles: 1,
		},
		{
			// A crash while the next segment was created, before or while
			// its header was written: removed, not reported.
			name: "empty next segment (crash at its creation)",
			damage: func(t *testing.T, dir, seg string) {
				write(t, filepath.Join(dir, "00000000000000000002.seg"), nil)
			},
			want: span(0, n),
		},
		{
			name: "next segment with part of its header (crash at its creation)",
			damage: func(t *testing.T, dir, seg string) {
				write(t, filepath.Join(dir, "00000000000000000002.seg"), []byte(segMagic[:7]))
			},
			want: span(0, n),
		},
		{
			name: "short file named like a segment, not a header prefix",
			damage: func(t *testing.T, dir, seg string) {
				write(t, filepath.Join(dir, "00000000000000000002.seg"), []byte("msrq"))
			},
			want:         span(0, n),
			corruptFiles: 1,
		},
		{
			name: "unreadable segment (a directory)",
			damage: func(t *testing.T, dir, seg string) {
				if err := os.Mkdir(filepath.Join(dir, "00000000000000000000.seg"), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			want:         span(0, n),
			corruptFiles: 1,
		},
		{
			name: "unknown files",
			damage: func(t *testing.T, dir, seg string) {
				write(t, filepath.Join(dir, "notes.txt"), []byte("hello"))
				write(t, filepath.Join(dir, "12.seg"), []byte("short name"))
			},
			want: span(0, n),
		},
		{
			name:         "garbage ack file replays everything",
			damage:       func(t *testing.T, dir, seg string) { write(t, filepath.Join(dir, "ack"), []byte("xx")) },
			want:         span(0, n),
			corruptFiles: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, Config{Dir: dir})
			appendRange(t, s, 0, n)
			s.Close()
			segs := segFiles(t, dir)
			if len(segs) != 1 {
				t.Fatalf("segments = %v", segs)
			}
			tc.damage(t, dir, segs[0])

			s = mustOpen(t, Config{Dir: dir})
			st := s.Stats()
			if st.Corrupt != tc.corrupt || st.CorruptFiles != tc.corruptFiles || st.Records != len(tc.want) {
				t.Errorf("Stats after Open = %+v, want Corrupt %d, CorruptFiles %d, Records %d",
					st, tc.corrupt, tc.corruptFiles, len(tc.want))
			}
			// New records go after the survivors.
			appendRange(t, s, 100, 102)
			got := drain(t, s, -1)
			if w := want(append(slices.Clone(tc.want), 100, 101)...); !slices.Equal(got, w) {
				t.Errorf("delivered:\ngot  %q\nwant %q", got, w)
			}
			s.Close()
			// A second reopen finds nothing left and reports nothing new
			// (torn tails were truncated, bad files moved aside); a file
			// moved aside is never overwritten by a new segment.
			aside, _ := filepath.Glob(filepath.Join(dir, "*.corrupt"))
			if int64(len(aside)) != tc.corruptFiles && !strings.Contains(tc.name, "ack") {
				t.Errorf("files moved aside: %v", aside)
			}
			s = mustOpen(t, Config{Dir: dir})
			defer s.Close()
			if st := s.Stats(); st.Records != 0 || st.Corrupt != 0 || st.CorruptFiles != 0 {
				t.Errorf("Stats after second reopen = %+v", st)
			}
			appendRange(t, s, 0, 1)
			if again, _ := filepath.Glob(filepath.Join(dir, "*.corrupt")); !slices.Equal(again, aside) {
				t.Errorf("files moved aside changed: %v, then %v", aside, again)
			}
		})
	}
}

// A record damaged while the spool is open is skipped by Peek.
func TestCorruptionAfterOpen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, Config{Dir: dir})
	defer s.Close()
	appendRange(t, s, 0, 5)
	flip(t, segFiles(t, dir)[0], offsetOf(2)+recHdrSize+4)
	if got := drain(t, s, -1); !slices.Equal(got, want(0, 1, 3, 4)) {
		t.Fatalf("delivered %q", got)
	}
	if st := s.Stats(); st.Corrupt != 1 || st.Acked != 4 || st.Records != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestAckSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 200}
	s := mustOpen(t, cfg)
	appendRange(t, s, 0, 20)
	if got := drain(t, s, 7); !slices.Equal(got, want(span(0, 7)...)) {
		t.Fatalf("drain = %q", got)
	}
	// Peeked but not acknowledged: replayed after a restart (at-least-once).
	if r, ok, err := s.Peek(); err != nil || !ok || string(r) != string(rec(7)) {
		t.Fatalf("Peek = %q %v %v", r, ok, err)
	}
	s.Close()
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := drain(t, s, -1); !slices.Equal(got, want(span(7, 20)...)) {
		t.Fatalf("after reopen: %q", got)
	}
	if err := s.Ack(); !errors.Is(err, ErrNoPeek) {
		t.Fatalf("Ack without Peek: %v", err)
	}
}

func TestPeekRepeats(t *testing.T) {
	s := mustOpen(t, Config{Dir: t.TempDir()})
	defer s.Close()
	if _, ok, err := s.Peek(); ok || err != nil {
		t.Fatalf("Peek on empty = %v, %v", ok, err)
	}
	appendRange(t, s, 0, 2)
	for range 3 {
		if r, ok, _ := s.Peek(); !ok || !bytes.Equal(r, rec(0)) {
			t.Fatalf("Peek = %q", r)
		}
	}
	if got := drain(t, s, -1); !slices.Equal(got, want(0, 1)) {
		t.Fatalf("drain = %q", got)
	}
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, Config{Dir: t.TempDir()})
	appendRange(t, s, 0, 1)
	s.Close()
	if err := s.Append(rec(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, _, err := s.Peek(); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A writer appends while a reader drains: order kept, nothing lost, under -race.
func TestConcurrentAppendPeekAck(t *testing.T) {
	const n = 500
	s := mustOpen(t, Config{Dir: t.TempDir(), SegmentBytes: 512})
	defer s.Close()
	appended := make(chan int, n)
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Append(rec(i)); err != nil {
				errc <- err
				return
			}
			appended <- i
		}
		errc <- nil
	}()
	var got []string
	for range n {
		<-appended // at least one record is there
		r, ok, err := s.Peek()
		if err != nil || !ok {
			t.Fatalf("Peek = %v, %v", ok, err)
		}
		got = append(got, string(r))
		if err := s.Ack(); err != nil {
			t.Fatal(err)
		}
		_ = s.Stats()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if w := want(span(0, n)...); !slices.Equal(got, w) {
		t.Fatalf("order broken")
	}
	if st := s.Stats(); st.Records != 0 || st.Appended != n || st.Acked != n {
		t.Fatalf("Stats = %+v", st)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	write(t, path, b)
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, p []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, append(b, p...))
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := mustOpen(t, Config{Dir: dir})
	defer s.Close()
	appendRange(t, s, 0, 2)
	drain(t, s, 1)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), fi.Mode())
		}
		if !strings.HasSuffix(e.Name(), ".seg") && e.Name() != "ack" && e.Name() != "lock" {
			t.Errorf("unexpected file %s", e.Name())
		}
	}
}

// A torn tail is truncated at Open, so the next Open does not report it again.
func TestTornTailTruncated(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, Config{Dir: dir})
	appendRange(t, s, 0, 5)
	s.Close()
	seg := segFiles(t, dir)[0]
	truncate(t, seg, offsetOf(4)+recHdrSize+1)
	for round, wantCorrupt := range []int64{1, 0} {
		s = mustOpen(t, Config{Dir: dir})
		if st := s.Stats(); st.Corrupt != wantCorrupt || st.Records != 4 || st.Bytes != offsetOf(4) {
			t.Fatalf("open %d: Stats = %+v, want Corrupt %d, Records 4, Bytes %d", round, st, wantCorrupt, offsetOf(4))
		}
		s.Close()
	}
	if fi, err := os.Stat(seg); err != nil || fi.Size() != offsetOf(4) {
		t.Fatalf("segment size %v, %v; want %d", fi.Size(), err, offsetOf(4))
	}
}

func TestDirLocked(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, Config{Dir: dir})
	if _, err := Open(Config{Dir: dir}); err == nil {
		t.Fatal("a second Open of the same directory succeeded")
	}
	s.Close()
	s = mustOpen(t, Config{Dir: dir}) // released by Close
	s.Close()
}

// A torn ack slot (a power loss while Ack wrote it) falls back to the other
// slot: the previous position, so one acknowledged record is replayed once
// more; both slots spoiled replays everything (reported).
func TestAckSlotTorn(t *testing.T) {
	for _, tc := range []struct {
		name         string
		spoil        []int64 // offsets in the ack file
		first        int     // first record delivered after the reopen
		corruptFiles int64
	}{
		{"intact", nil, 3, 0},
		{"newest slot torn", []int64{ackStride + 20}, 2, 0},
		{"older slot torn", []int64{20}, 3, 0},
		{"both slots torn", []int64{20, ackStride + 20}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, Config{Dir: dir})
			appendRange(t, s, 0, 5)
			// Open wrote generations 1 (slot 1) and 2 (slot 0); these Acks
			// write 3 (slot 1), 4 (slot 0), 5 (slot 1).
			drain(t, s, 3)
			s.Close()
			for _, off := range tc.spoil {
				flip(t, filepath.Join(dir, "ack"), off)
			}
			s = mustOpen(t, Config{Dir: dir})
			defer s.Close()
			if got := drain(t, s, -1); !slices.Equal(got, want(span(tc.first, 5)...)) {
				t.Fatalf("delivered %q, want from rec(%d)", got, tc.first)
			}
			if st := s.Stats(); st.CorruptFiles != tc.corruptFiles {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

// Every write of the ack file, Open's included, overwrites the older slot:
// the two slots always hold consecutive generations, the newer one the
// current position, the older the previous one.
func TestAckOverwritesOlderSlot(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ack")
	slots := func() [2]uint64 {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var g [2]uint64
		for i := range g {
			gen, _, ok := decodeAckSlot(b[i*ackStride:])
			if !ok {
				t.Fatalf("slot %d invalid", i)
			}
			g[i] = gen
		}
		return g
	}
	consecutive := func(when string) {
		t.Helper()
		if g := slots(); max(g[0], g[1])-min(g[0], g[1]) != 1 {
			t.Fatalf("%s: slot generations %v, want consecutive", when, g)
		}
	}
	for reopen := range 3 { // Open reads generations of either parity
		s := mustOpen(t, Config{Dir: dir})
		consecutive(fmt.Sprint("Open ", reopen))
		appendRange(t, s, 0, 2+reopen)
		for i := range 2 + reopen {
			drain(t, s, 1)
			consecutive(fmt.Sprintf("Open %d, Ack %d", reopen, i))
		}
		s.Close()
	}
}
