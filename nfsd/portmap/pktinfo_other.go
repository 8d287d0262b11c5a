//go:build !linux

package portmap

import (
	"net"
	"net/netip"
)

func enablePktinfo(*net.UDPConn) {}

func pktinfoDst([]byte) netip.Addr { return netip.Addr{} }
