//go:build !linux

package hep

import "net"

func udpGSO(*net.UDPConn) (bool, int) { return false, 0 }

var gsoControlLen = 0

func putGSOControl([]byte, int) {}

func isGSOError(error) bool { return false }

func isMTUError(error) bool { return false }

// msgDontWait is 0 where the send path does not use it: full batches are
// then always sent by the writer goroutine.
const msgDontWait = 0
