package pcap

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/faultfs"
)

// fill writes a file in dir until the disk is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// On a full disk the Writer removes the file it could not write anything
// to, cuts a file that filled up back to its last whole write, refuses
// records without touching the disk while it waits (1s, doubling, at most
// RetryMax), and writes on in the same file once there is space: every
// record is either on disk and counted in Records, or counted in RecordsLost.
func TestFullDiskBackoff(t *testing.T) {
	dir := faultfs.Tmpfs(t, 256<<10)
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, RetryMax: 3 * time.Second, Now: clk.Now})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	calls := 0
	data := func() error { calls++; return w.Data(t0, c, s, randBytes(1000, uint64(calls))) }
	write := func() error {
		if err := data(); err != nil {
			return err
		}
		return w.Flush()
	}

	// Full before the first file: the file is created, nothing fits, it is removed.
	filler := fill(t, dir)
	if err := write(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("first write: %v", err)
	}
	if files := ourPcaps(t, dir, DefaultPrefix); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
	if st := w.Stats(); !st.Failing || st.Files != 0 || st.Errors != 1 || st.RecordsLost != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := data(); !errors.Is(err, ErrBackoff) {
		t.Fatalf("while waiting: %v", err)
	}
	ok(t, os.Remove(filler))
	clk.Advance(time.Second)

	// Writes go through until the disk is full again.
	for {
		err := write()
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
		break
	}
	st := w.Stats()
	if st.Files != 1 || st.Errors != 2 || !st.Failing || st.Records == 0 {
		t.Fatalf("full: %+v", st)
	}
	// The waits: 1s (a success reset it), then 2s, 3s (RetryMax), 3s. Each
	// attempt is one record that fails; every record before it is refused.
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		clk.Advance(wait - time.Millisecond)
		if err := data(); !errors.Is(err, ErrBackoff) {
			t.Fatalf("wait %d: before its end: %v", i, err)
		}
		clk.Advance(time.Millisecond)
		if err := write(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("wait %d: after it: %v", i, err)
		}
	}
	if st := w.Stats(); st.Files != 1 || st.Errors != 6 {
		t.Fatalf("after the waits: %+v", st)
	}

	// Space again: the same file takes the next records.
	files := ourPcaps(t, dir, DefaultPrefix)
	ok(t, os.Truncate(files[0], 24+50*(16+14+20+20+1000))) // frees space; the file keeps 50 whole packets
	st = w.Stats()
	clk.Advance(3 * time.Second)
	for range 5 {
		ok(t, write())
	}
	ok(t, w.Close())
	end := w.Stats()
	if end.Failing || end.Files != 1 || end.Records+end.RecordsLost != int64(calls) {
		t.Fatalf("end: %+v after %d calls", end, calls)
	}
	// The file was cut to 50 packets under the writer (which a writer
	// cannot know); then its 5 more are on disk, whole.
	if pkts := readPcap(t, files[0]); len(pkts) != 55 || end.Records != st.Records+5 {
		t.Fatalf("%d packets in the file; records %d -> %d", len(pkts), st.Records, end.Records)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", fi.Mode(), err)
	}
	if !strings.Contains(end.LastError, "no space") {
		t.Fatalf("last error %q", end.LastError)
	}
}

// A folder that cannot be written to: Check says so at the start without
// creating anything; the first record tries after the wait, no sooner.
func TestCheckUnwritable(t *testing.T) {
	dir := t.TempDir()
	undo := faultfs.ReadOnly(t, dir)
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, Now: clk.Now})
	if err := w.Check(); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Check: %v", err)
	}
	if err := w.Data(t0, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), []byte("x")); !errors.Is(err, ErrBackoff) {
		t.Fatalf("Data while waiting: %v", err)
	}
	undo()
	clk.Advance(time.Second)
	ok(t, w.Check())
	ok(t, w.Data(t0, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), []byte("x")))
	ok(t, w.Close())
	if st := w.Stats(); st.Failing || st.Records != 1 || st.RecordsLost != 1 || st.Errors != 1 || st.Files != 1 {
		t.Fatalf("stats %+v", st)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("folder: %v %v (the probe file must be gone)", entries, err)
	}
}

