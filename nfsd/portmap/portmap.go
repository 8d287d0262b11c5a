// Package portmap answers the ONC RPC portmapper (program 100000): version 2
// (NULL, GETPORT, DUMP) and rpcbind versions 3 and 4 (NULL, GETADDR, DUMP, GETTIME,
// GETVERSADDR), over TCP and UDP. Clients such as QEMU's libnfs driver ask it on
// port 111 where to find NFS and MOUNT before they connect.
//
// A Table is the fixed set of Mappings a server announces; registration from other
// processes (SET, UNSET) is refused. A universal address ("h1.h2.h3.h4.p1.p2") names
// a host and port; when a mapping's host is unspecified the table answers with the
// local address the question arrived on, so a client reaches the service by the
// same route it reached the portmapper.
package portmap

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// Program numbers and protocols.
const (
	Prog     = 100000
	ProtoTCP = 6
	ProtoUDP = 17
)

// Mapping says that version Vers of program Prog listens on Port over Prot.
type Mapping struct {
	Prog uint32
	Vers uint32
	Prot uint32 // ProtoTCP or ProtoUDP
	// Host is the address the service listens on; the zero or unspecified address
	// means "wherever the question arrived".
	Host netip.Addr
	Port uint16
}

// Table answers portmapper calls from a fixed list of mappings.
type Table struct {
	mappings []Mapping
}

// NewTable announces mappings.
func NewTable(mappings []Mapping) *Table {
	return &Table{mappings: append([]Mapping(nil), mappings...)}
}

// Mappings lists what the table announces.
func (t *Table) Mappings() []Mapping { return append([]Mapping(nil), t.mappings...) }

// Procedure names for metrics and logs.
func procName(vers, proc uint32) string {
	if vers == 2 {
		switch proc {
		case 0:
			return "portmap.null"
		case 1:
			return "portmap.set"
		case 2:
			return "portmap.unset"
		case 3:
			return "portmap.getport"
		case 4:
			return "portmap.dump"
		case 5:
			return "portmap.callit"
		}
		return "portmap.other"
	}
	switch proc {
	case 0:
		return "rpcbind.null"
	case 1:
		return "rpcbind.set"
	case 2:
		return "rpcbind.unset"
	case 3:
		return "rpcbind.getaddr"
	case 4:
		return "rpcbind.dump"
	case 6:
		return "rpcbind.gettime"
	case 9:
		return "rpcbind.getversaddr"
	}
	return "rpcbind.other"
}

// Handle answers one call to program 100000. local is the address the call arrived
// on. It returns the reply record and the procedure's name.
func (t *Table) Handle(c rpc.Call, local netip.Addr) ([]byte, string) {
	name := procName(c.Vers, c.Proc)
	if c.Prog != Prog {
		return rpc.AcceptedReply(c.XID, rpc.ProgUnavail).Bytes(), name
	}
	if c.Vers < 2 || c.Vers > 4 {
		return rpc.ProgMismatchReply(c.XID, 2, 4), name
	}
	d := rpc.NewDecoder(c.Args)
	garbage := func() ([]byte, string) {
		return rpc.AcceptedReply(c.XID, rpc.GarbageArgs).Bytes(), name
	}
	if c.Vers == 2 {
		switch c.Proc {
		case 0:
			return rpc.AcceptedReply(c.XID, rpc.Success).Bytes(), name
		case 1, 2: // SET, UNSET: nobody registers with us.
			d.Uint32()
			d.Uint32()
			d.Uint32()
			d.Uint32()
			if d.Err() != nil {
				return garbage()
			}
			e := rpc.AcceptedReply(c.XID, rpc.Success)
			e.Bool(false)
			return e.Bytes(), name
		case 3:
			prog, vers, prot := d.Uint32(), d.Uint32(), d.Uint32()
			d.Uint32()
			if d.Err() != nil {
				return garbage()
			}
			e := rpc.AcceptedReply(c.XID, rpc.Success)
			e.Uint32(uint32(t.port(prog, vers, prot)))
			return e.Bytes(), name
		case 4:
			e := rpc.AcceptedReply(c.XID, rpc.Success)
			for _, m := range t.mappings {
				e.Bool(true)
				e.Uint32(m.Prog)
				e.Uint32(m.Vers)
				e.Uint32(m.Prot)
				e.Uint32(uint32(m.Port))
			}
			e.Bool(false)
			return e.Bytes(), name
		}
		return rpc.AcceptedReply(c.XID, rpc.ProcUnavail).Bytes(), name
	}

	// rpcbind versions 3 and 4.
	switch c.Proc {
	case 0:
		return rpc.AcceptedReply(c.XID, rpc.Success).Bytes(), name
	case 1, 2, 3, 9:
		prog, vers := d.Uint32(), d.Uint32()
		netid := d.String(64)
		d.String(256) // r_addr
		d.String(256) // r_owner
		if d.Err() != nil {
			return garbage()
		}
		e := rpc.AcceptedReply(c.XID, rpc.Success)
		switch {
		case c.Proc == 1 || c.Proc == 2:
			e.Bool(false)
		case c.Proc == 9 && c.Vers != 4:
			return rpc.AcceptedReply(c.XID, rpc.ProcUnavail).Bytes(), name
		default:
			e.String(t.uaddr(prog, vers, netid, local))
		}
		return e.Bytes(), name
	case 4:
		e := rpc.AcceptedReply(c.XID, rpc.Success)
		for _, m := range t.mappings {
			for _, netid := range netids(m.Prot) {
				addr := t.uaddrOf(m, netid, local)
				if addr == "" {
					continue
				}
				e.Bool(true)
				e.Uint32(m.Prog)
				e.Uint32(m.Vers)
				e.String(netid)
				e.String(addr)
				e.String("superuser")
			}
		}
		e.Bool(false)
		return e.Bytes(), name
	case 6:
		e := rpc.AcceptedReply(c.XID, rpc.Success)
		e.Uint32(uint32(time.Now().Unix()))
		return e.Bytes(), name
	}
	return rpc.AcceptedReply(c.XID, rpc.ProcUnavail).Bytes(), name
}

