package overlay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-billy/v5/util"
)

// readOnlyFS is the base as production sees it: reads pass, every write
// fails with os.ErrPermission. It counts opens to check the overlay caches
// base files.
type readOnlyFS struct {
	billy.Filesystem
	opens *atomic.Int64
}

func (r readOnlyFS) Create(string) (billy.File, error) { return nil, os.ErrPermission }
func (r readOnlyFS) Open(name string) (billy.File, error) {
	return r.OpenFile(name, os.O_RDONLY, 0)
}
func (r readOnlyFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, os.ErrPermission
	}
	f, err := r.Filesystem.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	r.opens.Add(1)
	return readOnlyFile{f}, nil
}
func (r readOnlyFS) Rename(string, string) error                 { return os.ErrPermission }
func (r readOnlyFS) Remove(string) error                         { return os.ErrPermission }
func (r readOnlyFS) MkdirAll(string, os.FileMode) error          { return os.ErrPermission }
func (r readOnlyFS) TempFile(string, string) (billy.File, error) { return nil, os.ErrPermission }
func (r readOnlyFS) Symlink(string, string) error                { return os.ErrPermission }
func (r readOnlyFS) Chroot(string) (billy.Filesystem, error)     { return nil, os.ErrPermission }

type readOnlyFile struct{ billy.File }

func (readOnlyFile) Write([]byte) (int, error) { return 0, os.ErrPermission }
func (readOnlyFile) Truncate(int64) error      { return os.ErrPermission }

const (
	diskPath = "/web01/disk-flat.vmdk"
	vmxPath  = "/web01/vm.vmx"
	nvPath   = "/web01/vm.nvram"
	diskSize = 5 << 20
)

type fixture struct {
	root    string // holds base and upper, nothing else
	baseDir string
	upper   string
	base    readOnlyFS
	disk    []byte
	vmx     []byte
	nvram   []byte
}

// newFixture builds a base VM folder and checks, when the test ends, that
// the base is byte for byte what it was and nothing appeared beside base
// and upper.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	fx := &fixture{root: root, baseDir: filepath.Join(root, "base"), upper: filepath.Join(root, "upper")}
	fx.disk = make([]byte, diskSize)
	rand.NewChaCha8([32]byte{1, 2}).Read(fx.disk)
	fx.vmx = []byte("config.version = \"8\"\nvirtualHW.version = \"19\"\ndisplayName = \"web01\"\nscsi0:0.fileName = \"disk.vmdk\"\n")
	fx.nvram = bytes.Repeat([]byte("NVRAM"), 1000)
	files := map[string][]byte{diskPath: fx.disk, vmxPath: fx.vmx, nvPath: fx.nvram, "/web01/sub/deep.txt": []byte("deep")}
	for p, b := range files {
		full := filepath.Join(fx.baseDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fx.base = readOnlyFS{Filesystem: osfs.New(fx.baseDir), opens: new(atomic.Int64)}
	before := hashTree(t, fx.baseDir)
	t.Cleanup(func() {
		if after := hashTree(t, fx.baseDir); !equalMaps(before, after) {
			t.Errorf("base changed:\nbefore %v\nafter  %v", before, after)
		}
		ents, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range ents {
			if de.Name() != "base" && de.Name() != "upper" {
				t.Errorf("unexpected %s beside base and upper", de.Name())
			}
		}
	})
	return fx
}

func (fx *fixture) open(t *testing.T, opts Options) *Overlay {
	t.Helper()
	o, err := New(fx.base, fx.upper, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		key := fmt.Sprintf("%s %v", fi.Mode(), fi.ModTime().UnixNano())
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			key += " " + hex.EncodeToString(sum[:])
		}
		out[p] = key
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// tree describes everything visible in o: path → kind, size, mode, id and
// content hash.
func tree(t *testing.T, o *Overlay) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := o.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir %s: %v", dir, err)
		}
		for _, fi := range ents {
			p := path.Join(dir, fi.Name())
			id, err := o.FileID(p)
			if err != nil {
				t.Fatalf("FileID %s: %v", p, err)
			}
			desc := fmt.Sprintf("%v %016x", fi.Mode(), id)
			if fi.IsDir() {
				walk(p)
			} else {
				b := readFile(t, o, p)
				if int64(len(b)) != fi.Size() {
					t.Errorf("%s: read %d bytes, Stat says %d", p, len(b), fi.Size())
				}
				sum := sha256.Sum256(b)
				desc += fmt.Sprintf(" %d %x %d", len(b), sum[:8], fi.ModTime().UnixNano())
			}
			out[p] = desc
		}
	}
	walk("/")
	return out
}

