// Package view presents the repository as billy.Filesystems for the NFS
// server.
//
//   - PointFS is read-only: /<vm>/<point>/ holds each restore point as the VM
//     folder it was (config files, and per disk a <disk>.vmdk descriptor and
//     its <disk>-flat.vmdk extent read from chunks on demand).
//   - MountFS puts named filesystems side by side under one root: the
//     sessions export (/rekindle/<session>/) and, inside a session, its VM
//     folders (/<vm>/ backed by that VM's restore point).
//
// Every file has a stable 64-bit id (FileID, PathOf) from which the NFS
// server derives file handles that survive restarts.
package view

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"time"

	"github.com/willscott/go-nfs/file"
)

// IDer is implemented by filesystems whose files have stable ids.
type IDer interface {
	FileID(path string) (uint64, error)
	PathOf(id uint64) (string, error)
}

// HashID derives a stable id from a namespace and a path. The top bit is
// cleared so ids never collide with the ids overlays allocate for new files
// (which set it).
func HashID(namespace, path string) uint64 {
	h := sha256.Sum256([]byte(namespace + "\x00" + path))
	return binary.BigEndian.Uint64(h[:8]) &^ (1 << 63)
}

// info is an os.FileInfo whose Sys() carries the NFS attributes go-nfs reads.
type info struct {
	name  string
	size  int64
	mode  os.FileMode
	mtime time.Time
	id    uint64
}

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return i.size }
func (i *info) Mode() os.FileMode  { return i.mode }
func (i *info) ModTime() time.Time { return i.mtime }
func (i *info) IsDir() bool        { return i.mode.IsDir() }
func (i *info) Sys() any           { return &file.FileInfo{Nlink: 1, Fileid: i.id} } // go-nfs takes a pointer as is
