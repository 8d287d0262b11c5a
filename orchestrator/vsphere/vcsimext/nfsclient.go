package vcsimext

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// mirrorExport is the stand-in for an ESXi host's NFS client: it copies the
// export at path on the NFS server addr into dir through a real NFS client
// (go-nfs-client), so that the simulator, which reads VM files from local
// folders, sees what a host would. Files are copied whole; disk extents
// (-flat.vmdk) become sparse files of their size, because a host reads a
// disk's blocks only when the guest does. It adds what the simulator's
// RegisterVM wants beside each .vmx (simulatorFiles).
func mirrorExport(addr, path, dir string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	client, err := nfsc.DialServiceAtPort(host, p)
	if err != nil {
		return fmt.Errorf("host NFS client: %w", err)
	}
	m := &nfsc.Mount{Client: client}
	v, err := m.Mount(path, rpc.NewAuthUnix("esx", 0, 0).Auth())
	if err != nil {
		client.Close()
		return fmt.Errorf("host NFS client: mount %s: %w", path, err)
	}
	defer v.Close()
	var walk func(rel string) error
	walk = func(rel string) error {
		ents, err := v.ReadDirPlus(rel)
		if err != nil {
			return fmt.Errorf("host NFS client: list %s: %w", rel, err)
		}
		for _, e := range ents {
			name := e.Name()
			if name == "." || name == ".." {
				continue
			}
			r := strings.TrimPrefix(rel+"/"+name, "/")
			local := filepath.Join(dir, filepath.FromSlash(r))
			if e.IsDir() {
				if err := os.MkdirAll(local, 0o755); err != nil {
					return err
				}
				if err := walk(r); err != nil {
					return err
				}
				if strings.Count(r, "/") == 0 {
					if err := simulatorFiles(local); err != nil {
						return err
					}
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				return err
			}
			if strings.HasSuffix(name, "-flat.vmdk") {
				f, err := os.Create(local)
				if err != nil {
					return err
				}
				err = f.Truncate(e.Size())
				f.Close()
				if err != nil {
					return err
				}
				continue
			}
			rf, err := v.Open(r)
			if err != nil {
				return fmt.Errorf("host NFS client: open %s: %w", r, err)
			}
			b, err := io.ReadAll(rf)
			rf.Close()
			if err != nil {
				return fmt.Errorf("host NFS client: read %s: %w", r, err)
			}
			if err := os.WriteFile(local, b, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return walk("")
}

// simulatorFiles adds what the simulator's RegisterVM wants beside a .vmx
// and a real host does not: an empty vmware.log, and the .nvram under the
// VM's inventory name (a test clone's folder and name differ from the
// .vmx's; ESXi reads the nvram name from the .vmx).
func simulatorFiles(dir string) error {
	if f, err := os.OpenFile(filepath.Join(dir, "vmware.log"), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		f.Close()
	}
	want := filepath.Join(dir, filepath.Base(dir)+".nvram")
	if _, err := os.Stat(want); err == nil {
		return nil
	}
	found, _ := filepath.Glob(filepath.Join(dir, "*.nvram"))
	if len(found) != 1 {
		return nil
	}
	b, err := os.ReadFile(found[0])
	if err != nil {
		return err
	}
	return os.WriteFile(want, b, 0o644)
}
