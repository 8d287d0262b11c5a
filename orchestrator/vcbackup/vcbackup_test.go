package vcbackup_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

const diskSize = 8 << 20

type env struct {
	lab *backuplab.Lab
	r   *repo.Repo
	cfg vcbackup.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	lab, err := backuplab.New(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	r, err := repo.Init(t.TempDir(), repo.InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return &env{lab: lab, r: r, cfg: vcbackup.Config{Client: lab.Client, Repo: r}}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) backup(t *testing.T, names ...string) []vcbackup.Result {
	t.Helper()
	res, err := vcbackup.BackupVMs(context.Background(), e.cfg, names)
	must(t, err)
	return res
}

// diskBytes reads disk i of point p back from the repository.
func (e *env) diskBytes(t *testing.T, p *repo.RestorePoint, i int) []byte {
	t.Helper()
	dr, err := e.r.OpenDisk(p.Disks[i].Index, repo.NewCache(repo.CacheOptions{}), p.Disks[i].Name)
	must(t, err)
	buf := make([]byte, p.Disks[i].Size)
	n, err := dr.ReadAt(buf, 0)
	if n != len(buf) {
		t.Fatalf("read back disk %s: %d of %d bytes: %v", p.Disks[i].Name, n, len(buf), err)
	}
	return buf
}

func (e *env) checkDisk(t *testing.T, p *repo.RestorePoint, vm string, i int) {
	t.Helper()
	want, err := os.ReadFile(e.lab.DiskFile(vm, i))
	must(t, err)
	if got := e.diskBytes(t, p, i); !bytes.Equal(got, want) {
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("point %s disk %d differs from the simulator's disk at byte %d", p.ID, i, j)
			}
		}
	}
}

func (e *env) verify(t *testing.T) {
	t.Helper()
	pts, err := e.r.Points()
	must(t, err)
	rep, err := e.r.Verify(context.Background(), pts, nil)
	must(t, err)
	if !rep.OK() {
		t.Fatalf("verify: %+v", rep.Problems)
	}
}

func (e *env) noSnapshots(t *testing.T, vm *object.VirtualMachine) {
	t.Helper()
	snaps, err := e.lab.Snapshots(context.Background(), vm)
	must(t, err)
	if len(snaps) != 0 {
		t.Fatalf("snapshots left on %s: %v", vm.Name(), snaps)
	}
}

func random(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func TestFullThenIncremental(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC // the stream; TestPoweredOnIncrementalReadsRanges has auto's ranged reads
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{diskSize, 2 << 20}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("web01", 0, 0, random(1, 1<<20)))
	must(t, e.lab.WriteDisk("web01", 0, 5<<20, random(2, 300<<10)))
	must(t, e.lab.WriteDisk("web01", 1, 1<<20, random(3, 4096)))

	// First backup: CBT was off, so it is enabled and the backup is full.
	res := e.backup(t, "web01")[0]
	must(t, res.Err)
	if res.Mode != vcbackup.ModeFull || !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "changed block tracking was off") }) {
		t.Fatalf("first backup: mode %s notes %q, want full saying CBT was enabled", res.Mode, res.Notes)
	}
	p1 := res.Point
	for i, d := range p1.Disks {
		if d.ChangeID == "" {
			t.Fatalf("disk %s: no changeId recorded", d.Name)
		}
		e.checkDisk(t, p1, "web01", i)
	}
	if p1.Source == nil || p1.Source.Mode != vcbackup.ModeFull || len(p1.NICs) != 1 || p1.NICs[0].Network != "VM Network" || p1.Disks[0].Controller != "scsi0:0" || p1.Disks[0].Adapter != "pvscsi" {
		t.Fatalf("point record: source %+v nics %+v disks %+v", p1.Source, p1.NICs, p1.Disks)
	}
	// Only allocated areas were taken from the stream: 1 MiB + 320 KiB
	// (CBT blocks) + 64 KiB; the bytes transferred are the stream's.
	if want := int64(1<<20 + 320<<10 + 64<<10); diskBytesRead(res) != want || res.BytesRead <= 0 || res.BytesRead > e.lab.Backup.BytesServed() {
		t.Fatalf("full backup took %d bytes from the stream, want the %d allocated; transferred %d of the %d served",
			diskBytesRead(res), want, res.BytesRead, e.lab.Backup.BytesServed())
	}
	e.noSnapshots(t, vm)

	// Change known ranges: one inside a chunk, one across a chunk boundary,
	// one on the second disk.
	changes := []struct {
		disk int
		off  int64
		n    int
	}{{0, 100 << 10, 1000}, {0, 6<<20 - 10, 20}, {1, 0, 70 << 10}}
	var want int64
	for i, c := range changes {
		must(t, e.lab.WriteDisk("web01", c.disk, c.off, random(uint64(10+i), c.n)))
		first, last := c.off/vcsimext.CBTBlockSize, (c.off+int64(c.n)-1)/vcsimext.CBTBlockSize
		want += (last - first + 1) * vcsimext.CBTBlockSize
	}
	served := e.lab.Backup.BytesServed()
	res = e.backup(t, "web01")[0]
	must(t, res.Err)
	if res.Mode != vcbackup.ModeIncremental || res.Point.Parent != p1.ID {
		t.Fatalf("second backup: mode %s parent %s notes %q, want incremental from %s", res.Mode, res.Point.Parent, res.Notes, p1.ID)
	}
	// The export lease streams the disk (no ranges): the incremental takes
	// only the changed blocks from the stream, and transfers the stream up
	// to the last of them.
	if diskBytesRead(res) != want || res.BytesRead < want || res.BytesRead > e.lab.Backup.BytesServed()-served {
		t.Fatalf("incremental took %d bytes from the stream, want only the changed blocks: %d (transferred %d, vCenter served %d)",
			diskBytesRead(res), want, res.BytesRead, e.lab.Backup.BytesServed()-served)
	}
	for i := range res.Point.Disks {
		e.checkDisk(t, res.Point, "web01", i)
	}
	e.noSnapshots(t, vm)

	// A CBT reset: vCenter refuses the old changeId, the backup reads whole
	// and says so.
	e.lab.Backup.ResetChangeTracking()
	must(t, e.lab.WriteDisk("web01", 0, 7<<20, random(20, 10)))
	res = e.backup(t, "web01")[0]
	must(t, res.Err)
	if res.Mode != vcbackup.ModeFull || !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "refused changeId") }) {
		t.Fatalf("after CBT reset: mode %s notes %q, want full saying the changeId was refused", res.Mode, res.Notes)
	}
	for i := range res.Point.Disks {
		e.checkDisk(t, res.Point, "web01", i)
	}
	e.noSnapshots(t, vm)
}

