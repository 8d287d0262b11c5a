package qemu

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// ONC RPC programs QEMU's nfs:// driver (libnfs) looks up.
const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005
	pmapGetPort = 3
	ipprotoTCP  = 6
)

// checkPortmapper asks server's portmapper (port 111: libnfs, and so QEMU,
// accepts no other) where MOUNT and NFS v3 listen over TCP, which is what
// QEMU does before it opens a disk.
func checkPortmapper(ctx context.Context, server string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := net.JoinHostPort(server, "111")
	c, err := rpc.Dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("portmapper %s unreachable (QEMU's nfs:// driver always asks it): %w", addr, err)
	}
	defer c.Close()
	for _, p := range []struct {
		prog uint32
		name string
	}{{progMount, "MOUNT"}, {progNFS, "NFS"}} {
		var e rpc.Encoder
		e.Uint32(p.prog)
		e.Uint32(3)
		e.Uint32(ipprotoTCP)
		e.Uint32(0)
		r, err := c.Call(ctx, progPortmap, 2, pmapGetPort, e.Bytes())
		if err != nil {
			return fmt.Errorf("portmapper %s: GETPORT %s v3: %w", addr, p.name, err)
		}
		dec := rpc.NewDecoder(r.Body)
		port := dec.Uint32()
		if dec.Err() != nil || port == 0 {
			return fmt.Errorf("portmapper %s: %s v3 over TCP is not registered", addr, p.name)
		}
	}
	return nil
}
