// Package repo is rekindle's backup repository: the durable truth every other
// part of rekindle reads.
//
// Vocabulary:
//
//   - chunk: a fixed-size piece of a disk image (the repository's chunk size,
//     set at init), named by the SHA-256 of its uncompressed bytes, stored
//     zstd-compressed (or stored as is when it does not compress) under
//     chunks/. An all-zero chunk is never stored.
//   - frame: a 32 KiB piece of a chunk, compressed and checksummed on its
//     own (chunk layout 2), so a small read decodes one frame, not the
//     chunk. Repositories of format version 1 keep whole-chunk payloads
//     (layout 1); readers take both.
//   - index: the flat list of chunk digests of one disk (or large file)
//     version, in order, so the chunk holding byte offset o is entry
//     o / chunk size. The all-zero digest marks a chunk of zeros. Indexes are
//     named by the SHA-256 of their encoded bytes.
//   - restore point: the manifest of one backup of one VM: identity, config
//     files, disks (each an index), NICs, the vApp it belongs to.
//   - app: the manifest of a distributed application (vApp): members, startup
//     order, networks, resources.
//
// Writes are atomic (temporary file, fsync, rename) and ordered: chunks
// reach stable storage before the index that names them, indexes before the
// manifest. A crash never leaves a manifest that names a missing chunk.
// docs/repository-format.md specifies every file.
package repo