func (t *Table) port(prog, vers, prot uint32) uint16 {
	for _, m := range t.mappings {
		if m.Prog == prog && m.Vers == vers && m.Prot == prot {
			return m.Port
		}
	}
	return 0
}

func netids(prot uint32) []string {
	if prot == ProtoTCP {
		return []string{"tcp", "tcp6"}
	}
	return []string{"udp", "udp6"}
}

func (t *Table) uaddr(prog, vers uint32, netid string, local netip.Addr) string {
	prot := uint32(ProtoTCP)
	switch netid {
	case "tcp", "tcp6":
	case "udp", "udp6":
		prot = ProtoUDP
	default:
		return ""
	}
	for _, m := range t.mappings {
		if m.Prog == prog && m.Vers == vers && m.Prot == prot {
			return t.uaddrOf(m, netid, local)
		}
	}
	return ""
}

// uaddrOf renders m's address for netid, or "" when m cannot be reached over it.
func (t *Table) uaddrOf(m Mapping, netid string, local netip.Addr) string {
	host := m.Host
	if !host.IsValid() || host.IsUnspecified() {
		host = local
	}
	host = host.Unmap()
	want6 := strings.HasSuffix(netid, "6")
	if !host.IsValid() {
		if want6 {
			host = netip.IPv6Unspecified()
		} else {
			host = netip.IPv4Unspecified()
		}
	}
	if host.Is6() != want6 {
		if m.Host.IsValid() && !m.Host.IsUnspecified() {
			return ""
		}
		// Listening on all addresses: the other family's wildcard will do.
		if want6 {
			host = netip.IPv6Unspecified()
		} else {
			host = netip.IPv4Unspecified()
		}
	}
	return UniversalAddr(netip.AddrPortFrom(host, m.Port))
}

// UniversalAddr renders ap as an RPC universal address: the host followed by the
// port's high and low bytes, dot separated.
func UniversalAddr(ap netip.AddrPort) string {
	p := ap.Port()
	return fmt.Sprintf("%s.%d.%d", ap.Addr().Unmap().String(), p>>8, p&0xff)
}

// ParseUniversalAddr is the inverse of UniversalAddr.
func ParseUniversalAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("universal address %q: no port", s)
	}
	j := strings.LastIndexByte(s[:i], '.')
	if j < 0 {
		return netip.AddrPort{}, fmt.Errorf("universal address %q: no port", s)
	}
	hi, err1 := strconv.ParseUint(s[j+1:i], 10, 8)
	lo, err2 := strconv.ParseUint(s[i+1:], 10, 8)
	if err1 != nil || err2 != nil {
		return netip.AddrPort{}, fmt.Errorf("universal address %q: bad port", s)
	}
	a, err := netip.ParseAddr(s[:j])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("universal address %q: %w", s, err)
	}
	return netip.AddrPortFrom(a, uint16(hi<<8|lo)), nil
}
