package hep

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpGSO reports whether the kernel offers UDP_SEGMENT on conn's socket and
// the largest datagram that leaves conn unfragmented (0 when unknown).
func udpGSO(conn *net.UDPConn) (ok bool, maxDatagram int) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false, 0
	}
	ipv6 := false
	if ra, isUDP := conn.RemoteAddr().(*net.UDPAddr); isUDP && ra.IP.To4() == nil {
		ipv6 = true
	}
	_ = rc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
			return
		}
		ok = true
		// The route's MTU as the connected socket sees it.
		if ipv6 {
			if mtu, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU); err == nil {
				maxDatagram = mtu - 40 - 8
			}
		} else if mtu, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU); err == nil {
			maxDatagram = mtu - 20 - 8
		}
	})
	return ok, maxDatagram
}

// gsoControlLen is the size of the UDP_SEGMENT control message.
var gsoControlLen = unix.CmsgSpace(2)

// putGSOControl writes a UDP_SEGMENT control message for segments of seg
// bytes into b (gsoControlLen bytes).
func putGSOControl(b []byte, seg int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP // SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
}

// isGSOError reports an error for a GSO run that means it cannot be sent as
// one: EIO when the device has no checksum offload (udp_send_skb), or an
// MTU error (isMTUError).
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || isMTUError(err)
}

// isMTUError reports that a run's segments no longer fit the route's MTU:
// EMSGSIZE on current kernels, EINVAL on older ones (udp_sendmsg).
func isMTUError(err error) bool {
	return errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.EINVAL)
}

// msgDontWait makes a send fail with EAGAIN rather than wait for room in the
// socket's buffer.
const msgDontWait = unix.MSG_DONTWAIT
