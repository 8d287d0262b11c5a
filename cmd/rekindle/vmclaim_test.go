package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestBackupVMClaimAcrossProcesses: a `rekindle backup vm` process held by
// vCenter in the middle of its disk read holds the VM's backup claim: a
// second process's backup of the VM is refused naming it (host, pid,
// since), with --vm-wait it fails after saying whom it waits for, and
// neither touches the first's snapshot. The first is killed (-9): its claim
// is stale (no such process on this host), so the next backup takes it
// over, removes the dead run's snapshot, says both, and writes a point
// equal to the disk.
func TestBackupVMClaimAcrossProcesses(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	vm, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{4 << 20}, PowerOn: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteDisk("web01", 0, 1<<20, bytes.Repeat([]byte("web01 data "), 20000)); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	args := []string{"backup", "vm", "--repo", repoDir, "--vc", lab.URL(), "--vc-insecure", "--transport", "nfc", "-q"}

	release := lab.Backup.HoldReads()
	defer release()
	first := exec.Command(binary, append(args, "web01")...)
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	for lab.Backup.ReadsInFlight() == 0 {
		select {
		case err := <-exited:
			t.Fatalf("the first backup ended before its read: %v: %s", err, firstOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	snaps, err := lab.Snapshots(ctx, vm)
	if err != nil || len(snaps) != 1 || !strings.HasPrefix(snaps[0], vcbackup.SnapshotPrefix) {
		t.Fatalf("the held backup's snapshots: %q %v", snaps, err)
	}

	host, _ := os.Hostname()
	pid := "pid " + strconv.Itoa(first.Process.Pid) + " on " + host + " since "
	out, stderr, code := refusedRun(t, append(args, "web01")...)
	if code == 0 || !strings.Contains(out, "web01: FAILED") || !strings.Contains(out, "another backup of this VM is running") || !strings.Contains(out, pid) {
		t.Fatalf("second backup beside a running one: exit %d, stdout %q stderr %q: want refused naming %q", code, out, stderr, pid)
	}
	out, stderr, code = refusedRun(t, append(args, "--vm-wait", "300ms", "web01")...)
	if code == 0 || !strings.Contains(out, "waited 300ms") || !strings.Contains(stderr, "waiting for another backup of this VM") || !strings.Contains(stderr, pid) {
		t.Fatalf("--vm-wait 300ms beside a running backup: exit %d, stdout %q stderr %q", code, out, stderr)
	}
	if now, _ := lab.Snapshots(ctx, vm); len(now) != 1 || now[0] != snaps[0] {
		t.Fatalf("refused backups changed the snapshots: %q, want %q", now, snaps)
	}

	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	release()
	out, _ = run(t, false, append(args, "web01")...)
	for _, want := range []string{"took over the stale backup claim of pid " + strconv.Itoa(first.Process.Pid) + " on " + host,
		"removed snapshot " + snaps[0] + " left by an earlier backup"} {
		if !strings.Contains(out, want) {
			t.Fatalf("backup after the first was killed: %q does not say %q", out, want)
		}
	}
	if now, _ := lab.Snapshots(ctx, vm); len(now) != 0 {
		t.Fatalf("snapshots left: %q", now)
	}
	r, err := repo.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	if locks, _ := r.Locks(); len(locks) != 0 {
		t.Fatalf("locks left: %+v", locks)
	}
	p, err := r.LatestPoint("web01")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(lab.DiskFile("web01", 0))
	if err != nil {
		t.Fatal(err)
	}
	dr, err := r.OpenDisk(p.Disks[0].Index, repo.NewCache(repo.CacheOptions{}), p.Disks[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if n, err := dr.ReadAt(got, 0); n != len(got) || !bytes.Equal(got, want) {
		t.Fatalf("the point's disk (%d bytes read, %v) differs from the simulator's", n, err)
	}
}

// refusedRun runs a command that should be refused at once: one that runs
// on instead (a backup whose reads vCenter holds) is killed after a minute
// and fails the test.
func refusedRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("rekindle %s: still running after a minute (not refused), killed\nstdout: %s\nstderr: %s", strings.Join(args, " "), stdout.String(), stderr.String())
	}
	if err == nil {
		return stdout.String(), stderr.String(), 0
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}
