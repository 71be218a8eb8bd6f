//go:build !linux

package pcap

import (
	"errors"
	"os"
)

// errNoPrealloc is the error of a system that cannot preallocate.
var errNoPrealloc = errors.New("pcap: preallocation not supported")

// preallocate is not done here.
func preallocate(*os.File, int64, int64) error { return errNoPrealloc }
