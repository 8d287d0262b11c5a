// Package vmfolder reads a virtual machine folder as found on a VMware
// datastore — the input of `rekindle backup import` — and writes the VMDK
// descriptors rekindle serves back to hypervisors.
//
// Vocabulary:
//
//   - vmx: the VM's configuration file, `key = "value"` lines with
//     case-insensitive keys (VMX, ParseVMX).
//   - folder: one directory holding exactly one .vmx, the disks it names and
//     small configuration files such as .nvram and .vmsd (Folder, Open).
//   - descriptor: the text part of a VMDK; it names the extents that hold the
//     disk's bytes, in order (FlatDescriptor writes one).
//   - extent: a file (or a run of zeros) holding a range of a disk's sectors,
//     either flat (the bytes themselves) or sparse.
//   - sparse extent: a hosted VMDK file starting with the magic "KDMV"; its
//     data lives in grains found through a grain directory and grain tables,
//     and in the streamOptimized flavour each grain is deflate-compressed.
//   - source disk: one disk opened for reading whatever its format, seen as
//     an io.ReaderAt over the guest-visible bytes (SourceDisk, OpenDisk).
//
// Everything read here comes from a datastore the backup server does not
// control, so every decoder bounds sizes before allocating and reports
// malformed input as an error naming the file and the problem.
package vmfolder