// Records larger than the Writer's buffer on a disk that fills up (issue 16's
// hostile notes: the large-frame path): a record whose first packets were
// written by an earlier flush and whose rest failed is cut from the file,
// not left half in it, and a record that would not fit in the current file
// starts the next one. What is on disk is exactly the records counted in
// Records, every packet whole, in order; every other record is counted in
// RecordsLost.
func TestFullDiskLargeRecords(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxFile int64
	}{
		{"one file", 0},
		{"rotating", 1<<20 + 512<<10}, // two records a file
	} {
		t.Run(tc.name, func(t *testing.T) { fullDiskLargeRecords(t, tc.maxFile) })
	}
}

func fullDiskLargeRecords(t *testing.T, maxFile int64) {
	dir := faultfs.Tmpfs(t, 4<<20)
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, RetryMax: time.Second, MaxFileBytes: maxFile, Now: clk.Now})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	const size = 700 << 10 // 0.7 of the 1 MiB buffer: records straddle its flushes
	var sent [][]byte      // the records Data accepted, in order
	fails, calls := 0, 0
	for i := 0; fails < 3 && i < 100; i++ {
		p := randBytes(size, uint64(i+1))
		calls++
		err := w.Data(t0, c, s, p)
		if err == nil && i%3 == 2 {
			err = w.Flush() // now and then, as the sink does when its queue runs empty
		}
		switch {
		case err == nil:
			sent = append(sent, p)
		case errors.Is(err, ErrBackoff):
			clk.Advance(time.Second)
		case errors.Is(err, syscall.ENOSPC):
			fails++
			clk.Advance(time.Second)
		default:
			t.Fatalf("record %d: %v", i, err)
		}
	}
	w.Close()
	st := w.Stats()
	if fails < 3 || st.Records == 0 || st.RecordsLost == 0 {
		t.Fatalf("the disk did not fill: %d failures, %+v", fails, st)
	}
	if maxFile > 0 && st.Rotations == 0 {
		t.Fatalf("no rotation: %+v", st)
	}
	if st.Records+st.RecordsLost != int64(calls) {
		t.Fatalf("records %d + lost %d != %d calls", st.Records, st.RecordsLost, calls)
	}
	var disk []byte
	for _, f := range ourPcaps(t, dir, DefaultPrefix) {
		for _, p := range readPcap(t, f) {
			disk = append(disk, p.payload...)
		}
	}
	// Records counts the records written (a flush that failed lost the
	// ones buffered with it, though Data had returned nil for them).
	if len(disk) != int(st.Records)*size {
		t.Fatalf("%d payload bytes on disk, want %d records × %d (a partial record left in the file); stats %+v",
			len(disk), st.Records, size, st)
	}
	j := 0
	for _, p := range sent {
		if j < len(disk) && bytes.Equal(disk[j:j+size], p) {
			j += size
		}
	}
	if j != len(disk) {
		t.Fatalf("the file's bytes from %d on are no record's, in order", j)
	}
}

// Records of random sizes (a few bytes to 2.5 MiB, the buffer 1 MiB, a file
// 3 MiB or 5 s), connections opening and closing, written, flushed and
// refused at random while another file takes and gives back the disk's
// space at random: whatever the order of failures, every file holds whole
// records only, the files together hold exactly st.Records records (the
// Data ones those Data accepted, in order), every record is either there or
// counted lost, and Bytes and Packets are what the files hold.
func TestFullDiskRandomRecords(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { fullDiskRandomRecords(t, seed) })
	}
}

