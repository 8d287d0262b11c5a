package nfsd

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// arrivedFunc returns a function telling how many bytes wait in nc's receive
// queue (SIOCINQ), or nil if nc is not a socket it can ask. It is made once
// per connection so that asking allocates nothing.
func arrivedFunc(nc net.Conn) func() int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var n int
	ctl := func(fd uintptr) {
		var err error
		if n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ); err != nil {
			n = 0
		}
	}
	return func() int {
		if rc.Control(ctl) != nil {
			return 0
		}
		return n
	}
}
