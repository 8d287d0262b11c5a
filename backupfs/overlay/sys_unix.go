//go:build unix

package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive flock on dir/LOCK so that two Overlays (in this
// process or another) never share an upper directory.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		f.Close()
		return nil, err
	}
	if lerr != nil {
		f.Close()
		if errors.Is(lerr, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("upper directory %s is in use by another overlay", dir)
		}
		return nil, fmt.Errorf("locking upper directory %s: %w", dir, lerr)
	}
	return f, nil
}

// statSys is what FileInfo.Sys returns: a *syscall.Stat_t carrying the file
// id as the inode number, which NFS servers (go-nfs among them) report as
// the fileid attribute.
func statSys(id uint64, isDir bool, uid, gid uint32, size int64) any {
	st := &syscall.Stat_t{Ino: id, Uid: uid, Gid: gid, Size: size, Nlink: 1}
	if isDir {
		st.Nlink = 2
	}
	return st
}