func readFile(t *testing.T, fsys billy.Filesystem, name string) []byte {
	t.Helper()
	b, err := util.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func writeFile(t *testing.T, fsys billy.Filesystem, name string, b []byte) {
	t.Helper()
	if err := util.WriteFile(fsys, name, b, 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
}

// writeAt writes like go-nfs does: open, seek, write, close.
func writeAt(t *testing.T, fsys billy.Filesystem, name string, off int64, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write(b); err != nil || n != len(b) {
		t.Fatalf("write %s at %d: %d, %v", name, off, n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, fsys billy.Filesystem, name string, size int64) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_EXCL, 0) // as go-nfs SETATTR does
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// model applies writes and truncations to a byte slice, as a file would.
func modelWrite(m []byte, off int64, b []byte) []byte {
	if end := int(off) + len(b); end > len(m) {
		m = append(m, make([]byte, end-len(m))...)
	}
	copy(m[off:], b)
	return m
}

func modelTruncate(m []byte, size int64) []byte {
	if int(size) <= len(m) {
		return m[:size]
	}
	return append(m, make([]byte, int(size)-len(m))...)
}

func checkContent(t *testing.T, o *Overlay, name string, want []byte) {
	t.Helper()
	fi, err := o.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(want)) {
		t.Fatalf("%s: size %d, want %d", name, fi.Size(), len(want))
	}
	got := readFile(t, o, name)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: content differs from byte %d (len %d, want %d)", name, i, len(got), len(want))
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestRandomizedAgainstModel applies the same random writes and
// truncations to the disk extent and to a byte slice and compares them
// after every step, then again after a restart.
func TestRandomizedAgainstModel(t *testing.T) {
	fx := newFixture(t)
	opts := Options{Salt: "s1", BlockSize: 4096} // small blocks: many boundaries
	o := fx.open(t, opts)
	bs := int64(opts.BlockSize)
	rng := rand.New(rand.NewPCG(3, 4))
	model := bytes.Clone(fx.disk)
	f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wa := f.(io.WriterAt)
	steps := 300
	if testing.Short() {
		steps = 60
	}
	got := make([]byte, 0, 8<<20)
	for step := range steps {
		var desc string
		switch r := rng.IntN(100); {
		case r < 2:
			desc = "restart"
			f.Close()
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			o = fx.open(t, opts)
			if f, err = o.OpenFile(diskPath, os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			}
			wa = f.(io.WriterAt)
		case r < 12:
			size := rng.Int64N(int64(len(model))*3/2 + 1)
			if r < 4 {
				size = rng.Int64N(3 * bs) // sometimes very small
			}
			size = min(size, 7<<20)
			desc = fmt.Sprintf("truncate %d", size)
			if err := f.Truncate(size); err != nil {
				t.Fatalf("step %d %s: %v", step, desc, err)
			}
			model = modelTruncate(model, size)
		default:
			off := rng.Int64N(int64(len(model)) + 3*bs)
			if r < 40 { // cluster near block boundaries
				off = rng.Int64N(int64(len(model))/bs+2)*bs + rng.Int64N(9) - 4
				off = max(off, 0)
			}
			n := rng.IntN(int(3*bs) + 17) // zero-length writes too
			b := randBytes(rng, n)
			desc = fmt.Sprintf("write %d+%d", off, n)
			if _, err := wa.WriteAt(b, off); err != nil {
				t.Fatalf("step %d %s: %v", step, desc, err)
			}
			model = modelWrite(model, off, b)
		}
		got = got[:len(model)]
		n, err := f.ReadAt(got, 0)
		if err != nil && err != io.EOF || n != len(model) {
			t.Fatalf("step %d %s: ReadAt: %d, %v (want %d bytes)", step, desc, n, err, len(model))
		}
		if !bytes.Equal(got, model) {
			i := 0
			for got[i] == model[i] {
				i++
			}
			t.Fatalf("step %d %s: content differs from byte %d", step, desc, i)
		}
	}
	f.Close()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = fx.open(t, opts)
	checkContent(t, o, diskPath, model)
}

func TestUnalignedWritesAcrossBlocks(t *testing.T) {
	const bs = DefaultBlockSize
	cases := []struct {
		name string
		off  int64
		n    int
	}{
		{"inside one block", 100, 10},
		{"ends on boundary", bs - 10, 10},
		{"starts on boundary", bs, 10},
		{"spans one boundary", bs - 5, 10},
		{"spans three blocks", bs - 1, 2*bs + 2},
		{"exact block", 2 * bs, bs},
		{"last partial base block", diskSize - 3, 3},
		{"crosses base end", diskSize - 3, 10},
		{"past base end", diskSize + 5*bs + 3, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			o := fx.open(t, DefaultOptions("s"))
			b := bytes.Repeat([]byte{0xAB}, tc.n)
			writeAt(t, o, diskPath, tc.off, b)
			checkContent(t, o, diskPath, modelWrite(bytes.Clone(fx.disk), tc.off, b))
		})
	}
}

func TestTruncate(t *testing.T) {
	type op struct {
		write bool
		off   int64 // write offset or truncate size
		n     int
	}
	const bs = DefaultBlockSize
	w := func(off int64, n int) op { return op{write: true, off: off, n: n} }
	tr := func(size int64) op { return op{off: size} }
	cases := []struct {
		name string
		ops  []op
	}{
		{"shrink then extend reads zeros", []op{tr(1000), tr(diskSize)}},
		{"shrink mid block then write beyond", []op{tr(100000), w(200000, 10)}},
		{"extend past base", []op{tr(diskSize + 3*bs + 1)}},
		{"to zero then write", []op{tr(0), w(0, 5)}},
		{"written block shrunk into", []op{w(3*bs+10, 100), tr(3*bs + 50), tr(4 * bs)}},
		{"shrink twice", []op{tr(2 * bs), tr(3 * bs), tr(bs / 2), tr(5 * bs)}},
		{"write then shrink below then extend", []op{w(bs, 2*bs), tr(10), w(bs*3, 1)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			o := fx.open(t, DefaultOptions("s"))
			model := bytes.Clone(fx.disk)
			for i, op := range tc.ops {
				if op.write {
					b := bytes.Repeat([]byte{byte(i + 1)}, op.n)
					writeAt(t, o, diskPath, op.off, b)
					model = modelWrite(model, op.off, b)
				} else {
					truncate(t, o, diskPath, op.off)
					model = modelTruncate(model, op.off)
				}
				checkContent(t, o, diskPath, model)
			}
			o.Close()
			o = fx.open(t, DefaultOptions("s"))
			checkContent(t, o, diskPath, model)
		})
	}
}

func allocated(t *testing.T, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no block counts on this platform")
	}
	return st.Blocks * 512
}

// TestSparseRedirect checks a few small writes into the 5 MiB extent
// allocate a few blocks in the upper layer, never a copy of the file.
func TestSparseRedirect(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	model := bytes.Clone(fx.disk)
	for _, off := range []int64{0, 2<<20 + 5, diskSize - 3, 1<<20 - 2} {
		b := []byte("0123456789")
		writeAt(t, o, diskPath, off, b)
		model = modelWrite(model, off, b)
	}
	checkContent(t, o, diskPath, model)
	id, err := o.FileID(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	data := o.dataPath(id)
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < diskSize {
		t.Errorf("data file size %d, want the file's size %d", fi.Size(), diskSize)
	}
	const bs = DefaultBlockSize
	blocks := int64(5) // the writes touch five blocks (one straddles two)
	if got := allocated(t, data); got > blocks*bs+64<<10 {
		t.Errorf("data file allocates %d bytes for %d written blocks of %d", got, blocks, bs)
	}
	if s := o.Stats(); s.BlocksRedirected != blocks || s.BytesWritten != 40 {
		t.Errorf("stats %+v, want %d blocks, 40 bytes", s, blocks)
	}
	var total int64
	filepath.WalkDir(fx.upper, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			total += allocated(t, p)
		}
		return nil
	})
	if total > diskSize/4 {
		t.Errorf("upper directory allocates %d bytes", total)
	}
}

