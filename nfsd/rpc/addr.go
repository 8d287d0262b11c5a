package rpc

import (
	"net"
	"net/netip"
)

// HostOf is the IP address of a TCP or UDP endpoint (IPv4-mapped IPv6
// unmapped), or the zero Addr for any other kind of address.
func HostOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