func diskBytesRead(res vcbackup.Result) int64 {
	var n int64
	for _, d := range res.Disks {
		n += d.BytesRead
	}
	return n
}

func TestPoweredOffReadsDatastore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{diskSize}})
	must(t, err)
	must(t, e.lab.WriteDisk("db01", 0, 3<<20, random(5, 200<<10)))
	served := e.lab.Backup.BytesServed()
	res := e.backup(t, "db01")[0]
	must(t, res.Err)
	if e.lab.Backup.BytesServed() != served || res.BytesRead == 0 {
		t.Fatalf("a powered-off VM is read through the datastore, not the export lease (lease served %d, read %d)",
			e.lab.Backup.BytesServed()-served, res.BytesRead)
	}
	e.checkDisk(t, res.Point, "db01", 0)
}

// A fault at each step of a backup: it fails (or falls back), leaves no
// snapshot and no restore point naming missing data, and the next run is
// clean.
func TestFaultsLeaveNoSnapshot(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC // faults of the export lease
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "app01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("app01", 0, 0, random(7, 256<<10)))
	res := e.backup(t, "app01")[0]
	must(t, res.Err)

	for _, step := range []string{"CreateSnapshot_Task", "ExportSnapshot", "HttpNfcLeaseComplete", "RemoveSnapshot_Task"} {
		t.Run(step, func(t *testing.T) {
			points, _ := e.r.Points()
			e.lab.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: step, ObjectType: "*", ObjectName: "*",
				Probability: 1, Enabled: true, MaxCount: 1, Message: "injected fault at " + step})
			res := e.backup(t, "app01")[0]
			e.lab.Model.Service.ClearFaultRules()
			switch step {
			case "RemoveSnapshot_Task":
				// The point is good; the snapshot stays until the next run.
				if res.Point == nil || res.Err != nil {
					t.Fatalf("fault at %s: point %v err %v", step, res.Point, res.Err)
				}
			case "HttpNfcLeaseComplete":
				if res.Err != nil {
					t.Fatalf("fault at %s: %v", step, res.Err)
				}
			default:
				if res.Err == nil || !strings.Contains(res.Err.Error(), "injected fault") {
					t.Fatalf("fault at %s: err %v, want the injected fault", step, res.Err)
				}
				if after, _ := e.r.Points(); len(after) != len(points) {
					t.Fatalf("fault at %s: a restore point was written", step)
				}
				e.noSnapshots(t, vm)
			}
			must(t, e.lab.WriteDisk("app01", 0, 1<<20, random(8, 1000)))
			res = e.backup(t, "app01")[0]
			must(t, res.Err)
			e.checkDisk(t, res.Point, "app01", 0)
			e.noSnapshots(t, vm)
			e.verify(t)
		})
	}

	t.Run("QueryChangedDiskAreas", func(t *testing.T) {
		// vCenter refusing the changed areas is a full read, said in the
		// notes, and leaves no snapshot.
		must(t, e.lab.WriteDisk("app01", 0, 3<<20, random(14, 100)))
		e.lab.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "QueryChangedDiskAreas", ObjectType: "*", ObjectName: "*",
			Probability: 1, Enabled: true, MaxCount: 1, Message: "injected fault at QueryChangedDiskAreas"})
		res := e.backup(t, "app01")[0]
		e.lab.Model.Service.ClearFaultRules()
		must(t, res.Err)
		if res.Mode != vcbackup.ModeFull || !strings.Contains(strings.Join(res.Notes, ";"), "full read") {
			t.Fatalf("after a refused changeId: mode %s notes %q", res.Mode, res.Notes)
		}
		e.checkDisk(t, res.Point, "app01", 0)
		e.noSnapshots(t, vm)
	})

	// A step between the snapshot and the point: a fault there leaves no
	// snapshot and no point, and the next run is clean.
	for _, step := range []string{"RetrievePropertiesEx"} {
		t.Run(step, func(t *testing.T) {
			points, _ := e.r.Points()
			must(t, e.lab.WriteDisk("app01", 0, 3<<20, random(12, 100)))
			rule := &simulator.FaultInjectionRule{MethodName: step, ObjectType: "*", ObjectName: "*",
				Probability: 1, Enabled: true, MaxCount: 1, Message: "injected fault at " + step}
			if step == "RetrievePropertiesEx" {
				// The snapshot's configuration, read after the snapshot.
				e.cfg.Progress = func(p vcbackup.Progress) {
					if p.Phase == "snapshot" {
						e.lab.Model.Service.AddFaultRule(rule)
					}
				}
			} else {
				e.lab.Model.Service.AddFaultRule(rule)
			}
			res := e.backup(t, "app01")[0]
			e.cfg.Progress = nil
			e.lab.Model.Service.ClearFaultRules()
			if res.Err == nil || !strings.Contains(res.Err.Error(), "injected fault") {
				t.Fatalf("fault at %s: err %v, want the injected fault", step, res.Err)
			}
			if after, _ := e.r.Points(); len(after) != len(points) {
				t.Fatalf("fault at %s: a restore point was written", step)
			}
			e.noSnapshots(t, vm)
			res = e.backup(t, "app01")[0]
			must(t, res.Err)
			e.checkDisk(t, res.Point, "app01", 0)
			e.noSnapshots(t, vm)
			e.verify(t)
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		// The run is stopped (serve shutting down, a job cancelled) while
		// it reads: the snapshot is still removed, no point is written.
		points, _ := e.r.Points()
		must(t, e.lab.WriteDisk("app01", 0, 4<<20, random(13, 100)))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := e.cfg
		cfg.Progress = func(p vcbackup.Progress) {
			if p.Phase == "read" {
				cancel()
			}
		}
		res, err := vcbackup.BackupVMs(ctx, cfg, []string{"app01"})
		must(t, err)
		if res[0].Err == nil {
			t.Fatal("a cancelled backup succeeded")
		}
		if after, _ := e.r.Points(); len(after) != len(points) {
			t.Fatal("a cancelled backup wrote a restore point")
		}
		e.noSnapshots(t, vm)
	})

	t.Run("read", func(t *testing.T) {
		// vCenter goes away in the middle of the read.
		e.lab.Backup.FailReads(1)
		points, _ := e.r.Points()
		must(t, e.lab.WriteDisk("app01", 0, 2<<20, random(9, 100)))
		res := e.backup(t, "app01")[0]
		if res.Err == nil || !strings.Contains(res.Err.Error(), "503") {
			t.Fatalf("backup whose read failed: err %v", res.Err)
		}
		if after, _ := e.r.Points(); len(after) != len(points) {
			t.Fatal("a failed read wrote a restore point")
		}
		e.noSnapshots(t, vm)
	})

	for _, file := range []string{"app01/app01.vmx", "app01/app01.nvram"} {
		t.Run("download "+path.Ext(file), func(t *testing.T) {
			// The VM's configuration files do not download (vCenter
			// restarts): no point without them, no snapshot, an error
			// naming the file, and a clean next run.
			points, _ := e.r.Points()
			must(t, e.lab.WriteDisk("app01", 0, 5<<20, random(15, 100)))
			e.lab.Backup.FailDownloads(file, 1)
			res := e.backup(t, "app01")[0]
			if res.Err == nil || !strings.Contains(res.Err.Error(), file) || !strings.Contains(res.Err.Error(), "503") {
				t.Fatalf("backup whose %s did not download: err %v, want a 503 naming the file", file, res.Err)
			}
			if after, _ := e.r.Points(); len(after) != len(points) {
				t.Fatalf("a backup without %s wrote a restore point", file)
			}
			e.noSnapshots(t, vm)
			res = e.backup(t, "app01")[0]
			must(t, res.Err)
			if !slices.ContainsFunc(res.Point.Files, func(f repo.ConfigFile) bool { return f.Name == path.Base(file) }) {
				t.Fatalf("next run's point lacks %s: %+v", file, res.Point.Files)
			}
			e.checkDisk(t, res.Point, "app01", 0)
			e.noSnapshots(t, vm)
		})
	}

	t.Run("no .nvram", func(t *testing.T) {
		// A VM that never ran has no .nvram: its point has none.
		nvram := filepath.Join(e.lab.DatastoreDir, "app01", "app01.nvram")
		must(t, os.Remove(nvram))
		defer os.WriteFile(nvram, nil, 0o644)
		res := e.backup(t, "app01")[0]
		must(t, res.Err)
		if slices.ContainsFunc(res.Point.Files, func(f repo.ConfigFile) bool { return f.Name == "app01.nvram" }) ||
			!slices.ContainsFunc(res.Point.Files, func(f repo.ConfigFile) bool { return f.Name == "app01.vmx" }) {
			t.Fatalf("point of a VM without .nvram has files %+v", res.Point.Files)
		}
	})

	t.Run("killed", func(t *testing.T) {
		// A run killed after its snapshot leaves one behind: the next run
		// removes it and says so.
		task, err := vm.CreateSnapshot(ctx, vcbackup.SnapshotPrefix+"20261202T000000Z-abcdef", "", false, false)
		must(t, err)
		must(t, task.Wait(ctx))
		res := e.backup(t, "app01")[0]
		must(t, res.Err)
		if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "left by an earlier backup") }) {
			t.Fatalf("notes %q do not mention the leftover", res.Notes)
		}
		e.noSnapshots(t, vm)
	})
}

