package nfsd

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path"
	"strings"
)

// A file handle is 20 bytes:
//
//	offset size  field
//	0      1     version, 1
//	1      3     zero
//	4      4     export id, big endian
//	8      8     file id within the export, big endian
//	16     4     CRC-32 (IEEE) of bytes 0..15
//
// The length is a multiple of 4 on purpose: go-nfs reads some handles without
// consuming XDR padding, which misreads the next argument after a handle of any
// other length.
//
// The checksum only tells corrupt or foreign handles (NFS3ERR_BADHANDLE) from
// handles of files that no longer exist (NFS3ERR_STALE); it is no secret. Nothing
// in a handle is random, so a handle survives a restart as long as the export keeps
// its id and the file keeps its file id.
const (
	handleVersion = 1
	handleLen     = 20
	// maxHandleLen is the longest handle the wire allows (fhandle3) and the longest
	// the front will look at; anything longer is garbage.
	maxHandleLen = 64
)

var errBadHandle = errors.New("nfsd: malformed file handle")

func encodeHandle(exportID uint32, fileID uint64) []byte {
	h := make([]byte, handleLen)
	h[0] = handleVersion
	binary.BigEndian.PutUint32(h[4:8], exportID)
	binary.BigEndian.PutUint64(h[8:16], fileID)
	binary.BigEndian.PutUint32(h[16:20], crc32.ChecksumIEEE(h[:16]))
	return h
}

func decodeHandle(h []byte) (exportID uint32, fileID uint64, err error) {
	if len(h) != handleLen || h[0] != handleVersion || h[1]|h[2]|h[3] != 0 {
		return 0, 0, errBadHandle
	}
	if binary.BigEndian.Uint32(h[16:20]) != crc32.ChecksumIEEE(h[:16]) {
		return 0, 0, errBadHandle
	}
	return binary.BigEndian.Uint32(h[4:8]), binary.BigEndian.Uint64(h[8:16]), nil
}

// slashPath renders path components as the path inside an export that FileID,
// Authorize and subtree rules see: "/" for the root, "/dir/file" otherwise.
func slashPath(components []string) string {
	return "/" + strings.Join(components, "/")
}

// isCleanRel reports whether p is a path that splitPath would take as it is,
// its components joined with "/": not empty, no leading or trailing slash, no
// empty, "." or ".." component, no NUL.
func isCleanRel(p string) bool {
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for {
		i := strings.IndexByte(p, '/')
		c := p
		if i >= 0 {
			c = p[:i]
		}
		if c == "" || c == "." || c == ".." {
			return false
		}
		if i < 0 {
			return true
		}
		p = p[i+1:]
	}
}

// splitPath turns a path inside an export, with or without a leading slash, into
// components. It refuses paths that climb out (".."), contain NUL, or are not
// clean enough to mean one thing.
func splitPath(p string) ([]string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return nil, errBadPath
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return []string{}, nil
	}
	parts := strings.Split(c[1:], "/")
	for _, s := range parts {
		if s == ".." || s == "." || s == "" {
			return nil, errBadPath
		}
	}
	return parts, nil
}

var errBadPath = errors.New("nfsd: path leaves the export or is malformed")
