//go:build !linux

package bench

import (
	"errors"
	"net"
)

func setUDPGRO(*net.UDPConn) error { return errors.New("UDP_GRO needs Linux") }

func (u *udpCounter) loopGRO() { u.loop() }
