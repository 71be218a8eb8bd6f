package bench

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

func setUDPGRO(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return err
	}
	return serr
}

// loopGRO counts what the socket of newUDPCounter(true) reads: a buffer
// that came with a UDP_GRO control message holds datagrams of that size
// back to back, the last maybe shorter.
func (u *udpCounter) loopGRO() {
	defer close(u.done)
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := u.conn.ReadMsgUDP(buf, oob)
		if err != nil {
			return // closed
		}
		pkts := int64(1)
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.IPPROTO_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 2 {
					// The kernel puts the segment size as an int (udp_cmsg_recv).
					seg := int(binary.NativeEndian.Uint16(m.Data))
					if len(m.Data) >= 4 {
						seg = int(binary.NativeEndian.Uint32(m.Data))
					}
					if seg > 0 {
						pkts = int64((n + seg - 1) / seg)
					}
				}
			}
		}
		u.packets.Add(pkts)
		u.bytes.Add(int64(n))
	}
}
