// Package nfsd is rekindle's NFS service: it serves billy.Filesystem views as
// NFSv3 exports that ESXi and QEMU mount as datastores.
//
// Vocabulary:
//
//   - The front is this package's own ONC RPC server on TCP. It reads each client
//     connection's calls, enforces the allow-lists, answers MOUNT (program 100005,
//     versions 1-3) and the portmapper itself, answers NFS READ and WRITE through
//     the fast path, and hands the other NFS calls (program 100003 version 3) to
//     go-nfs.
//   - The fast path is the front's own READ and WRITE (fastpath.go): the same
//     checks and the same reply bytes as go-nfs, without its copies. A READ reads
//     into a pooled buffer that goes to the socket with the reply header in one
//     vectored write; a WRITE writes from the call record. The goroutine that
//     read a call works on it, having handed the reading of the connection on to
//     a new goroutine; at most Config.PipesPerConn calls of a connection are at
//     work at once, so a READ waiting on a slow backend holds up no other call.
//     Config.NoFastPath sends READ and WRITE to go-nfs too.
//   - A pipe is an in-memory connection between the front and go-nfs. go-nfs
//     answers one call at a time per connection, so the front gives every client
//     connection several pipes (Config.PipesPerConn) and sends each call to the
//     least busy one. Replies go back to the client whole, under a write lock,
//     with go-nfs's echo of the call's XID.
//   - Ordered calls are WRITE, SETATTR and COMMIT: those of one file handle are
//     applied in the order they arrived where the order matters. One that
//     arrives while another for the same handle is in flight waits for it: on
//     that call's pipe if it is in go-nfs, in the handle's queue if it is on
//     the fast path. There WRITEs wait only for earlier WRITEs overlapping
//     their bytes (so WRITEs to different blocks of a file run together and
//     share syncs), a COMMIT for every earlier call, and SETATTR and calls
//     for go-nfs are barriers both ways.
//   - An export is a filesystem published under a path (Export). A client may use
//     it when the server's allow-list, the export's allow-list, any subtree rule
//     covering the path (SetSubtreeAllow) and Config.Authorize all admit the
//     client's address. The front checks every handle and every name of every NFS
//     call, not only MNT, so a rule changed at run time applies at once. Where
//     subtree rules nest, the deepest one covering a path decides, so a client may
//     mount a subtree whose rule admits it below a directory that does not.
//     A folder of tenants (SetSubtreeAllowOnly) admits its clients to itself
//     only: an entry inside it is nobody's until its own rule is there.
//   - Tenancy (tenancy.go): a client sees only what it is admitted to. READDIR
//     and READDIRPLUS leave out entries it may not use, MOUNT EXPORT lists the
//     exports and subtrees it may mount, with its own networks as groups, and
//     DUMP lists its own mounts.
//   - A call handle (call.go) is how the front tells go-nfs who calls: it
//     forwards calls (but READ, WRITE and LOOKUP) with their handles marked and
//     followed by a token naming the call's state. go-nfs's filesystem for the
//     call (callFS) filters listings and keeps the errors the filesystem
//     returned; the front then answers with the status the error means
//     (nfsStatusOf: ENOSPC is NOSPC, EXDEV is XDEV, ...), not go-nfs's guess.
//   - Identities (identity.go): a call's AUTH_SYS uid, gid and auxiliary gids
//     are checked against file modes in the front, as a normal NFS server
//     would; uid 0 may do anything unless squashed (Config.Squash,
//     SetSubtreeSquash).
//   - The duplicate request cache (drc.go) answers a non-idempotent call sent
//     again (same client address, XID, procedure and arguments) with the first
//     call's reply.
//   - A file handle is 20 bytes: version, export id, stable file id, checksum (see
//     handle.go). File ids come from the filesystem when it implements FileIDer;
//     otherwise from a handle table persisted under Config.StateDir. Handles are
//     never random and survive restarts.
//
// Refusals. A connection from a client outside the server's allow-list (which
// datastore keeps as the union of every export's and session's), or over a
// connection limit (Limits), is closed as soon as it is accepted, before
// anything is allocated for it. A client whose admission is withdrawn while it
// is connected keeps its connection and gets clean errors: MNT answers
// MNT3ERR_ACCES, EXPORT and DUMP answer empty lists, MOUNT NULL answers, and
// every NFS call is denied with AUTH_ERROR (AUTH_TOOWEAK). A client
// outside an export's allow-list, or outside a subtree's, gets MNT3ERR_ACCES on MNT
// and NFS3ERR_ACCES on any call that names a file there. Malformed file handles get
// NFS3ERR_BADHANDLE; handles of removed exports or files get NFS3ERR_STALE; names
// that are empty, ".." (except in LOOKUP), contain "/" or NUL get NFS3ERR_INVAL.
// A caller whose identity the file modes refuse gets NFS3ERR_ACCES, and
// NFS3ERR_PERM for a change of owner, group or mode only the owner or root may
// make. SYMLINK out of the export and MKNOD get NFS3ERR_NOTSUPP, COMMIT on a
// read-only export NFS3ERR_ROFS, a WRITE past 2^63-1 NFS3ERR_FBIG.
// Bytes that are not an RPC call, records over the size or fragment limit, records
// not finished within Limits.RecordTimeout, and records that find no room in
// Limits.RecordMemory in time close the connection.
//
// Durability. go-nfs and the fast path answer every WRITE with FILE_SYNC. Unless
// Config.Unsafe is set, every write and truncate is followed by the file's Sync
// before the reply leaves, and new handle-table entries are fsynced before the
// reply that carries them.
package nfsd
