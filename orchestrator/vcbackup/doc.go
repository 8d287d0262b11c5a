// Package vcbackup takes backups of VMs and vApps from vCenter into a
// repository, incrementally by changed block tracking, without VDDK.
//
// Vocabulary:
//
//   - backup snapshot: the snapshot a backup takes of a VM (never with
//     memory; quiesced when asked and VMware Tools run) and reads the disks
//     from. Its name starts with SnapshotPrefix; a backup first removes any
//     such snapshot an earlier run left behind (a crash, a vCenter fault),
//     and removes its own whatever happens.
//   - backup claim: the VM's lock of kind repo.LockVM in the repository
//     (repo.ClaimVM), held from before the VM's snapshots are listed until
//     its own is removed. While another run holds it the VM's backup is
//     refused (or waits up to Config.ClaimWait) naming that run; backup
//     snapshots are leftovers only to the claim's holder (the run that took
//     them released its claim, or its claim was stale: its process gone).
//     See docs/repository-format.md, "VM backup claims". The VM's .vmx and .nvram are
//     downloaded while the snapshot exists, right after it is taken, so the
//     point's configuration is that of its disks' moment (removing the
//     snapshot rewrites the .vmx).
//   - transport: how disk bytes are fetched. "nfc" reads the snapshot's
//     export lease (VirtualMachineSnapshot.ExportSnapshot): vCenter streams
//     each disk as a streamOptimized VMDK, without ranges, so the disk is
//     one GET whose grains are parsed in order (stream.go) and only the
//     planned areas kept: an incremental transfers the stream up to its
//     last changed area, not only the changed bytes (Result.BytesRead is
//     what was transferred, DiskResult.BytesRead what was taken); "datastore" reads the snapshot's base flat extent through
//     the datastore's HTTP file access (/folder), with Range requests, for a
//     powered-off VM. "auto" picks nfc for a running VM and datastore
//     otherwise, except for a running VM's incremental: once the snapshot
//     is taken, the disk it names (the base; the VM writes into the
//     snapshot's delta) is stable, so its changed areas are read with
//     ranged datastore reads, after a one-byte probe; a host that refuses
//     them (a locked file, Range ignored, a fault) or a snapshot disk that
//     is itself a delta makes that disk read the nfc stream, and the Result
//     says which transport each disk used (DiskResult.Transport) and why.
//   - changeId: vSphere's changed block tracking (CBT) mark of a disk's
//     state at a snapshot. Each disk of a restore point keeps the changeId of
//     the snapshot it was read from (repo.Disk.ChangeID).
//   - full and incremental: a full backup reads every area vCenter reports
//     as allocated (QueryChangedDiskAreas with changeId "*", or the whole
//     disk when CBT is off); an incremental one reads only the areas changed
//     since the parent point's changeId, and takes every other chunk from the
//     parent point's index. A chunk partly changed is the parent's chunk with
//     the changed bytes laid over it, so the datastore transport asks vCenter
//     for exactly the changed bytes (nfc takes them from the stream). CBT off is switched on (the backup is then full, and its
//     Result says so); a changeId vCenter refuses (CBT reset, disk resized)
//     makes that disk full, and the Result says so.
//   - Result: what one VM's backup did: its restore point, mode, notes,
//     bytes fetched. A failed VM has Err set and does not fail the others.
//
// A restore point is written the way backupfs/ingest writes one: chunks,
// then one repository sync, then indexes, then the manifest, so a backup that
// fails or is killed leaves no point that names missing data. While it runs,
// a backup holds a shared repository lock, so prune cannot remove the
// chunks it reuses.
package vcbackup
