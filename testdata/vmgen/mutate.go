package vmgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// Changes maps each disk file the .vmx names to the indexes of the BlockSize
// blocks Mutate rewrote, ascending.
type Changes map[string][]int64

// Mutate rewrites percent% of the 64 KiB blocks of every disk of the VM folder with
// new random data, at positions and with content that derive from seed alone: the
// change an incremental backup has to pick up. Flat and raw disks change in place;
// sparse and stream VMDKs are rewritten through qemu-img. Descriptors get a new CID,
// as VMware gives them when a disk changes.
func Mutate(folder string, percent float64, seed int64) error {
	_, err := MutateReport(folder, percent, seed)
	return err
}

// MutateReport is Mutate, returning which blocks changed.
func MutateReport(folder string, percent float64, seed int64) (Changes, error) {
	if percent < 0 || percent > 100 || math.IsNaN(percent) {
		return nil, fmt.Errorf("vmgen: percent %v out of [0,100]", percent)
	}
	vmx, err := FindVMX(folder)
	if err != nil {
		return nil, err
	}
	files, err := VMXDisks(vmx)
	if err != nil {
		return nil, err
	}
	ch := Changes{}
	for _, file := range files {
		dk, err := inspectDisk(folder, file)
		if err != nil {
			return nil, err
		}
		blocks, err := mutateDisk(folder, file, dk, percent, seed)
		if err != nil {
			return nil, fmt.Errorf("vmgen: mutate %s: %w", file, err)
		}
		ch[file] = blocks
	}
	return ch, nil
}

// PickBlocks returns the sorted indexes of round(n*percent/100) of n blocks (at
// least one when percent > 0), chosen deterministically from seed and name.
func PickBlocks(n int64, percent float64, seed int64, name string) []int64 {
	k := int64(math.Round(float64(n) * percent / 100))
	if k == 0 && percent > 0 && n > 0 {
		k = 1
	}
	k = min(k, n)
	r := rand.New(newRand(seed, "mutate-pick/"+name))
	out := make([]int64, 0, k)
	// Knuth's selection sampling (Algorithm S): one pass, sorted output.
	for i := int64(0); i < n && int64(len(out)) < k; i++ {
		need := k - int64(len(out))
		if float64(n-i)*r.Float64() < float64(need) {
			out = append(out, i)
		}
	}
	return out
}

func mutateDisk(folder, file string, dk diskKind, percent float64, seed int64) ([]int64, error) {
	switch dk.format {
	case FormatFlat, FormatRaw:
		blocks, err := mutateRaw(dk.data, file, percent, seed)
		if err != nil {
			return nil, err
		}
		if dk.format == FormatFlat {
			if err := bumpDescriptorCID(dk.desc, seed); err != nil {
				return nil, err
			}
		}
		return blocks, nil
	case FormatSparse, FormatStream:
		qi, err := qemuImg()
		if err != nil {
			return nil, err
		}
		raw := filepath.Join(folder, "."+file+".raw.tmp")
		os.Remove(raw)
		defer os.Remove(raw)
		if out, err := exec.Command(qi, "convert", "-q", "-f", "vmdk", "-O", "raw", dk.data, raw).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("qemu-img convert: %v: %s", err, out)
		}
		blocks, err := mutateRaw(raw, file, percent, seed)
		if err != nil {
			return nil, err
		}
		old, err := readEmbeddedCID(dk.data)
		if err != nil {
			return nil, err
		}
		if err := qemuToVMDK(raw, dk.data, dk.format, nextCID(old, seed)); err != nil {
			return nil, err
		}
		return blocks, nil
	}
	return nil, fmt.Errorf("unknown format %q", dk.format)
}

func mutateRaw(path, name string, percent float64, seed int64) ([]int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	n := (size + BlockSize - 1) / BlockSize
	blocks := PickBlocks(n, percent, seed, name)
	data := newRand(seed, "mutate-data/"+name)
	buf := make([]byte, BlockSize)
	for _, b := range blocks {
		off := b * BlockSize
		l := min(int64(BlockSize), size-off)
		data.Read(buf[:l])
		if _, err := f.WriteAt(buf[:l], off); err != nil {
			return nil, err
		}
	}
	return blocks, f.Close()
}

func nextCID(old uint32, seed int64) uint32 {
	b := make([]byte, 4)
	newRand(seed, fmt.Sprintf("cid-next/%08x", old)).Read(b)
	c := binary.BigEndian.Uint32(b)
	if c == old || c == 0xffffffff {
		c ^= 1
	}
	return c
}

var cidLineRE = regexp.MustCompile(`(?m)^CID=([0-9a-fA-F]+)\s*$`)

func bumpDescriptorCID(desc string, seed int64) error {
	b, err := os.ReadFile(desc)
	if err != nil {
		return err
	}
	m := cidLineRE.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("%s: no CID", desc)
	}
	var old uint32
	fmt.Sscanf(string(m[1]), "%x", &old)
	nb := cidLineRE.ReplaceAll(b, []byte(fmt.Sprintf("CID=%08x", nextCID(old, seed))))
	return writeFileAtomic(desc, nb)
}

func readEmbeddedCID(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, err
	}
	off := int64(binary.LittleEndian.Uint64(hdr[28:])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[36:])) * 512
	if off == 0 || size == 0 || size > 1<<20 {
		return 0, fmt.Errorf("%s: no embedded descriptor", path)
	}
	desc := make([]byte, size)
	if _, err := f.ReadAt(desc, off); err != nil {
		return 0, err
	}
	m := cidLineRE.FindSubmatch(desc)
	if m == nil {
		return 0, fmt.Errorf("%s: no CID", path)
	}
	var c uint32
	fmt.Sscanf(string(m[1]), "%x", &c)
	return c, nil
}

// Copy copies the VM folder src to the folder dst (created; must not exist),
// keeping holes, so that Mutate can turn the copy into a later version of the VM.
// dst's parent is created if needed.
func Copy(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("vmgen: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if err := CopyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

const (
	seekData = 3 // SEEK_DATA on Linux
	seekHole = 4 // SEEK_HOLE on Linux
)

// CopyFile copies one file, keeping its holes (SEEK_DATA/SEEK_HOLE where the
// filesystem has them, else by skipping zero blocks).
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	var off int64
	for off < size {
		d, err := in.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // no data after off
				break
			}
			// no SEEK_DATA: fall back to zero detection
			out.Close()
			o, err := os.OpenFile(dst, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			if err := copySparse(o, src); err != nil {
				o.Close()
				return err
			}
			return o.Close()
		}
		h, err := in.Seek(d, seekHole)
		if err != nil {
			h = size
		}
		if _, err := in.Seek(d, io.SeekStart); err != nil {
			out.Close()
			return err
		}
		if _, err := out.Seek(d, io.SeekStart); err != nil {
			out.Close()
			return err
		}
		if _, err := io.CopyN(out, in, h-d); err != nil {
			out.Close()
			return err
		}
		off = h
	}
	return out.Close()
}
