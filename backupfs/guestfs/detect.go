package guestfs

import (
	"bytes"
	"encoding/binary"

	"github.com/rekindle/rekindle/backupfs/guestfs/ext4"
)

// probeLen is how many bytes of a volume's start detection reads (ZFS's
// uberblocks lie at 128 KiB, Btrfs's superblock at 64 KiB).
const probeLen = 256 << 10

// Filesystem names detection gives.
const (
	fsExt   = "ext"
	fsXFS   = "xfs"
	fsNTFS  = "ntfs"
	fsFAT   = "fat"
	fsLVMPV = "lvm2-pv"
)

// Volume statuses.
const (
	StatusOK          = "ok"          // opened; its files are served
	StatusUnsupported = "unsupported" // a filesystem or volume manager rekindle does not read
	StatusEncrypted   = "encrypted"   // LUKS, BitLocker: not readable without the key
	StatusDamaged     = "damaged"     // structures unreadable or contradictory
	StatusEmpty       = "empty"       // no filesystem signature found
	StatusLVM         = "lvm-pv"      // an LVM physical volume: see its logical volumes
	StatusIncomplete  = "incomplete"  // an LVM logical volume on a physical volume the point lacks
	StatusUnavailable = "unavailable" // opened, then no longer served: a call into its reader did not finish in time
)

// detect names what b, the first bytes of a volume, holds: a filesystem
// this package reads (status ok), or a status and the reason.
func detect(b []byte) (fs, status, reason string) {
	at := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && bytes.Equal(b[off:off+len(sig)], []byte(sig))
	}
	switch {
	case at(0, "LUKS\xba\xbe"):
		return "luks", StatusEncrypted, "LUKS encrypted volume: rekindle does not hold the key; restore the whole disk and unlock it in a VM"
	case at(0, "SKUL\xba\xbe"):
		return "luks", StatusEncrypted, "LUKS2 encrypted volume (secondary header): not readable without the key"
	case at(3, "-FVE-FS-"):
		return "bitlocker", StatusEncrypted, "BitLocker encrypted volume: not readable without the recovery key; restore the whole disk and unlock it in Windows"
	case at(3, "NTFS    "):
		return fsNTFS, StatusOK, ""
	case at(3, "ReFS\x00\x00\x00\x00"):
		return "refs", StatusUnsupported, "ReFS is not supported: restore the whole disk to read it in Windows"
	case at(3, "EXFAT   "):
		return "exfat", StatusUnsupported, "exFAT is not supported: restore the whole disk to read it"
	case at(0, "XFSB"):
		return fsXFS, StatusOK, ""
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", StatusUnsupported, "Btrfs is not supported: restore the whole disk to read it"
	case zfs(b):
		return "zfs", StatusUnsupported, "ZFS is not supported: restore the whole disk and import the pool in a VM"
	case lvmLabel(b):
		return fsLVMPV, StatusLVM, ""
	case ext4.Probe(b):
		return fsExt, StatusOK, ""
	case fatBPB(b):
		return fsFAT, StatusOK, ""
	case len(b) >= 4096 && at(4096-10, "SWAPSPACE2"):
		return "swap", StatusUnsupported, "Linux swap space: it holds no files"
	}
	return "", StatusEmpty, "no filesystem rekindle knows was found (unformatted, or a format it cannot name); nothing is guessed"
}

func lvmLabel(b []byte) bool {
	for s := 0; s < 4; s++ {
		o := s * 512
		if len(b) >= o+32 && bytes.Equal(b[o:o+8], []byte("LABELONE")) && bytes.Equal(b[o+24:o+32], []byte("LVM2 001")) {
			return true
		}
	}
	return false
}

// zfs finds an uberblock magic in the first label's uberblock array.
func zfs(b []byte) bool {
	for off := 128 << 10; off+8 <= len(b) && off < 256<<10; off += 1024 {
		if v := binary.LittleEndian.Uint64(b[off:]); v == 0x00bab10c {
			return true
		}
		if v := binary.BigEndian.Uint64(b[off:]); v == 0x00bab10c {
			return true
		}
	}
	return false
}

// fatBPB checks a FAT boot sector's BIOS parameter block.
func fatBPB(b []byte) bool {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xAA {
		return false
	}
	le := binary.LittleEndian
	bps := le.Uint16(b[11:])
	spc := b[13]
	reserved := le.Uint16(b[14:])
	nfats := b[16]
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 || reserved == 0 || nfats == 0 || nfats > 4 {
		return false
	}
	return bytes.Equal(b[54:57], []byte("FAT")) || bytes.Equal(b[82:87], []byte("FAT32")) || b[21] >= 0xF0
}
