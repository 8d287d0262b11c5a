// Package testvm gives tests the tiny bootable test VM built by build.sh: its disk
// image, its sector layout, and helpers to choose its mode, boot it under QEMU (TCG)
// and read back what it wrote.
//
// The image is built once from Debian packages and cached under
// testdata/cache/testvm (git-ignored). Building needs the network (apt-get download),
// so `make test` builds it before entering the private network namespace; Image
// reports how to build it when it is missing and cannot be built.
package testvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

// Sector layout of disk.img; keep in sync with build.sh.
const (
	SectorSize   = 512
	DiskSectors  = 131072 // 64 MiB
	DiskSize     = DiskSectors * SectorSize
	PartStart    = 2048  // FAT16 boot partition: first sector
	PartSectors  = 98304 // 48 MiB
	ConfigSector = 114688
	MarkerSector = 114689
	WriteStart   = 116736
	WriteSectors = 14336 // counters wrap after this many writes
)

// Serial console markers printed by the guest.
const (
	BootMarker = "REKINDLE-BOOT-OK"
	ModeLine   = "REKINDLE-MODE"
	MarkLine   = "REKINDLE-MARK"
	WroteLine  = "REKINDLE-WROTE"
	DoneLine   = "REKINDLE-DONE"
	IdleLine   = "REKINDLE-IDLE"
	FailLine   = "REKINDLE-FAIL"
)

// A file the boot partition holds, for file-level restore tests.
const (
	HelloPath    = "/rekindle/hello.txt" // inside the FAT partition
	HelloContent = "hello from the rekindle test VM\n"
)

// Modes of the guest init (see build.sh).
const (
	ModeBoot   = "boot"
	ModeMarker = "marker"
	ModeWrite  = "write"
	ModeIdle   = "idle"
	// ModeAgent runs the QEMU guest agent in the guest (on the virtio-serial
	// port org.qemu.guest_agent.0), prints AgentLine, then idles.
	ModeAgent = "agent"
)

// AgentLine starts the line the guest prints once its agent runs.
const AgentLine = "REKINDLE-AGENT"

// RepoRoot returns the module root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir is where build.sh leaves the image.
func CacheDir() string { return filepath.Join(RepoRoot(), "testdata", "cache", "testvm") }

var buildMu sync.Mutex

// Build runs build.sh (a no-op when the cached image is current) and returns the
// path of the pristine disk image. Never write to that file: Copy it first.
func Build() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	script := filepath.Join(RepoRoot(), "testdata", "testvm", "build.sh")
	cmd := exec.Command("bash", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		img := filepath.Join(CacheDir(), "disk.img")
		if _, serr := os.Stat(img); serr == nil {
			// an existing image is better than none (e.g. offline in a namespace)
			return img, nil
		}
		return "", fmt.Errorf("building the test VM failed (run `make testvm` with network access): %v\n%s", err, out.String())
	}
	return filepath.Join(CacheDir(), "disk.img"), nil
}