// TestESXiSequence does what ESXi does to a VM folder when it powers the VM
// on, then restarts the overlay.
func TestESXiSequence(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("session-1"))

	// Lock file: create exclusively, write, remove.
	lck := "/web01/.lck-00000000000000a1"
	f, err := o.OpenFile(lck, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("lock"))
	f.Close()
	if _, err := o.OpenFile(lck, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second exclusive create: %v, want ErrExist", err)
	}
	if !hasEntry(t, o, "/web01", ".lck-00000000000000a1") {
		t.Fatal("lock file not listed")
	}
	if err := o.Remove(lck); err != nil {
		t.Fatal(err)
	}
	if hasEntry(t, o, "/web01", ".lck-00000000000000a1") {
		t.Fatal("removed lock file still listed")
	}

	// Swap file: create and set its size as SETATTR does.
	swap := "/web01/web01-5c3e.vswp"
	f, err = o.Create(swap)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	truncate(t, o, swap, 64<<20)
	if fi, err := o.Stat(swap); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("swap: %v, %v", fi, err)
	}
	id, _ := o.FileID(swap)
	if a := allocated(t, o.dataPath(id)); a > 1<<20 {
		t.Errorf("64 MiB swap file allocates %d bytes", a)
	}

	// Config update: write vm.vmx~, rename it over vm.vmx.
	newVMX := append(bytes.Clone(fx.vmx), "uuid.bios = \"42 00\"\n"...)
	writeFile(t, o, "/web01/vm.vmx~", newVMX)
	tildeID, _ := o.FileID("/web01/vm.vmx~")
	if err := o.Rename("/web01/vm.vmx~", vmxPath); err != nil {
		t.Fatal(err)
	}
	checkContent(t, o, vmxPath, newVMX)
	if _, err := o.Stat("/web01/vm.vmx~"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("vm.vmx~ after rename: %v", err)
	}
	if id, _ := o.FileID(vmxPath); id != tildeID {
		t.Errorf("vm.vmx id %x, want the renamed file's %x", id, tildeID)
	}

	// Log: appended in several opens.
	var log []byte
	for i := range 3 {
		f, err := o.OpenFile("/web01/vmware.log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("2026-01-01T00:00:0%dZ| vmx| line %d\n", i, i)
		f.Write([]byte(line))
		f.Close()
		log = append(log, line...)
	}
	checkContent(t, o, "/web01/vmware.log", log)

	// Guest writes to the disk.
	model := bytes.Clone(fx.disk)
	for _, off := range []int64{512, 1<<20 + 4096, 4<<20 - 7} {
		b := bytes.Repeat([]byte{0xEE}, 8192)
		writeAt(t, o, diskPath, off, b)
		model = modelWrite(model, off, b)
	}
	checkContent(t, o, diskPath, model)

	before := tree(t, o)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = fx.open(t, DefaultOptions("session-1"))
	if after := tree(t, o); !equalMaps(before, after) {
		t.Errorf("after restart:\n%v\nwant\n%v", after, before)
	}
	checkContent(t, o, diskPath, model)
	checkContent(t, o, vmxPath, newVMX)
	checkContent(t, o, "/web01/vmware.log", log)
}