func fullDiskRandomRecords(t *testing.T, seed uint64) {
	dir := faultfs.Tmpfs(t, 8<<20)
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, RetryMax: time.Second, MaxFileBytes: 3 << 20, MaxFileAge: 5 * time.Second, Now: clk.Now})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	rng := rand.New(rand.NewPCG(seed, 7))
	pool := randBytes(3<<20, seed)
	filler := filepath.Join(dir, "other")
	var accepted [][]byte
	calls, failures := 0, 0
	for step := range 250 {
		if rng.IntN(2) == 0 {
			clk.Advance(time.Second) // a wait is over (at most RetryMax), or goes on
		}
		switch op := rng.IntN(24); {
		case op == 0:
			// Another file takes a random share of what is free.
			f, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			ok(t, err)
			_, _ = f.Write(make([]byte, rng.IntN(3<<20)))
			f.Close()
		case op == 1:
			_ = os.Remove(filler)
		case op < 4:
			if err := w.Flush(); err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("step %d: flush: %v", step, err)
			}
		case op < 8:
			// A connection opening or closing: a record of three packets.
			calls++
			var err error
			if op < 6 {
				err = w.ConnOpen(time.Time{}, c, s)
			} else {
				err = w.ConnClose(time.Time{}, c, s)
			}
			if err != nil && !errors.Is(err, ErrBackoff) && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("step %d: %v", step, err)
			}
		default:
			var n int
			switch rng.IntN(4) {
			case 0:
				n = 1 + rng.IntN(3000)
			case 1, 2:
				n = 10<<10 + rng.IntN(300<<10)
			default:
				n = 1<<20 + rng.IntN(1<<20+512<<10)
			}
			// Random bytes from one pool, each record made unique by its
			// step number in its first bytes (a pool is cheaper under -race).
			off := rng.IntN(len(pool) - n)
			p := append([]byte(nil), pool[off:off+n]...)
			copy(p, fmt.Sprintf("%08d", step))
			calls++
			switch err := w.Data(t0, c, s, p); {
			case err == nil:
				accepted = append(accepted, p)
			case errors.Is(err, ErrBackoff), errors.Is(err, syscall.ENOSPC):
				failures++
			default:
				t.Fatalf("step %d: %v", step, err)
			}
		}
	}
	_ = w.Close()
	st := w.Stats()
	if failures == 0 || st.Records == 0 || st.RecordsLost == 0 {
		t.Fatalf("the disk did not fill and empty: %d failures, %+v", failures, st)
	}
	if st.Records+st.RecordsLost != int64(calls) {
		t.Fatalf("records %d + lost %d != %d calls", st.Records, st.RecordsLost, calls)
	}
	// The files' payload, file by file, must be whole accepted records in
	// their order: each file starts with a record's first byte and ends
	// with a record's last.
	j, found := 0, int64(0)
	var bytesOnDisk, packets int64
	for _, f := range ourPcaps(t, dir, DefaultPrefix) {
		fi, err := os.Stat(f)
		ok(t, err)
		bytesOnDisk += fi.Size()
		var disk []byte
		pkts := readPcap(t, f)
		found += int64(handshakeWhole(t, f, pkts)) // whole ConnOpens and ConnCloses
		packets += int64(len(pkts))
		for _, p := range pkts {
			disk = append(disk, p.payload...)
		}
		for len(disk) > 0 {
			for j < len(accepted) && !bytes.HasPrefix(disk, accepted[j]) {
				j++
			}
			if j == len(accepted) {
				t.Fatalf("%s: %d bytes that are no whole record in order (%+v)", f, len(disk), st)
			}
			disk = disk[len(accepted[j]):]
			j++
			found++
		}
	}
	if found != st.Records {
		t.Fatalf("%d whole records on disk, %d counted written (%+v)", found, st.Records, st)
	}
	if bytesOnDisk != st.Bytes || packets != st.Packets {
		t.Fatalf("%d bytes and %d packets on disk; stats %+v", bytesOnDisk, packets, st)
	}
}

// handshakeWhole checks that every ConnOpen (S, SA, A) and ConnClose
// (FA, FA, A) of a file is whole in it: the file does not start with the
// second or third packet of one, nor end after its first or second. It
// returns how many it holds.
func handshakeWhole(t *testing.T, path string, pkts []pkt) (n int) {
	t.Helper()
	for i := 0; i < len(pkts); i++ {
		p := pkts[i]
		switch {
		case p.syn && !p.hasAck, p.fin: // first packet of a ConnOpen / ConnClose
			if i+2 >= len(pkts) {
				t.Fatalf("%s: packet %d (%s) starts a 3-packet record the file does not hold whole (%d packets in the file)",
					path, i, p.flags(), len(pkts))
			}
			i += 2
			n++
		case p.syn, len(p.payload) == 0:
			t.Fatalf("%s: packet %d (%s) is the middle or end of a 3-packet record begun elsewhere", path, i, p.flags())
		}
	}
	return n
}

