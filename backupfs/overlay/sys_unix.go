//go:build unix

package overlay

import "syscall"

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
