package portmap

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// enablePktinfo asks the kernel to tell each datagram's destination address, so
// that a reply names the address the client used even on a wildcard socket.
func enablePktinfo(c *net.UDPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	})
}

// pktinfoDst extracts the destination address from control messages, or returns
// the zero Addr.
func pktinfoDst(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex (4), spec_dst (4), addr (4).
			var a [4]byte
			copy(a[:], m.Data[8:12])
			return netip.AddrFrom4(a)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var a [16]byte
			copy(a[:], m.Data[:16])
			return netip.AddrFrom16(a).Unmap()
		}
	}
	return netip.Addr{}
}