// Image returns the pristine cached image, building it if needed; it fails tb otherwise.
func Image(tb testing.TB) string {
	tb.Helper()
	p, err := Build()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Copy copies the pristine image to dst (sparse) and returns dst.
func Copy(tb testing.TB, dst string) string {
	tb.Helper()
	if err := vmgen.CopyFile(Image(tb), dst); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// ConfigLine is the text SetMode writes to the config sector.
func ConfigLine(mode string, seconds int) string {
	s := "rk.mode=" + mode
	if seconds > 0 {
		s += " rk.seconds=" + strconv.Itoa(seconds)
	}
	return s + "\n"
}

// SetMode writes the config sector of the image file img, which the guest init reads
// at boot. mode is one of the Mode constants; seconds matters for ModeWrite.
func SetMode(img, mode string, seconds int) error {
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := WriteMode(f, mode, seconds); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteMode writes the config sector through any WriterAt (a file, an NFS client...).
func WriteMode(w io.WriterAt, mode string, seconds int) error {
	sec := make([]byte, SectorSize)
	copy(sec, ConfigLine(mode, seconds))
	_, err := w.WriteAt(sec, ConfigSector*SectorSize)
	return err
}

func readSectorText(r io.ReaderAt, sector int64) (string, error) {
	sec := make([]byte, SectorSize)
	if _, err := r.ReadAt(sec, sector*SectorSize); err != nil {
		return "", err
	}
	if i := bytes.IndexByte(sec, 0); i >= 0 {
		sec = sec[:i]
	}
	s, _, _ := strings.Cut(string(sec), "\n")
	return s, nil
}

// ReadMarker returns the boot counter and guest uptime of the marker sector
// (written by ModeMarker); counter 0 means no marker was written.
func ReadMarker(r io.ReaderAt) (counter int, uptime string, err error) {
	line, err := readSectorText(r, MarkerSector)
	if err != nil {
		return 0, "", err
	}
	if line == "" {
		return 0, "", nil
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != MarkLine {
		return 0, "", fmt.Errorf("testvm: bad marker sector %q", line)
	}
	counter, err = strconv.Atoi(f[1])
	return counter, f[2], err
}

// ReadCounters checks the write area (ModeWrite) and returns how many consecutive
// counters 0, 1, ... n-1 it holds from WriteStart on (up to WriteSectors). A block
// holding anything but the expected counter or zeros is an error: lost or torn writes.
func ReadCounters(r io.ReaderAt) (int, error) {
	buf := make([]byte, 64*SectorSize)
	n := 0
	for base := 0; base < WriteSectors; base += 64 {
		if _, err := r.ReadAt(buf, int64(WriteStart+base)*SectorSize); err != nil {
			return n, err
		}
		for i := 0; i < 64; i++ {
			sec := buf[i*SectorSize : (i+1)*SectorSize]
			want := fmt.Sprintf("REKINDLE-CNT %d\n", base+i)
			switch {
			case bytes.HasPrefix(sec, []byte(want)) && allZero(sec[len(want):]):
				if base+i != n {
					return n, fmt.Errorf("testvm: counter %d present after a gap at %d", base+i, n)
				}
				n++
			case allZero(sec):
			default:
				return n, fmt.Errorf("testvm: unexpected data in write-area sector %d: %q", WriteStart+base+i, bytes.TrimRight(sec, "\x00"))
			}
		}
	}
	return n, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// QEMUArgs returns the qemu-system-x86_64 arguments that boot drive (a file path or
// an nfs:// URL) as the VM's virtio disk, serial console on stdio, exiting on
// power-off. driveOpts are appended to the -drive value (e.g. "format=raw",
// "cache=none"); format=raw is used when none names a format.
func QEMUArgs(drive string, driveOpts ...string) []string {
	d := "file=" + drive + ",if=virtio"
	hasFormat := false
	for _, o := range driveOpts {
		if strings.HasPrefix(o, "format=") {
			hasFormat = true
		}
		d += "," + o
	}
	if !hasFormat {
		d += ",format=raw"
	}
	return []string{"-machine", "pc", "-accel", "tcg", "-m", "256", "-display", "none",
		"-no-reboot", "-nodefaults", "-serial", "stdio", "-drive", d}
}

// Result of Boot.
type Result struct {
	Output  string        // serial console output
	Elapsed time.Duration // wall time from start to QEMU's exit
	BootAt  time.Duration // when BootMarker appeared (0 if never)
}

// Line returns the first console line that starts with prefix, or "".
func (r Result) Line(prefix string) string {
	sc := bufio.NewScanner(strings.NewReader(r.Output))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// Boot runs QEMU on drive until the guest powers off or ctx ends, and returns the
// console output. extra arguments are appended to QEMUArgs (e.g. -qmp ...).
func Boot(ctx context.Context, drive string, driveOpts []string, extra ...string) (Result, error) {
	args := append(QEMUArgs(drive, driveOpts...), extra...)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var res Result
	var out bytes.Buffer
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r")
			if res.BootAt == 0 && strings.Contains(l, BootMarker) {
				res.BootAt = time.Since(start)
			}
			out.WriteString(l)
			out.WriteByte('\n')
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	res.Elapsed = time.Since(start)
	res.Output = out.String()
	if err == nil && res.Line(FailLine) != "" {
		err = errors.New("testvm: guest reported " + res.Line(FailLine))
	}
	if err != nil {
		return res, fmt.Errorf("qemu: %w\n%s", err, res.Output)
	}
	return res, nil
}
