package rpc

import (
	"net"
	"net/netip"
	"testing"
)

func TestHostOf(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want netip.Addr
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2049}, netip.MustParseAddr("127.0.0.1")},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.5"), Port: 1}, netip.MustParseAddr("10.0.0.5")},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 111}, netip.MustParseAddr("::1")},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, netip.Addr{}},
	} {
		if got := HostOf(tc.addr); got != tc.want {
			t.Errorf("HostOf(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
