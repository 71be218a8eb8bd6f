package pcap

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

const (
	timeLayout = "20060102T150405Z"
	bufSize    = 256 << 10
)

// fileInfo is one of our files in Dir.
type fileInfo struct {
	name string
	ts   string // UTC timestamp from the name, sorts chronologically
	seq  uint64
	size int64
}

// parseName reports whether name is <prefix>-<timestamp>-<seq>.pcap and
// returns its timestamp and sequence number.
func parseName(prefix, name string) (ts string, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return "", 0, false
	}
	rest, ok = strings.CutSuffix(rest, ".pcap")
	if !ok || len(rest) < len(timeLayout)+1+6 || rest[len(timeLayout)] != '-' {
		return "", 0, false
	}
	ts, num := rest[:len(timeLayout)], rest[len(timeLayout)+1:]
	for i := range len(ts) {
		c := ts[i]
		switch i {
		case 8:
			if c != 'T' {
				return "", 0, false
			}
		case len(timeLayout) - 1:
			if c != 'Z' {
				return "", 0, false
			}
		default:
			if c < '0' || c > '9' {
				return "", 0, false
			}
		}
	}
	for i := range len(num) {
		if num[i] < '0' || num[i] > '9' {
			return "", 0, false
		}
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return ts, seq, true
}

// ourFiles lists the files in Dir that match our prefix pattern, oldest
// first (by the timestamp in the name, then the sequence number).
func (w *Writer) ourFiles() ([]fileInfo, error) {
	entries, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pcap: list %s: %w", w.cfg.Dir, err)
	}
	var files []fileInfo
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		ts, seq, ok := parseName(w.cfg.Prefix, e.Name())
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // vanished meanwhile
		}
		files = append(files, fileInfo{name: e.Name(), ts: ts, seq: seq, size: info.Size()})
	}
	slices.SortFunc(files, func(a, b fileInfo) int {
		return cmp.Or(strings.Compare(a.ts, b.ts), cmp.Compare(a.seq, b.seq))
	})
	return files, nil
}

// enforceTotal deletes the oldest of files (never the current file) until
// they fit in MaxTotalBytes with room left for one full current file.
// Deletion errors are counted, not returned.
func (w *Writer) enforceTotal(files []fileInfo) {
	cur := filepath.Base(w.path)
	budget := w.cfg.MaxTotalBytes - w.cfg.MaxFileBytes
	var total int64
	for _, f := range files {
		if f.name != cur {
			total += f.size
		}
	}
	for _, f := range files {
		if total <= budget {
			return
		}
		if f.name == cur {
			continue
		}
		err := os.Remove(filepath.Join(w.cfg.Dir, f.name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.fail(fmt.Errorf("pcap: delete old file: %w", err))
			continue
		}
		total -= f.size
		if err == nil {
			w.stats.FilesDeleted++
		}
	}
}

// openFile creates the next file and writes the pcap header.
func (w *Writer) openFile() error {
	now := w.cfg.Now()
	ts := now.UTC().Format(timeLayout)
	var (
		f    *os.File
		path string
		err  error
	)
	for range 1000 {
		w.seq++
		path = filepath.Join(w.cfg.Dir, fmt.Sprintf("%s-%s-%06d.pcap", w.cfg.Prefix, ts, w.seq))
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return w.fail(fmt.Errorf("pcap: create file: %w", err))
	}
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(f, bufSize)
	} else {
		w.bw.Reset(f)
	}
	pw := pcapgo.NewWriterNanos(w.bw)
	if err := pw.WriteFileHeader(w.cfg.SnapLen, layers.LinkTypeEthernet); err != nil {
		f.Close()
		os.Remove(path)
		return w.fail(fmt.Errorf("pcap: write header %s: %w", path, err))
	}
	w.f, w.pw, w.path = f, pw, path
	w.created = now
	w.size, w.packets = fileHeaderLen, 0
	w.rotateDue = false
	w.stats.Files++
	w.stats.Bytes += fileHeaderLen
	return nil
}

// closeFile flushes and closes the current file, if any.
func (w *Writer) closeFile() error {
	if w.f == nil {
		return nil
	}
	ferr := w.bw.Flush()
	cerr := w.f.Close()
	path := w.path
	w.f, w.pw, w.path = nil, nil, ""
	w.bw.Reset(nil)
	if err := errors.Join(ferr, cerr); err != nil {
		return fmt.Errorf("pcap: close %s: %w", path, err)
	}
	return nil
}

// rotate closes the current file, deletes old files beyond MaxTotalBytes
// and opens a new file. Errors are counted; on return w.f is the new file,
// or nil if it could not be created.
func (w *Writer) rotate() error {
	var errs []error
	if err := w.closeFile(); err != nil {
		errs = append(errs, w.fail(err))
	}
	if files, err := w.ourFiles(); err != nil {
		errs = append(errs, w.fail(err))
	} else {
		w.enforceTotal(files)
	}
	if err := w.openFile(); err != nil {
		errs = append(errs, err)
	}
	w.stats.Rotations++
	return errors.Join(errs...)
}
