package guestimg

import (
	"encoding/binary"
	"os"
	"testing"
)

// XFS log records written by hand from the on-disk format ("XFS
// Algorithms & Data Structures", the log chapter): a header BB (magic
// 0xFEEDBABE, cycle, version 2, data length, LSN, tail LSN, CRC left 0,
// previous block, operation count, the saved first word of each data BB,
// format, header size), then the data BBs, each stamped with the cycle in
// its first word. For tests of a reader that tells a clean log from one
// that needs recovery.

const xfsBB = 512

// XFSLogOp is one operation of a hand-made record: its flags (0x20:
// unmount, 0x01: a transaction's start, 0x02: its commit) and payload.
type XFSLogOp struct {
	Flags   byte
	Payload []byte
}

// XFSUnmountOp is the operation of an unmount record.
var XFSUnmountOp = XFSLogOp{Flags: 0x20, Payload: []byte{0x6e, 0x55, 0, 0, 0, 0, 0, 0}}

// XFSLogRecord writes a record of ops into log (a whole log, in 512-byte
// BBs) at BB bb, for pass cycle, wrapping at the log's end, and returns
// its length in BBs.
func XFSLogRecord(log []byte, bb int64, cycle uint32, ops []XFSLogOp) int64 {
	var data []byte
	for i, op := range ops {
		h := make([]byte, 12)
		binary.BigEndian.PutUint32(h, 0x5eed0000+uint32(i)) // transaction id
		binary.BigEndian.PutUint32(h[4:], uint32(len(op.Payload)))
		h[8], h[9] = 0xaa, op.Flags // client: the log itself
		data = append(append(data, h...), op.Payload...)
	}
	n := (int64(len(data)) + xfsBB - 1) / xfsBB
	data = append(data, make([]byte, n*xfsBB-int64(len(data)))...)
	bbs := int64(len(log)) / xfsBB
	hdr := make([]byte, xfsBB)
	binary.BigEndian.PutUint32(hdr, 0xFEEDBABE)
	binary.BigEndian.PutUint32(hdr[4:], cycle)
	binary.BigEndian.PutUint32(hdr[8:], 2)
	binary.BigEndian.PutUint32(hdr[12:], uint32(len(data)))
	binary.BigEndian.PutUint64(hdr[16:], uint64(cycle)<<32|uint64(bb))
	binary.BigEndian.PutUint64(hdr[24:], uint64(cycle)<<32|uint64(bb))
	binary.BigEndian.PutUint32(hdr[36:], 0xffffffff)
	binary.BigEndian.PutUint32(hdr[40:], uint32(len(ops)))
	binary.BigEndian.PutUint32(hdr[300:], 1) // little-endian Linux
	binary.BigEndian.PutUint32(hdr[320:], 32<<10)
	for i := range n {
		d := data[i*xfsBB : (i+1)*xfsBB]
		copy(hdr[44+4*i:], d[:4]) // the saved first word
		binary.BigEndian.PutUint32(d, cycle)
	}
	copy(log[(bb%bbs)*xfsBB:], hdr)
	for i := range n {
		d := data[i*xfsBB : (i+1)*xfsBB]
		at := bb + 1 + i
		if at >= bbs { // past the ring's end: written in the next pass
			binary.BigEndian.PutUint32(d, cycle+1)
		}
		copy(log[(at%bbs)*xfsBB:], d)
	}
	return 1 + n
}

// XFSDirtyLog writes a transaction (start, an item, commit) at the head
// of the internal log of image, fresh from mkfs.xfs (one unmount record at
// the log's start): the log of a volume that crashed after a write.
func XFSDirtyLog(tb testing.TB, image string) {
	tb.Helper()
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 512)
	if _, err := f.ReadAt(sb, 0); err != nil {
		tb.Fatal(err)
	}
	be := binary.BigEndian
	bs, logStart, agBlocks := int64(be.Uint32(sb[4:])), be.Uint64(sb[48:]), int64(be.Uint32(sb[84:]))
	logBlocks, agBlkLog := int64(be.Uint32(sb[96:])), sb[124]
	if string(sb[:4]) != "XFSB" || logStart == 0 {
		tb.Fatalf("%s: no XFS superblock, or an external log", image)
	}
	off := (int64(logStart>>agBlkLog)*agBlocks + int64(logStart&(1<<agBlkLog-1))) * bs
	log := make([]byte, logBlocks*bs)
	if _, err := f.ReadAt(log, off); err != nil {
		tb.Fatal(err)
	}
	if be.Uint32(log) != 0xFEEDBABE {
		tb.Fatalf("%s: the log does not start with a record header", image)
	}
	hdr := int64(1)
	if size := int64(be.Uint32(log[320:])); size > 32<<10 {
		hdr = (size + 32<<10 - 1) / (32 << 10)
	}
	head := hdr + (int64(be.Uint32(log[12:]))+xfsBB-1)/xfsBB
	if be.Uint32(log[head*xfsBB:]) != 0 {
		tb.Fatalf("%s: the log holds more than mkfs.xfs's unmount record", image)
	}
	n := XFSLogRecord(log, head, be.Uint32(log[4:]), []XFSLogOp{{Flags: 0x01}, {Payload: make([]byte, 900)}, {Flags: 0x02}})
	if _, err := f.WriteAt(log[head*xfsBB:(head+n)*xfsBB], off+head*xfsBB); err != nil {
		tb.Fatal(err)
	}
}
