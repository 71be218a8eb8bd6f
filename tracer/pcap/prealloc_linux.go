package pcap

import (
	"errors"
	"os"
	"syscall"
)

// errNoPrealloc is the error of a file system that cannot preallocate.
var errNoPrealloc = errors.New("pcap: preallocation not supported")

// preallocate reserves the blocks of f from off for n bytes without
// changing its size (FALLOC_FL_KEEP_SIZE).
func preallocate(f *os.File, off, n int64) error {
	const keepSize = 0x1 // FALLOC_FL_KEEP_SIZE
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), keepSize, off, n)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, syscall.EOPNOTSUPP) || errors.Is(ferr, syscall.ENOSYS) {
		return errNoPrealloc
	}
	return ferr
}
