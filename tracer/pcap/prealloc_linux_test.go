package pcap

import (
	"net/netip"
	"os"
	"syscall"
	"testing"
)

// The current file's blocks are reserved ahead of its data (its size stays
// the data's), and what is reserved beyond the data is given back when the
// file is finished.
func TestPreallocationGivenBack(t *testing.T) {
	w := mustOpen(t, Config{Dir: t.TempDir()})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	for i := range 2000 {
		ok(t, w.Data(t0, c, s, randBytes(1000, uint64(i))))
	}
	ok(t, w.Flush())
	path := w.Stats().CurrentFile
	size, blocks := sizeAndBlocks(t, path)
	if w.noPrealloc {
		t.Skip("the file system cannot preallocate")
	}
	if blocks < size+preallocStep/2 {
		t.Errorf("while written: %d bytes of blocks for %d of data, want the data and more reserved", blocks, size)
	}
	ok(t, w.Close())
	size2, blocks2 := sizeAndBlocks(t, path)
	if size2 != size || blocks2 > size2+64<<10 {
		t.Errorf("after close: %d bytes of blocks for %d of data (%d before), want no more than the data's", blocks2, size2, size)
	}
}

func sizeAndBlocks(t *testing.T, path string) (size, blocks int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Size(), st.Blocks * 512
}
