// Package overlay is the session overlay: a read-write, copy-on-write
// billy.Filesystem over a read-only base (the restore point views of a
// session's VMs). Hypervisors run VMs from it over NFS; every write lands in
// an upper directory on local disk and the base is never written.
//
// Vocabulary:
//
//   - base: the read-only billy.Filesystem underneath. It never changes, so
//     what it says about a path (exists, size, children) is cached freely.
//   - upper directory: the session folder on local disk holding everything
//     the session wrote plus the metadata that describes it (layout below).
//   - node: a path the overlay knows about on its own: a file or directory
//     created in the session, or a base entry that was written, renamed,
//     chmod-ed or whose directory content changed. A node has a stable id.
//     Nodes form the path→node table; a path without a node shows the base.
//   - whiteout: a base path removed in the session; it and everything below
//     it are hidden.
//   - opaque directory: a directory node that does not show the base
//     directory at its path (a new directory, or one moved into place).
//   - origin: for a file node made from a base file, the base path its bytes
//     come from. Origin never changes, even when the node is renamed.
//   - block: the unit of redirection (Options.BlockSize, 64 KiB by default).
//     A write to a file with an origin marks its blocks in a bitmap; a read
//     takes a marked block from the upper data file and an unmarked one from
//     the origin, so a multi-GiB disk is never copied up whole.
//   - base limit: the lowest size a file with an origin was truncated to;
//     origin bytes at or beyond it read as zeros, so truncate-then-extend
//     never resurrects base data.
//   - file id: a stable 64-bit id (FileID, PathOf) behind NFS file handles.
//     A base path's id is derived from Options.Salt and the path; a node
//     created in the session gets one derived from the salt and a persisted
//     counter; a node keeps its id across renames and restarts.
//
// # Upper directory layout (format version 1)
//
//	<upper>/LOCK            empty; flock-ed while an Overlay has it open
//	<upper>/meta            the metadata, replaced atomically on every change
//	<upper>/meta.tmp        transient, while meta is being replaced
//	<upper>/data/<id>       sparse data file of file node <id>
//	<upper>/data/<id>.map   block bitmap of a file node with an origin
//	<upper>/data/*.tmp      transient, while a data or bitmap file is created
//
// <id> is the node's file id as 16 lowercase hex digits.
//
// meta is two text lines and a JSON document:
//
//	rekindle-overlay-meta 1
//	sha256 <64 hex digits: SHA-256 of the JSON document>
//	{"version":1,"salt":"…","blockSize":65536,"nextSeq":3,
//	 "nodes":[{"path":"/web01/web01.vmx","id":"9f3a…","kind":"file",
//	           "mode":420,"uid":0,"gid":0,"mtimeNs":…,
//	           "origin":"/web01/web01.vmx","baseLimit":2904}, …],
//	 "whiteouts":["/web01/web01.vmx.lck"]}
//
// Paths are clean and absolute ("/" is the root); kind is "file" or "dir";
// mode holds permission bits only; mtimeNs is the modification time of
// directories (and of files that have no data file yet); origin, baseLimit
// and opaque are left out when empty. nextSeq is the counter the next
// created node's id is derived from. Nodes and whiteouts are sorted by path.
//
// A data file's size is the file's size and its mtime the file's mtime; a
// missing data file means "nothing written yet" (size baseLimit, or 0 for a
// file without origin). For a file with an origin, the data file holds real
// bytes only in marked blocks and in the part at or beyond the base limit;
// elsewhere it is a hole.
//
// A bitmap file is a 16-byte header — the magic "RKOVBM01", the block size
// as a little-endian uint32, four zero bytes — followed by one bit per block
// (bit i%8 of byte i/8 is block i), covering the blocks below the base limit
// at the time the file was made. Bits are only ever set. A missing or short
// bitmap reads as unset bits.
//
// # Durability
//
// Metadata changes (create, remove, rename, mkdir, chmod, chown, directory
// times, truncation below the base limit) are written to meta.tmp, fsynced,
// renamed over meta and the directory fsynced before the call returns. With
// Options.Sync, a write is fsynced to its data file, and only then is its
// bitmap updated and fsynced, so a marked block always holds durable data.
// Without it, writes reach the page cache and File.Sync flushes them.
// Data and bitmap files not named by any node are leftovers of a crash and
// are deleted when the upper directory is opened.
package overlay