func hasEntry(t *testing.T, o *Overlay, dir, name string) bool {
	t.Helper()
	ents, err := o.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !sort.SliceIsSorted(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() }) {
		t.Errorf("ReadDir %s not sorted", dir)
	}
	for _, fi := range ents {
		if fi.Name() == name {
			return true
		}
	}
	return false
}

func TestWhiteouts(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	oldID, _ := o.FileID(vmxPath)
	if err := o.Remove(vmxPath); err != nil {
		t.Fatal(err)
	}
	check := func(o *Overlay, subGone bool) {
		t.Helper()
		if _, err := o.Stat(vmxPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat removed base file: %v", err)
		}
		if _, err := o.Open(vmxPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open removed base file: %v", err)
		}
		if hasEntry(t, o, "/web01", "vm.vmx") {
			t.Error("removed base file listed")
		}
		if _, err := o.PathOf(oldID); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("PathOf removed file: %v", err)
		}
		if _, err := o.Stat("/web01/sub"); subGone && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat removed base dir: %v", err)
		}
		if _, err := o.Stat("/web01/sub/deep.txt"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat inside removed base dir: %v", err)
		}
	}
	if err := o.Remove("/web01/sub"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("remove non-empty base dir: %v", err)
	}
	if err := o.Remove("/web01/sub/deep.txt"); err != nil {
		t.Fatal(err)
	}
	if err := o.Remove("/web01/sub"); err != nil {
		t.Fatal(err)
	}
	check(o, true)
	o.Close()
	o = fx.open(t, DefaultOptions("s"))
	check(o, true)

	// Recreating the names gives new, empty things.
	writeFile(t, o, vmxPath, []byte("new"))
	checkContent(t, o, vmxPath, []byte("new"))
	if id, _ := o.FileID(vmxPath); id == oldID {
		t.Error("recreated file reuses the removed base file's id")
	}
	if err := o.MkdirAll("/web01/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	if ents, err := o.ReadDir("/web01/sub"); err != nil || len(ents) != 0 {
		t.Errorf("recreated dir lists %v, %v", ents, err)
	}
	if _, err := o.Stat("/web01/sub/deep.txt"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("base file shows in recreated dir: %v", err)
	}
	before := tree(t, o)
	o.Close()
	o = fx.open(t, DefaultOptions("s"))
	if after := tree(t, o); !equalMaps(before, after) {
		t.Errorf("after restart:\n%v\nwant\n%v", after, before)
	}
	// Removing the recreated file hides the base one again.
	if err := o.Remove(vmxPath); err != nil {
		t.Fatal(err)
	}
	check(o, false)
}

func TestRenameBaseFile(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	model := bytes.Clone(fx.disk)
	for _, off := range []int64{10, 3<<20 + 1} {
		b := bytes.Repeat([]byte{7}, 70000)
		writeAt(t, o, diskPath, off, b)
		model = modelWrite(model, off, b)
	}
	id, _ := o.FileID(diskPath)
	const moved = "/web01/moved-flat.vmdk"
	if err := o.Rename(diskPath, moved); err != nil {
		t.Fatal(err)
	}
	// Replace a base file with another, never written, base file.
	nvID, _ := o.FileID(nvPath)
	if err := o.Rename(nvPath, vmxPath); err != nil {
		t.Fatal(err)
	}
	check := func(o *Overlay) {
		t.Helper()
		checkContent(t, o, moved, model)
		checkContent(t, o, vmxPath, fx.nvram)
		if got, _ := o.FileID(moved); got != id {
			t.Errorf("FileID after rename %x, want %x", got, id)
		}
		if p, err := o.PathOf(id); err != nil || p != moved {
			t.Errorf("PathOf = %q, %v; want %q", p, err, moved)
		}
		if got, _ := o.FileID(vmxPath); got != nvID {
			t.Errorf("vm.vmx id %x, want nvram's %x", got, nvID)
		}
		for _, p := range []string{diskPath, nvPath} {
			if _, err := o.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Stat %s after rename: %v", p, err)
			}
		}
	}
	check(o)
	o.Close()
	o = fx.open(t, DefaultOptions("s"))
	check(o)
	// And back: the content keeps following the node.
	if err := o.Rename(moved, diskPath); err != nil {
		t.Fatal(err)
	}
	checkContent(t, o, diskPath, model)
}