// A connection's opening or closing (three packets, one record) that comes
// when the file has room for one packet is not split between two files:
// the file rotates before it (found by review).
func TestHandshakeNotSplitByRotation(t *testing.T) {
	for _, tc := range []string{"ConnOpen", "ConnClose"} {
		t.Run(tc, func(t *testing.T) {
			dir := t.TempDir()
			w := mustOpen(t, Config{Dir: dir, MaxFileBytes: 1000})
			c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
			// 24 header + 16+54+806 = 900 bytes: room for one 76-byte
			// handshake packet, not for two.
			ok(t, w.Data(t0, c, s, randBytes(806, 1)))
			if tc == "ConnOpen" {
				ok(t, w.ConnOpen(t0, c, s))
			} else {
				ok(t, w.ConnClose(t0, c, s))
			}
			ok(t, w.Close())
			st := w.Stats()
			files := ourPcaps(t, dir, DefaultPrefix)
			t.Logf("stats %+v, %d files", st, len(files))
			for _, f := range files {
				handshakeWhole(t, f, readPcap(t, f))
			}
		})
	}
}

// A connection's opening or closing whose first packet an earlier write
// stored and whose rest a failed write lost is cut from the file too, as a
// large frame is (found by review).
func TestFullDiskHandshakeNotHalfLeft(t *testing.T) {
	for _, tc := range []string{"ConnOpen", "ConnClose"} {
		t.Run(tc, func(t *testing.T) {
			dir := faultfs.Tmpfs(t, 4<<20)
			clk := &fakeClock{t: t0}
			w := mustOpen(t, Config{Dir: dir, RetryMax: time.Second, Now: clk.Now})
			c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
			c2, s2 := netip.MustParseAddrPort("10.0.0.3:5000"), netip.MustParseAddrPort("10.0.0.4:2855")
			// 24 + 685×1530 + (16+54+422) = bufSize-10 bytes buffered.
			ok(t, w.Data(t0, c, s, randBytes(685*DefaultSegmentSize, 1)))
			ok(t, w.Data(t0, c, s, randBytes(422, 2)))
			if got := len(w.buf.b); got != bufSize-10 {
				t.Fatalf("buffered %d, want %d", got, bufSize-10)
			}
			// The first packet (76 bytes) fills the buffer; the second flushes it.
			if tc == "ConnOpen" {
				ok(t, w.ConnOpen(t0, c2, s2))
			} else {
				ok(t, w.ConnClose(t0, c2, s2))
			}
			ok(t, w.Data(t0, c, s, randBytes(200<<10, 3))) // needs new blocks
			fill(t, dir)
			if err := w.Flush(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("flush on a full disk: %v", err)
			}
			ok(t, w.Close())
			st := w.Stats()
			files := ourPcaps(t, dir, DefaultPrefix)
			if len(files) != 1 {
				t.Fatalf("files %v", files)
			}
			pkts := readPcap(t, files[0])
			fi, err := os.Stat(files[0])
			ok(t, err)
			t.Logf("stats %+v; %d packets, %d bytes in the file", st, len(pkts), fi.Size())
			if st.Records != 2 || st.RecordsLost != 2 {
				t.Fatalf("records %d lost %d, want 2 and 2", st.Records, st.RecordsLost)
			}
			// The two Data records are 686 packets: the file must hold those only.
			handshakeWhole(t, files[0], pkts)
			if len(pkts) != 686 {
				t.Fatalf("%d packets in the file, want the 686 of the 2 records written", len(pkts))
			}
		})
	}
}

// A record longer than the buffer, first in its file, whose later write
// fails: the cut leaves nothing of the file, which is removed, not kept as a
// bare header (found by review).
func TestFullDiskNoHeaderOnlyFile(t *testing.T) {
	dir := faultfs.Tmpfs(t, 4<<20)
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, RetryMax: time.Second, Now: clk.Now})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	filler, err := os.Create(dir + "/other")
	ok(t, err)
	_, err = filler.Write(make([]byte, 2<<20+512<<10)) // about 1.5 MiB left
	ok(t, err)
	filler.Close()
	if err := w.Data(t0, c, s, randBytes(3<<20, 1)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Data: %v", err)
	}
	ok(t, w.Close())
	st := w.Stats()
	for _, f := range ourPcaps(t, dir, DefaultPrefix) {
		fi, _ := os.Stat(f)
		if p := readPcap(t, f); len(p) == 0 {
			t.Errorf("%s left with nothing but its header (%d bytes); stats %+v", f, fi.Size(), st)
		}
	}
}
