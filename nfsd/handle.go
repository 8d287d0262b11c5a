package nfsd

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path"
	"strings"
)

// A file handle is 17 bytes:
//
//	offset size  field
//	0      1     version, 1
//	1      4     export id, big endian
//	5      8     file id within the export, big endian
//	13     4     CRC-32 (IEEE) of bytes 0..12
//
// The checksum only tells corrupt or foreign handles (NFS3ERR_BADHANDLE) from
// handles of files that no longer exist (NFS3ERR_STALE); it is no secret. Nothing
// in a handle is random, so a handle survives a restart as long as the export keeps
// its id and the file keeps its file id.
const (
	handleVersion = 1
	handleLen     = 17
	// maxHandleLen is the longest handle the wire allows (fhandle3) and the longest
	// the front will look at; anything longer is garbage.
	maxHandleLen = 64
)

var errBadHandle = errors.New("nfsd: malformed file handle")

func encodeHandle(exportID uint32, fileID uint64) []byte {
	h := make([]byte, handleLen)
	h[0] = handleVersion
	binary.BigEndian.PutUint32(h[1:5], exportID)
	binary.BigEndian.PutUint64(h[5:13], fileID)
	binary.BigEndian.PutUint32(h[13:17], crc32.ChecksumIEEE(h[:13]))
	return h
}

func decodeHandle(h []byte) (exportID uint32, fileID uint64, err error) {
	if len(h) != handleLen || h[0] != handleVersion {
		return 0, 0, errBadHandle
	}
	if binary.BigEndian.Uint32(h[13:17]) != crc32.ChecksumIEEE(h[:13]) {
		return 0, 0, errBadHandle
	}
	return binary.BigEndian.Uint32(h[1:5]), binary.BigEndian.Uint64(h[5:13]), nil
}

// slashPath renders path components as the path inside an export that FileID,
// Authorize and subtree rules see: "/" for the root, "/dir/file" otherwise.
func slashPath(components []string) string {
	return "/" + strings.Join(components, "/")
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