func TestRenameDir(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	model := modelWrite(bytes.Clone(fx.disk), 5, []byte("hello"))
	writeAt(t, o, diskPath, 5, []byte("hello"))
	writeFile(t, o, "/web01/new.txt", []byte("new"))
	if err := o.Remove(nvPath); err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint64{}
	for _, p := range []string{"/web01", diskPath, vmxPath, "/web01/new.txt", "/web01/sub", "/web01/sub/deep.txt"} {
		ids[strings.Replace(p, "web01", "web02", 1)], _ = o.FileID(p)
	}
	if err := o.Rename("/web01", "/web02"); err != nil {
		t.Fatal(err)
	}
	check := func(o *Overlay) {
		t.Helper()
		if _, err := o.Stat("/web01"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("old dir: %v", err)
		}
		checkContent(t, o, "/web02/disk-flat.vmdk", model)
		checkContent(t, o, "/web02/vm.vmx", fx.vmx)
		checkContent(t, o, "/web02/new.txt", []byte("new"))
		checkContent(t, o, "/web02/sub/deep.txt", []byte("deep"))
		if _, err := o.Stat("/web02/vm.nvram"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removed file came back: %v", err)
		}
		for p, id := range ids {
			if got, err := o.FileID(p); err != nil || got != id {
				t.Errorf("FileID(%s) = %x, %v; want %x", p, got, err, id)
			}
		}
	}
	check(o)
	o.Close()
	o = fx.open(t, DefaultOptions("s"))
	check(o)
	// A new directory at the old name is empty.
	if err := o.MkdirAll("/web01", 0o755); err != nil {
		t.Fatal(err)
	}
	if ents, _ := o.ReadDir("/web01"); len(ents) != 0 {
		t.Errorf("new /web01 lists %d entries", len(ents))
	}
}

func TestRestart(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	if err := o.MkdirAll("/web01/snap/a", 0o750); err != nil {
		t.Fatal(err)
	}
	writeFile(t, o, "/web01/snap/a/x", []byte("x"))
	writeAt(t, o, diskPath, 1<<20, []byte("written"))
	truncate(t, o, vmxPath, 10)
	if err := o.Remove(nvPath); err != nil {
		t.Fatal(err)
	}
	if err := o.Rename("/web01/sub/deep.txt", "/top.txt"); err != nil {
		t.Fatal(err)
	}
	if err := o.Chmod("/top.txt", 0o600); err != nil {
		t.Fatal(err)
	}
	before := tree(t, o)
	stats := o.Stats()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stat("/top.txt"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Stat after Close: %v", err)
	}
	o = fx.open(t, DefaultOptions("s"))
	if after := tree(t, o); !equalMaps(before, after) {
		t.Errorf("after restart:\n%v\nwant\n%v", after, before)
	}
	if stats.FilesCreated != 1 {
		t.Errorf("FilesCreated %d, want 1", stats.FilesCreated)
	}
}

func TestDiscard(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	writeAt(t, o, diskPath, 0, []byte("x"))
	writeFile(t, o, "/web01/new", []byte("new"))
	if err := o.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fx.upper); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("upper still there: %v", err)
	}
	if _, err := os.Stat(fx.baseDir); err != nil {
		t.Fatalf("base gone: %v", err)
	}
	o = fx.open(t, DefaultOptions("s"))
	checkContent(t, o, diskPath, fx.disk)
	if _, err := o.Stat("/web01/new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("discarded file: %v", err)
	}
}

func TestFileIDs(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("salt-a"))
	writeFile(t, o, "/web01/new.txt", []byte("n"))
	if err := o.MkdirAll("/newdir", 0o755); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/", "/web01", diskPath, vmxPath, nvPath, "/web01/sub", "/web01/sub/deep.txt", "/web01/new.txt", "/newdir"}
	ids := map[string]uint64{}
	seen := map[uint64]string{}
	for _, p := range paths {
		id, err := o.FileID(p)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[id]; dup {
			t.Fatalf("%s and %s share id %x", p, other, id)
		}
		seen[id], ids[p] = p, id
		fi, err := o.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Ino != id {
			t.Errorf("%s: Sys() = %#v, want Ino %x", p, fi.Sys(), id)
		}
	}
	o.Close()
	// A fresh process: base ids resolve without anything cached.
	o = fx.open(t, DefaultOptions("salt-a"))
	for _, p := range paths {
		if id, err := o.FileID(p); err != nil || id != ids[p] {
			t.Errorf("FileID(%s) after restart = %x, %v; want %x", p, id, err, ids[p])
		}
		if got, err := o.PathOf(ids[p]); err != nil || got != p {
			t.Errorf("PathOf(%x) = %q, %v; want %q", ids[p], got, err, p)
		}
	}
	if _, err := o.PathOf(12345); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PathOf unknown id: %v", err)
	}
	if _, err := o.FileID("/nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FileID missing: %v", err)
	}
	o.Close()

	// Another salt, another session: other ids for the same base.
	other := &fixture{base: fx.base, upper: filepath.Join(t.TempDir(), "u")}
	o2 := other.open(t, DefaultOptions("salt-b"))
	if id, _ := o2.FileID(diskPath); id == ids[diskPath] {
		t.Error("ids do not depend on the salt")
	}
	if _, err := New(fx.base, fx.upper, DefaultOptions("salt-b")); err == nil {
		t.Error("reopening with another salt succeeded")
	}
}

