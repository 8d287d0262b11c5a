package testvm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func bootable(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped in -short mode")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 missing: run scripts/install-deps")
	}
	return Copy(t, filepath.Join(t.TempDir(), "disk.img"))
}

func boot(t *testing.T, img string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Boot(ctx, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot marker after %v, qemu exited after %v", res.BootAt.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	if res.Line(BootMarker) == "" {
		t.Fatalf("no %s in console output:\n%s", BootMarker, res.Output)
	}
	return res
}

func TestMarkerTwice(t *testing.T) {
	img := bootable(t)
	if err := SetMode(img, ModeMarker, 0); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		res := boot(t, img)
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		n, up, err := ReadMarker(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n != want || up == "" {
			t.Fatalf("marker counter %d uptime %q, want %d", n, up, want)
		}
		if l := res.Line(MarkLine); !strings.HasPrefix(l, MarkLine+" "+strconv.Itoa(want)+" ") {
			t.Fatalf("console marker line %q", l)
		}
	}
}

func TestWrite(t *testing.T) {
	img := bootable(t)
	if err := SetMode(img, ModeWrite, 2); err != nil {
		t.Fatal(err)
	}
	res := boot(t, img)
	done := res.Line(DoneLine)
	if done == "" {
		t.Fatalf("no %s line:\n%s", DoneLine, res.Output)
	}
	want, err := strconv.Atoi(strings.Fields(done)[1])
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := ReadCounters(f)
	if err != nil {
		t.Fatal(err)
	}
	if n != want || n == 0 {
		t.Fatalf("write area holds %d counters, guest reported %d", n, want)
	}
	t.Logf("guest wrote %d blocks in 2 s", n)
}