func TestFailedVMDoesNotFailOthers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "ok01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	res := e.backup(t, "ok01", "missing01")
	if res[0].Err != nil || res[0].Point == nil {
		t.Fatalf("ok01: %v", res[0].Err)
	}
	if res[1].Err == nil || !strings.Contains(res[1].Err.Error(), `no VM named "missing01"`) {
		t.Fatalf("missing01: err %v", res[1].Err)
	}
}

// TestPointRecordsGuestAddress: the address the guest reports (VMware
// Tools' guest.net, through the simulator's SET.guest.ipAddress) is kept
// with the NIC it belongs to, beside its network and MAC.
func TestPointRecordsGuestAddress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "ip01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: "SET.guest.ipAddress", Value: "10.20.30.40"}}})
	must(t, err)
	must(t, task.Wait(ctx))
	res := e.backup(t, "ip01")[0]
	must(t, res.Err)
	if len(res.Point.NICs) != 1 || res.Point.NICs[0].IPAddress != "10.20.30.40" || res.Point.NICs[0].Network != "VM Network" || res.Point.NICs[0].MAC == "" {
		t.Fatalf("point's NICs %+v, want VM Network with the guest's address 10.20.30.40", res.Point.NICs)
	}
}

// TestResizedDiskReadFull: a disk grown since the parent point is read
// whole (its changeId cannot describe the new size), the result says so,
// and the point equals the grown disk.
func TestResizedDiskReadFull(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "grow01", Disks: []int64{4 << 20}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("grow01", 0, 0, random(41, 64<<10)))
	first := e.backup(t, "grow01")[0]
	must(t, first.Err)

	devs, err := vm.Device(ctx)
	must(t, err)
	disks := devs.SelectByType((*types.VirtualDisk)(nil))
	vd := disks[0].(*types.VirtualDisk)
	vd.CapacityInBytes, vd.CapacityInKB = 8<<20, 8<<10
	must(t, vm.EditDevice(ctx, vd))
	must(t, e.lab.WriteDisk("grow01", 0, 8<<20-4096, random(42, 4096)))

	res := e.backup(t, "grow01")[0]
	must(t, res.Err)
	if res.Mode != vcbackup.ModeFull || res.Point.Disks[0].Size != 8<<20 ||
		!slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "resized from 4194304 to 8388608 bytes") }) {
		t.Fatalf("backup of a grown disk: mode %s size %d notes %q, want full saying it was resized", res.Mode, res.Point.Disks[0].Size, res.Notes)
	}
	e.checkDisk(t, res.Point, "grow01", 0)
}