func TestPathEscape(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	cases := []struct {
		name    string
		wantErr error  // nil: created, found at clean
		clean   string // where it lands
	}{
		{"../../escape", nil, "/escape"},
		{"/../../../../tmp/../escape2", nil, "/escape2"},
		{"web01/../../web01/./x", nil, "/web01/x"},
		{"//web01///y", nil, "/web01/y"},
		{"..", syscall.EISDIR, ""},
		{"a\x00b", syscall.EINVAL, ""},
		{strings.Repeat("n", 256), syscall.ENAMETOOLONG, ""},
		{"web01/" + strings.Repeat("n", 256) + "/x", syscall.ENAMETOOLONG, ""},
		{strings.Repeat("n", 255), nil, "/" + strings.Repeat("n", 255)},
	}
	for _, tc := range cases {
		f, err := o.OpenFile(tc.name, os.O_RDWR|os.O_CREATE, 0o644)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("create %q: %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("create %q: %v", tc.name, err)
			continue
		}
		f.Write([]byte(tc.clean))
		f.Close()
		checkContent(t, o, tc.clean, []byte(tc.clean))
	}
	if err := o.Rename("/escape", "../../../outside"); err != nil {
		t.Fatal(err)
	}
	checkContent(t, o, "/outside", []byte("/escape"))
	if err := o.MkdirAll("../../../../d1/../d2", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stat("/d2"); err != nil {
		t.Error(err)
	}
	// The fixture's cleanup checks nothing landed beside base and upper;
	// inside upper, only the documented layout may exist.
	filepath.WalkDir(fx.upper, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(fx.upper, p)
		switch {
		case rel == ".", rel == "data", rel == "meta", rel == "log", rel == "LOCK":
		case strings.HasPrefix(rel, "data/") && len(strings.TrimSuffix(rel[5:], ".map")) == 16:
		default:
			t.Errorf("unexpected %s in upper", rel)
		}
		return nil
	})
}

