//go:build !linux

package bench

import (
	"errors"
	"net"
)

// floorLoop: the epoll floor exists on Linux only.
type floorLoop struct{}

func newFloorLoop() (*floorLoop, error) {
	return nil, errors.New("-mode epoll: Linux only")
}

func (*floorLoop) add(a, b net.Conn) error { return errors.New("-mode epoll: Linux only") }
func (*floorLoop) close()                  {}
func (*floorLoop) run()                    {}
