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
//   - block: the unit of redirection (Options.BlockSize, 64 KiB by default;
//     a session's overlay takes BlockSizeFor its largest disk: 4 KiB up to
//     64 GiB, so a guest's aligned 4 KiB write fills nothing from the base).
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
// # Upper directory layout (format version 2)
//
//	<upper>/LOCK            empty; locked while an Overlay has it open
//	<upper>/meta            the checkpoint: the whole table as of log record logSeq
//	<upper>/log             the changes since the checkpoint, then zeros
//	<upper>/.meta.tmp-*     transient, while a checkpoint replaces meta
//	<upper>/.log.tmp-*      transient, while a checkpoint starts an empty log
//	<upper>/data/<id>       sparse data file of file node <id>, or an empty
//	                        spare made ahead for a node not created yet
//	<upper>/data/<id>.map   block bitmap of a file node with an origin (and
//	                        where its data file holds a record region)
//	<upper>/data/*.tmp      transient, while a data or bitmap file is created
//
// <id> is the node's file id as 16 lowercase hex digits.
//
// meta is two text lines and a JSON document:
//
//	rekindle-overlay-meta 2
//	sha256 <64 hex digits: SHA-256 of the JSON document>
//	{"version":2,"salt":"…","blockSize":65536,"nextSeq":3,"logSeq":17,
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
// logSeq is the last log record the checkpoint includes (left out when 0).
// A version 1 meta (header "rekindle-overlay-meta 1", no logSeq, no log
// file) is read as a checkpoint with an empty log.
//
// log is the magic "RKOVLOG1" followed by records, each
//
//	length  4  big-endian length of the payload (never 0)
//	crc     4  big-endian CRC-32C (Castagnoli) of the payload
//	payload    JSON: {"seq":18,"nextSeq":4,"del":["/a"],"put":[node…],
//	                  "wdel":["/b"],"wput":["/c"]}
//
// A record is one change (one CREATE, REMOVE, RENAME, SETATTR…): the new
// state of every path the change touched. Replay starts from the checkpoint
// and applies, in order, del (remove the node at each path), put (set the
// node, same fields as in meta), wdel and wput (remove and add whiteouts);
// nextSeq only grows. Records with seq ≤ logSeq are already in the
// checkpoint and skipped; the next must have seq logSeq+1, and so on. The
// first record cut short, zero-length or failing its CRC ends the log (a
// torn tail from a crash mid-append; opening cuts it off). A record that
// passes its CRC but does not decode, or a gap in seq, is corruption
// (ErrCorruptMeta). The log is written with zeros ahead of its records
// (from 64 KiB, doubling with the log, in steps of at most 1 MiB), and
// records overwrite them in place: an fdatasync of blocks already written,
// at an unchanged size, needs no commit of the filesystem's journal (ext4),
// where an append does. So a log ends with its last record, as logs of
// earlier versions do, or with zeros after it, which read as its end
// (earlier versions read such a log the same way). Opening keeps those
// zeros and cuts anything else after the last good record (a torn record,
// or a later one a crash kept), so that nothing unacknowledged is read
// after the records written next. When the log's records grow past
// max(4 MiB, twice the checkpoint), the next change writes a new
// checkpoint instead of a record (durable replace of meta, then of log
// with an empty one), so a change costs one small record whether the
// session holds ten files or ten thousand.
//
// A data file's size is the file's size and its mtime the file's mtime; a
// missing data file means "nothing written yet" (size baseLimit, or 0 for a
// file without origin). For a file with an origin, the data file holds real
// bytes only in marked blocks and in the part at or beyond the base limit;
// elsewhere it is a hole, or blocks a large write reserved ahead of writing
// (fallocate, reading zeros) whose bits a crash kept from being set: what
// reads the origin is the bitmap (and the region's records), never the data
// file's allocation. While its bitmap file (version 2) names a record
// region, the data file also holds, from that offset on, the region's
// records, and the file's size is the one the bitmap header gives (the
// data file is longer).
//
// A bitmap file is a header followed by one bit per block (bit i%8 of byte
// i/8 is block i), covering the blocks below the base limit at the time the
// file was made. Bits are only ever set; a missing or short bitmap reads as
// unset bits. Version 2, written by this version, has a 64-byte header,
// little-endian:
//
//	magic      8  "RKOVBM02"
//	blockSize  4  the overlay's block size
//	zero       4
//	epoch      8  the epoch of the records not in the bits yet
//	region     8  offset in the data file of the record region (a multiple
//	              of 4096, at or past the file's size), 0 for none
//	size       8  the file's size while there is a region
//	crc        4  CRC-32C (Castagnoli) of the 40 bytes before it
//	zero      20
//
// A version 2 file is only ever made whole (written and fsynced under a
// temporary name, renamed into place, the folder synced) and its header
// then rewritten in place, within its first sector. Version 1, written by
// earlier versions, has a 16-byte header — the magic "RKOVBM01", the block
// size, four zero bytes — and was written in place: a crash could keep its
// name and lose its bytes, or keep a page of bits and lose the header's
// page; a version 1 file of zeros reads as no bits, and one whose header is
// zeros as bits at this overlay's block size (every bit was written after
// the data it marks was synced). Version 1 files read unchanged; the first
// sync that redirects a block rewrites the file as version 2.
//
// The record region is a sequence of records, each
//
//	length   4  length of the payload (never 0)
//	crc      4  CRC-32C of the payload
//	payload     epoch 8, seq 8, confirmed 8, runs 4, then per run:
//	            first block 8, count 4, one CRC-32C per block 4×count
//
// A record names the blocks one sync redirected, each with the CRC-32C of
// the block's content as written (its bytes below the base limit). Records
// of the header's epoch are numbered 1, 2, ... from the region's start; the
// first record cut short, zero-length, failing its CRC or of another epoch
// ends them (a torn tail; records of older epochs are in the bits already).
// One that passes its CRC but does not decode, names a block past the
// bitmap, or breaks the numbering is corruption (ErrCorruptMeta).
// confirmed is the last record known durable when this one was written
// (its data sync had returned), 0 for none. Opening replays the records: a
// block of a record at or below the highest confirmed of any record is
// marked; a block of a later record (its data sync may not have finished
// before a crash, and the disk may have kept the record and lost the data)
// is marked only if its content in the data file matches its CRC, and keeps
// the base's bytes otherwise (its write was never acknowledged). Then the
// bits are written to the bitmap file, the epoch moved on and the region
// cut back to its start (a checkpoint, below).
//
// # Durability
//
// A metadata change (create, remove, rename, mkdir, chmod, chown, directory
// times, truncation below the base limit) is written to the log under the
// table's lock and fdatasynced before the call returns; concurrent changes
// share one fdatasync. The zeros written ahead become durable with the
// fdatasync of the record written after them; a disk without room for
// them gets the record appended as it is. A change whose record cannot be written (a full
// disk) is undone in memory and its call fails with the error (ENOSPC
// stays visible to errors.Is): the rest of the session goes on, and the
// same call succeeds once there is room. If an fdatasync of the log fails,
// the change stays (it may be on disk) and the next change writes a
// checkpoint.
//
// With Options.Sync, a write is synced as File.Sync syncs. Without it (how
// sessions run: the NFS server syncs on stable WRITEs and COMMIT), writes
// reach the page cache and new bitmap bits are kept in memory with the
// CRC-32C of each new block, and File.Sync makes them durable with one
// fdatasync, of the data file: it appends a record naming the blocks
// redirected since the last one, then fdatasyncs the data and the record
// together (a stable WRITE costs one fdatasync, as on a plain file), then
// syncs the data folder if a data or bitmap file was made since its last
// sync: a power cut before File.Sync leaves the base bytes, never zeros.
// Records are written one at a time, so a sync returns once the blocks of
// every sync that started before it are durable. A write to a block whose
// record no durable record confirms yet first makes one durable (a record
// and fdatasync): its new content would no longer match the CRC. A
// checkpoint folds the records into the bitmap file: the data is
// fdatasynced, then the bits written and fdatasynced, then the header's
// epoch moved on and fdatasynced, and the region cut back; it runs off the
// hot path: when the region passes 4 MiB or a sync would name more than
// 65536 blocks, when the file is closed or evicted from the cache, and
// before a file with a region grows or is truncated (the region then goes:
// the data file is cut to the file's size and synced before the header says
// there is none). A File.Sync with nothing written since the last one
// syncs nothing (clients COMMIT again on close). Concurrent syncs share one
// fsync of the data folder, and the first data file made for a node created
// in the session also makes empty spare data files for the next 64 nodes
// (their ids follow a counter; when fewer than 32 are left, a CREATE starts
// the next batch in the background), so a small file's CREATE + WRITE +
// COMMIT costs two syncs (the log's at CREATE, the data's at COMMIT) and
// the folder one per 64 files. The cache of open files keeps 1024 files; one
// evicted with everything written through it synced is remembered, so
// that the next sync of it (libnfs's second COMMIT, past 1024 files)
// syncs nothing either. Data and bitmap files not named by any node
// (spares never claimed, leftovers of a crash) are deleted when the upper
// directory is opened, and the data folder is then synced once, so the
// names found count as durable.
//
// The upper directory is written through a durable.FS (Options.FS), so a
// test can put it on a powercut.FS and check what survives a power cut.
package overlay