func TestErrors(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	writeFile(t, o, "/web01/file", []byte("f"))
	if err := o.MkdirAll("/web01/empty", 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		do   func() error
		want error
	}{
		{"open missing", func() error { _, err := o.Open("/nope"); return err }, os.ErrNotExist},
		{"create in missing dir", func() error { _, err := o.Create("/nope/x"); return err }, os.ErrNotExist},
		{"create under a file", func() error { _, err := o.Create(vmxPath + "/x"); return err }, syscall.ENOTDIR},
		{"exclusive create of base file", func() error {
			_, err := o.OpenFile(vmxPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			return err
		}, os.ErrExist},
		{"open dir for writing", func() error { _, err := o.OpenFile("/web01", os.O_RDWR, 0); return err }, syscall.EISDIR},
		{"remove missing", func() error { return o.Remove("/nope") }, os.ErrNotExist},
		{"remove non-empty base dir", func() error { return o.Remove("/web01") }, syscall.ENOTEMPTY},
		{"remove root", func() error { return o.Remove("/") }, syscall.EBUSY},
		{"rename missing", func() error { return o.Rename("/nope", "/x") }, os.ErrNotExist},
		{"rename file over dir", func() error { return o.Rename(vmxPath, "/web01/empty") }, syscall.EISDIR},
		{"rename dir over file", func() error { return o.Rename("/web01/empty", vmxPath) }, syscall.ENOTDIR},
		{"rename dir over non-empty dir", func() error { return o.Rename("/web01/empty", "/web01/sub") }, syscall.ENOTEMPTY},
		{"rename dir into itself", func() error { return o.Rename("/web01", "/web01/empty/x") }, syscall.EINVAL},
		{"rename into missing dir", func() error { return o.Rename(vmxPath, "/nope/x") }, os.ErrNotExist},
		{"mkdir over file", func() error { return o.MkdirAll(vmxPath+"/d", 0o755) }, syscall.ENOTDIR},
		{"readdir of file", func() error { _, err := o.ReadDir(vmxPath); return err }, syscall.ENOTDIR},
		{"write read-only handle", func() error {
			f, err := o.Open(vmxPath)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("x"))
			return err
		}, syscall.EBADF},
		{"symlink", func() error { return o.Symlink("a", "/b") }, billy.ErrNotSupported},
		{"chmod missing", func() error { return o.Chmod("/nope", 0o600) }, os.ErrNotExist},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing above changed the base view.
	checkContent(t, o, vmxPath, fx.vmx)
	checkContent(t, o, "/web01/sub/deep.txt", []byte("deep"))
	// Rename over an empty directory and over an existing file succeed.
	if err := o.MkdirAll("/web01/empty2", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := o.Rename("/web01/empty2", "/web01/empty"); err != nil {
		t.Fatal(err)
	}
	if err := o.Rename("/web01/file", nvPath); err != nil {
		t.Fatal(err)
	}
	checkContent(t, o, nvPath, []byte("f"))
}

func TestChange(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	mt := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	for _, p := range []string{vmxPath, "/web01/sub", "/web01"} {
		if err := o.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := o.Chown(p, 1000, 1001); err != nil {
			t.Fatal(err)
		}
		if err := o.Lchown(p, -1, 1002); err != nil {
			t.Fatal(err)
		}
		if err := o.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	check := func(o *Overlay) {
		t.Helper()
		for _, p := range []string{vmxPath, "/web01/sub", "/web01"} {
			fi, err := o.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", p, fi.Mode())
			}
			if !fi.ModTime().Equal(mt) {
				t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), mt)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != 1000 || st.Gid != 1002 {
				t.Errorf("%s: owner %d:%d", p, st.Uid, st.Gid)
			}
		}
		checkContent(t, o, vmxPath, fx.vmx)
		checkContent(t, o, "/web01/sub/deep.txt", []byte("deep"))
	}
	check(o)
	o.Close()
	o = fx.open(t, DefaultOptions("s"))
	check(o)
	// Writing moves the mtime on.
	writeAt(t, o, vmxPath, 0, []byte("c"))
	if fi, _ := o.Stat(vmxPath); !fi.ModTime().After(mt) {
		t.Errorf("mtime after write %v", fi.ModTime())
	}
	// Directory mtimes move when entries change: NFS clients revalidate
	// their caches on them.
	if err := o.MkdirAll("/other", 0o755); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
		dirs []string
	}{
		{"create", func() error { return util.WriteFile(o, "/web01/n", nil, 0o644) }, []string{"/web01"}},
		{"rename", func() error { return o.Rename("/web01/n", "/other/n") }, []string{"/web01", "/other"}},
		{"remove", func() error { return o.Remove("/other/n") }, []string{"/other"}},
		{"mkdir", func() error { return o.MkdirAll("/web01/sub/d", 0o755) }, []string{"/web01/sub"}},
		{"remove base file", func() error { return o.Remove(nvPath) }, []string{"/web01"}},
	}
	for _, st := range steps {
		before := map[string]time.Time{}
		for _, d := range st.dirs {
			fi, err := o.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			before[d] = fi.ModTime()
		}
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for _, d := range st.dirs {
			if fi, _ := o.Stat(d); !fi.ModTime().After(before[d]) {
				t.Errorf("%s: mtime of %s did not move past %v", st.name, d, before[d])
			}
		}
	}
}

// TestGarbageCollection checks opening an upper directory deletes what a
// crash leaves behind and keeps what the metadata names.
func TestGarbageCollection(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	writeAt(t, o, diskPath, 0, []byte("keep"))
	writeFile(t, o, "/web01/new", []byte("keep too"))
	diskID, _ := o.FileID(diskPath)
	newID, _ := o.FileID("/web01/new")
	o.Close()
	data := filepath.Join(fx.upper, "data")
	junk := []string{idString(77), idString(77) + ".map", idString(diskID) + ".tmp", idString(newID) + ".map.tmp"}
	for _, j := range junk {
		if err := os.WriteFile(filepath.Join(data, j), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(fx.upper, "meta.tmp"), []byte("junk"), 0o600)
	o = fx.open(t, DefaultOptions("s"))
	for _, j := range append(junk, "../meta.tmp") {
		if _, err := os.Stat(filepath.Join(data, j)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", j, err)
		}
	}
	checkContent(t, o, diskPath, modelWrite(bytes.Clone(fx.disk), 0, []byte("keep")))
	checkContent(t, o, "/web01/new", []byte("keep too"))
}

// TestConcurrentWriters has goroutines write neighbouring, unaligned
// regions of one base file (neighbours share blocks) through go-nfs style
// open/seek/write/close while others read and stat it.
func TestConcurrentWriters(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, Options{Salt: "s", Sync: true, BlockSize: 4096})
	const writers = 6
	const region = 50_001
	model := bytes.Clone(fx.disk)
	data := make([][]byte, writers)
	for g := range writers {
		data[g] = bytes.Repeat([]byte{byte('A' + g)}, region)
		model = modelWrite(model, int64(g*region+333), data[g])
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers+2)
	stop := make(chan struct{})
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			// Chunks in random order.
			var chunks [][2]int
			for x := 0; x < region; {
				n := min(1+rng.IntN(9000), region-x)
				chunks = append(chunks, [2]int{x, n})
				x += n
			}
			rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
			for _, c := range chunks {
				f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
				if err != nil {
					errc <- err
					return
				}
				f.Seek(int64(g*region+333+c[0]), io.SeekStart)
				if _, err := f.Write(data[g][c[0] : c[0]+c[1]]); err != nil {
					errc <- err
				}
				f.Close()
			}
		}()
	}
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 10000)
			for {
				select {
				case <-stop:
					return
				default:
				}
				f, err := o.Open(diskPath)
				if err != nil {
					errc <- err
					return
				}
				if _, err := f.ReadAt(buf, 300000); err != nil {
					errc <- err
				}
				f.Close()
				if _, err := o.Stat(diskPath); err != nil {
					errc <- err
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	checkContent(t, o, diskPath, model)
	o.Close()
	o = fx.open(t, Options{Salt: "s", Sync: true})
	checkContent(t, o, diskPath, model)
}

// TestOpenIsCheap checks the per-call path go-nfs takes on every READ and
// WRITE: no metadata write, no base reopen, few allocations.
func TestOpenIsCheap(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	writeAt(t, o, diskPath, 0, []byte("x"))
	// The first writable open of a base file records its node, once.
	f, _ := o.OpenFile(vmxPath, os.O_RDWR, 0)
	f.Close()
	gen, opens := o.j.seq, fx.base.opens.Load()
	allocs := testing.AllocsPerRun(200, func() {
		for _, p := range []string{diskPath, vmxPath} {
			if _, err := o.Stat(p); err != nil {
				t.Fatal(err)
			}
			f, err := o.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	})
	if o.j.seq != gen {
		t.Errorf("opening wrote metadata %d times", o.j.seq-gen)
	}
	if n := fx.base.opens.Load() - opens; n > 1 {
		t.Errorf("base files opened %d times", n) // vm.vmx: once, to read it below
	}
	buf := make([]byte, 10)
	for range 10 {
		f, _ := o.Open(vmxPath)
		f.ReadAt(buf, 0)
		f.Close()
	}
	if n := fx.base.opens.Load() - opens; n > 2 {
		t.Errorf("base files opened %d times for repeated reads", n)
	}
	t.Logf("%v allocations per stat+open+close of two files", allocs)
	if allocs > 40 {
		t.Errorf("%v allocations per stat+open+close of two files", allocs)
	}
}

func TestUpperDirInUse(t *testing.T) {
	fx := newFixture(t)
	fx.open(t, DefaultOptions("s"))
	if _, err := New(fx.base, fx.upper, DefaultOptions("s")); err == nil {
		t.Fatal("second overlay on the same upper directory")
	}
}

func TestCorruptMetadata(t *testing.T) {
	cases := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"flipped byte", func(b []byte) []byte { b[len(b)-5] ^= 1; return b }},
		{"garbage", func([]byte) []byte { return []byte("\x00\x01not metadata") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			o := fx.open(t, DefaultOptions("s"))
			writeFile(t, o, "/web01/x", []byte("x"))
			o.Close()
			name := filepath.Join(fx.upper, metaName)
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, tc.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = New(fx.base, fx.upper, DefaultOptions("s"))
			if !errors.Is(err, ErrCorruptMeta) {
				t.Fatalf("New: %v, want ErrCorruptMeta", err)
			}
		})
	}
}

func TestSyncAndTempFile(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, Options{Salt: "s"}) // page cache only
	f, err := o.TempFile("/web01", "tmp-")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("temp"))
	if err := f.(interface{ Sync() error }).Sync(); err != nil {
		t.Fatal(err)
	}
	name := f.Name()
	f.Close()
	if !strings.HasPrefix(name, "/web01/tmp-") {
		t.Errorf("temp file name %q", name)
	}
	checkContent(t, o, name, []byte("temp"))
	g, _ := o.OpenFile(diskPath, os.O_RDWR, 0)
	g.Write([]byte("sync me"))
	if err := g.(interface{ Sync() error }).Sync(); err != nil {
		t.Fatal(err)
	}
	g.Close()
	o.Close()
	o = fx.open(t, Options{Salt: "s"})
	checkContent(t, o, diskPath, modelWrite(bytes.Clone(fx.disk), 0, []byte("sync me")))
}

func TestChroot(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, DefaultOptions("s"))
	c, err := o.Chroot("/web01")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "in-chroot", []byte("c"))
	checkContent(t, o, "/web01/in-chroot", []byte("c"))
	if !bytes.Equal(readFile(t, c, "vm.vmx"), fx.vmx) {
		t.Error("chroot read")
	}
}

// TestBlockSizeFor: 4 KiB blocks up to 64 GiB, then doubling so the bitmap
// stays within 2^24 blocks, never above DefaultBlockSize.
func TestBlockSizeFor(t *testing.T) {
	for size, want := range map[int64]int{
		0:                 4 << 10,
		5 << 20:           4 << 10,
		64 << 30:          4 << 10,
		64<<30 + 1:        8 << 10,
		100 << 30:         8 << 10,
		500 << 30:         32 << 10,
		1 << 40:           64 << 10,
		4 << 40:           DefaultBlockSize,
		1<<40 + 4<<10 + 1: DefaultBlockSize,
	} {
		if got := BlockSizeFor(size); got != want {
			t.Errorf("BlockSizeFor(%d) = %d, want %d", size, got, want)
		}
	}
}
