package vcsimext

// Stand-ins for what vCenter offers a backup application and govmomi's
// v0.56.0 simulator lacks. They are test support, named as such:
//
//   - changed block tracking (CBT): the simulator has no
//     VirtualMachine.QueryChangedDiskAreas and never sets a disk's changeId.
//     The stand-in records, at every snapshot of a VM whose
//     changeTrackingEnabled is set, a fingerprint (SHA-256 per 64 KiB block)
//     of each disk's flat file under a fresh changeId that it writes into the
//     disk backing the snapshot copies. QueryChangedDiskAreas then answers
//     with the blocks whose fingerprint differs between the snapshot's record
//     and the record of the changeId asked about — exactly the ranges a test
//     wrote into the simulated disk file between two backups, rounded out to
//     blocks. changeId "*" answers with the blocks that hold data. An unknown
//     changeId (ResetChangeTracking forgets them all, as a CBT reset does on
//     ESXi) is refused with InvalidArgument, as vCenter refuses a stale one.
//   - the snapshot export lease's disk bytes: the simulator's lease URL
//     serves the disk's descriptor text, where vCenter streams the disk. The
//     stand-in rewrites each disk URL of the lease to a handler that streams,
//     as vCenter does, the disk as a streamOptimized VMDK (see stream.go:
//     header, embedded descriptor, zlib-compressed grains behind grain
//     markers, grain tables and directory behind their markers, footer,
//     end-of-stream marker; all-zero grains left out) made from the
//     -flat.vmdk extent zero-padded to the disk's capacity. Like vCenter it
//     ignores Range: every GET is answered 200 with the whole stream. The URL
//     is valid while the lease is open and refused after Complete or Abort.
//     CorruptStreams makes the next streams carry a malformed marker.
//   - a VM's configuration changing while a backup's snapshot is open:
//     ChangeConfigAtSnapshotRemoval edits the VM's .vmx and .nvram when its
//     snapshot is removed, before the simulator removes it, as a
//     reconfiguration during the backup (or ESXi's consolidation, which
//     rewrites the .vmx's disk entries) does. The files of the snapshot's
//     moment are those seen before the removal.
//   - snapshot deltas: the simulator's snapshots copy the config and leave
//     the disks alone. On ESXi the VM writes into a new delta disk from the
//     snapshot on, and the disk the snapshot names (the base) stays as it
//     was until the snapshot is removed, when the delta is consolidated into
//     it. The stand-in does the same for writes made through GuestWrite:
//     while a VM has a snapshot, they are kept aside (the delta) and written
//     into the flat file when its last snapshot is removed.
//   - datastore file access: the stand-in answers GETs of /folder/ before
//     the simulator does (which serves ranges), to count the bytes of disk
//     extents (-flat.vmdk) served (DatastoreBytesServed), to refuse them as
//     a host refuses a locked file (LockDiskFiles: 409), to ignore Range
//     (IgnoreRange) and to inject faults (FailDownloads).
//   - what vCenter was asked: SnapshotRequests lists every snapshot request
//     as received (name, memory, quiesce), and disk reads (export-lease
//     streams and datastore GETs of -flat.vmdk extents) are counted while
//     they run (ReadsInFlight, MaxReadsInFlight); HoldReads keeps them
//     waiting until released, so a test sees how many a backup starts at
//     once.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// CBTBlockSize is the granularity of the changed block tracking stand-in.
const CBTBlockSize = 64 << 10

// nfcPath is where the export-lease stand-in serves disk bytes.
const nfcPath = "/vcsimext/nfc/"

// Backup is the stand-in for vCenter's changed block tracking and snapshot
// export. Make it with ExtendBackup.
type Backup struct {
	Self types.ManagedObjectReference // the stand-in's own object id

	mu      sync.Mutex
	seq     int
	records map[string]*cbtRecord // changeId -> fingerprint
	leases  map[string]map[string]leaseDisk

	served    atomic.Int64
	requests  atomic.Int64
	failReads atomic.Int64
	corrupt   atomic.Int64

	svc       *simulator.Service
	reg       *simulator.Registry
	failFiles map[string]*failCount // datastore file path -> downloads to fail
	changes   map[string][2]string  // .vmx datastore file path -> key, value to set at snapshot removal

	dsServed atomic.Int64 // disk extent bytes served through /folder/
	locked   atomic.Bool
	noRange  atomic.Bool
	deltas   map[string]map[string][]guestWrite // VM moref -> flat file -> writes since its snapshot

	snapReqs    []SnapshotRequest
	inflight    atomic.Int64
	maxInflight atomic.Int64
	hold        chan struct{} // non-nil: disk reads wait for it to close (under mu)
}

// SnapshotRequest is a snapshot creation as vCenter received it.
type SnapshotRequest struct {
	VM      string // the VM's managed object id
	Name    string
	Memory  bool
	Quiesce bool
}

type failCount struct{ after, left atomic.Int64 }

// guestWrite is a write kept in a snapshot's delta.
type guestWrite struct {
	off  int64
	data []byte
}

type cbtRecord struct {
	file   string // flat file the record fingerprints
	size   int64
	blocks [][sha256.Size]byte
	zero   []bool
}

type leaseDisk struct {
	file string
	size int64
}

// ExtendBackup installs the backup stand-ins on the simulator model (after
// Create, before or after Service.NewServer) and returns them, so a test
// can read BytesServed or call ResetChangeTracking.
func ExtendBackup(m *simulator.Model) *Backup {
	b := &Backup{records: map[string]*cbtRecord{}, leases: map[string]map[string]leaseDisk{},
		Self: types.ManagedObjectReference{Type: "VcsimextBackup", Value: "vcsimext-backup"},
		svc:  m.Service, reg: m.Map(), failFiles: map[string]*failCount{}, deltas: map[string]map[string][]guestWrite{}, changes: map[string][2]string{}}
	r := m.Map()
	r.Put(b)
	prev := r.Handler
	r.Handler = func(ctx *simulator.Context, meth *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if h, fault := b.route(ctx, meth); h != nil || fault != nil {
			return h, fault
		}
		if prev != nil {
			return prev(ctx, meth)
		}
		return nil, nil
	}
	s := m.Service
	if s.ServeMux == nil {
		s.ServeMux = http.NewServeMux() // NewServer keeps an existing mux
	}
	s.ServeMux.HandleFunc(nfcPath, b.serveDisk)
	// More specific than the simulator's "/folder/" by its method: PUTs
	// still reach the simulator directly.
	s.ServeMux.HandleFunc("GET /folder/", b.serveDatastore)
	return b
}

// serveDatastore answers a datastore file GET: injected faults, locked
// disk extents, then the simulator's handler, counting disk extent bytes.
func (b *Backup) serveDatastore(w http.ResponseWriter, r *http.Request) {
	file := strings.TrimPrefix(r.URL.Path, "/folder/")
	b.mu.Lock()
	fc := b.failFiles[file]
	b.mu.Unlock()
	if fc != nil && fc.after.Add(-1) < 0 {
		fc.after.Store(0)
		if fc.left.Add(-1) >= 0 {
			http.Error(w, "injected download fault (vcsimext.Backup.FailDownloads)", http.StatusServiceUnavailable)
			return
		}
		fc.left.Store(0)
	}
	disk := strings.HasSuffix(file, "-flat.vmdk")
	if disk && b.locked.Load() {
		http.Error(w, "Cannot open file: the file is locked (vcsimext.Backup.LockDiskFiles)", http.StatusConflict)
		return
	}
	if disk && b.noRange.Load() {
		r.Header.Del("Range")
	}
	if disk {
		defer b.read(r)()
		w = &countingWriter{ResponseWriter: w, n: &b.dsServed}
	}
	b.svc.ServeDatastore(w, r)
}

// DatastoreBytesServed is how many bytes of disk extents (-flat.vmdk) the
// datastore file access has sent.
func (b *Backup) DatastoreBytesServed() int64 { return b.dsServed.Load() }

// LockDiskFiles makes datastore GETs of disk extents answer 409, as a
// host answers for a file a running VM holds locked.
func (b *Backup) LockDiskFiles(on bool) { b.locked.Store(on) }

// IgnoreRange makes datastore GETs of disk extents ignore Range and answer
// 200 with the whole file, as some hosts and proxies do.
func (b *Backup) IgnoreRange(on bool) { b.noRange.Store(on) }

// GuestWrite writes data into flat file at off as the VM's guest would:
// into the delta while vm has a snapshot (see the stand-in's description),
// else into the file.
func (b *Backup) GuestWrite(vm types.ManagedObjectReference, file string, off int64, data []byte) error {
	obj, ok := b.reg.Get(vm).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("guest write: no VM %s in the simulator", vm.Value)
	}
	snaps := 0
	b.reg.WithLock(&simulator.Context{Context: context.Background(), Map: b.reg}, obj, func() { snaps = countSnapshots(obj) })
	b.mu.Lock()
	if snaps > 0 {
		d := b.deltas[vm.Value]
		if d == nil {
			d = map[string][]guestWrite{}
			b.deltas[vm.Value] = d
		}
		d[file] = append(d[file], guestWrite{off: off, data: bytes.Clone(data)})
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	return writeAt(file, off, data)
}

func writeAt(file string, off int64, data []byte) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// consolidate writes vm's delta into its disks, as removing its last
// snapshot does.
func (b *Backup) consolidate(vm types.ManagedObjectReference) types.BaseMethodFault {
	b.mu.Lock()
	d := b.deltas[vm.Value]
	delete(b.deltas, vm.Value)
	b.mu.Unlock()
	for file, ws := range d {
		for _, w := range ws {
			if err := writeAt(file, w.off, w.data); err != nil {
				return &types.FileFault{File: file}
			}
		}
	}
	return nil
}

// SnapshotRequests lists the snapshot creations vCenter received, oldest
// first.
func (b *Backup) SnapshotRequests() []SnapshotRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.snapReqs)
}

// ReadsInFlight is how many disk reads (export-lease streams, datastore
// GETs of disk extents) are being answered now.
func (b *Backup) ReadsInFlight() int64 { return b.inflight.Load() }

// MaxReadsInFlight is the most disk reads answered at once since the last
// ResetMaxReadsInFlight.
func (b *Backup) MaxReadsInFlight() int64 { return b.maxInflight.Load() }

// ResetMaxReadsInFlight starts MaxReadsInFlight again from the reads in
// flight now.
func (b *Backup) ResetMaxReadsInFlight() { b.maxInflight.Store(b.inflight.Load()) }

// HoldReads makes disk reads wait, counted in flight, before they are
// answered, until release is called (or the client gives up).
func (b *Backup) HoldReads() (release func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hold = ch
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			if b.hold == ch {
				b.hold = nil
			}
			b.mu.Unlock()
			close(ch)
		})
	}
}

// read counts a disk read in flight and waits while reads are held; done
// ends it.
func (b *Backup) read(r *http.Request) (done func()) {
	n := b.inflight.Add(1)
	for {
		m := b.maxInflight.Load()
		if n <= m || b.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}
	return func() { b.inflight.Add(-1) }
}

// BytesServed is how many stream bytes the export-lease stand-in has sent.
func (b *Backup) BytesServed() int64 { return b.served.Load() }

// Requests is how many disk reads the export-lease stand-in has answered.
func (b *Backup) Requests() int64 { return b.requests.Load() }

// FailReads makes the next n disk reads through the export lease fail with
// 503, as when vCenter or the host restarts during a backup.
func (b *Backup) FailReads(n int) { b.failReads.Store(int64(n)) }

// FailDownloads makes the next n HTTP downloads of datastore file file
// (its path inside the datastore, e.g. "web01/web01.nvram") fail with 503,
// as when vCenter or the host restarts while a backup fetches the VM's
// configuration; later downloads reach the simulator's datastore handler.
func (b *Backup) FailDownloads(file string, n int) { b.FailDownloadsAfter(file, 0, n) }

// FailDownloadsAfter is FailDownloads after the next after downloads of
// file succeed: a fault in the middle of a read.
func (b *Backup) FailDownloadsAfter(file string, after, n int) {
	b.mu.Lock()
	fc, ok := b.failFiles[file]
	if !ok {
		fc = new(failCount)
		b.failFiles[file] = fc
	}
	b.mu.Unlock()
	fc.after.Store(int64(after))
	fc.left.Store(int64(n))
}

// ChangeConfigAtSnapshotRemoval makes the next removal of a snapshot of
// the VM whose .vmx is the datastore file vmx (its path in the datastore,
// e.g. "web01/web01.vmx") first set key = "value" in that .vmx (replacing
// the key's line, or appended) and append a line to the VM's .nvram beside
// it. A backup that records the configuration files after removing its
// snapshot records them changed, not as they were at its disks' moment.
func (b *Backup) ChangeConfigAtSnapshotRemoval(vmx, key, value string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changes[vmx] = [2]string{key, value}
}

// changeConfig applies an armed ChangeConfigAtSnapshotRemoval to the VM of
// the snapshot being removed.
func (b *Backup) changeConfig(ctx *simulator.Context, snap *simulator.VirtualMachineSnapshot) types.BaseMethodFault {
	vm, ok := ctx.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	var vmx string
	ctx.WithLock(vm, func() { vmx = vm.Config.Files.VmPathName })
	var p object.DatastorePath
	if !p.FromString(vmx) {
		return nil
	}
	b.mu.Lock()
	kv, armed := b.changes[p.Path]
	delete(b.changes, p.Path)
	b.mu.Unlock()
	if !armed {
		return nil
	}
	file, err := localFile(ctx, p.Datastore, p.Path)
	if err != nil {
		return &types.FileFault{File: vmx}
	}
	old, err := os.ReadFile(file)
	if err != nil {
		return &types.FileFault{File: vmx}
	}
	line := fmt.Sprintf("%s = %q", kv[0], kv[1])
	var out []string
	set := false
	for l := range strings.Lines(string(old)) {
		l = strings.TrimRight(l, "\n")
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == kv[0] {
			l, set = line, true
		}
		out = append(out, l)
	}
	if !set {
		out = append(out, line)
	}
	nvram := strings.TrimSuffix(file, ".vmx") + ".nvram"
	if os.WriteFile(file, []byte(strings.Join(out, "\n")+"\n"), 0o644) != nil ||
		appendFile(nvram, "changed by vcsimext at snapshot removal: "+line+"\n") != nil {
		return &types.FileFault{File: vmx}
	}
	return nil
}

func appendFile(name, text string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ResetChangeTracking forgets every changeId, as a CBT reset on ESXi does:
// the next QueryChangedDiskAreas with an older changeId is refused.
func (b *Backup) ResetChangeTracking() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records = map[string]*cbtRecord{}
}

// route stamps changeIds before a snapshot, and sends the methods the
// stand-in adds to the Backup object itself: the simulator dispatches a call
// to the object m.This names, and this redirection leaves the simulator's
// VMs and snapshots unwrapped (other extensions may wrap them).
func (b *Backup) route(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	switch m.Name {
	case "CreateSnapshot_Task", "CreateSnapshotEx_Task":
		req := SnapshotRequest{VM: m.This.Value}
		switch body := m.Body.(type) {
		case *types.CreateSnapshot_Task:
			req.Name, req.Memory, req.Quiesce = body.Name, body.Memory, body.Quiesce
		case *types.CreateSnapshotEx_Task:
			req.Name, req.Memory, req.Quiesce = body.Name, body.Memory, body.QuiesceSpec != nil
		}
		b.mu.Lock()
		b.snapReqs = append(b.snapReqs, req)
		b.mu.Unlock()
		if vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
			if fault := b.stamp(ctx, vm); fault != nil {
				return nil, fault
			}
		}
	case "RemoveSnapshot_Task", "RemoveAllSnapshots_Task":
		var vm types.ManagedObjectReference
		switch o := ctx.Map.Get(m.This).(type) {
		case *simulator.VirtualMachineSnapshot:
			vm = o.Vm
			if m.Name == "RemoveSnapshot_Task" {
				if fault := b.changeConfig(ctx, o); fault != nil {
					return nil, fault
				}
				var n int
				ctx.WithLock(ctx.Map.Get(vm), func() { n = countSnapshots(ctx.Map.Get(vm).(*simulator.VirtualMachine)) })
				if n > 1 {
					break // not the last snapshot: the delta stays
				}
			}
			if fault := b.consolidate(vm); fault != nil {
				return nil, fault
			}
		case *simulator.VirtualMachine:
			if fault := b.consolidate(o.Self); fault != nil {
				return nil, fault
			}
		}
	case "QueryChangedDiskAreas":
		if _, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
			m.This = b.Self
			return b, nil
		}
	case "ExportSnapshot":
		if _, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachineSnapshot); ok {
			m.This = b.Self
			return b, nil
		}
	case "HttpNfcLeaseComplete", "HttpNfcLeaseAbort":
		b.mu.Lock()
		delete(b.leases, m.This.Value)
		b.mu.Unlock()
	}
	return nil, nil
}

func countSnapshots(vm *simulator.VirtualMachine) int {
	if vm.Snapshot == nil {
		return 0
	}
	var count func([]types.VirtualMachineSnapshotTree) int
	count = func(ts []types.VirtualMachineSnapshotTree) int {
		n := 0
		for _, t := range ts {
			n += 1 + count(t.ChildSnapshotList)
		}
		return n
	}
	return count(vm.Snapshot.RootSnapshotList)
}

// Reference makes Backup a managed object the simulator can dispatch to.
func (b *Backup) Reference() types.ManagedObjectReference { return b.Self }

// stamp gives every disk of a change-tracked VM a fresh changeId recording
// its content now, before the simulator copies the config into the snapshot.
func (b *Backup) stamp(ctx *simulator.Context, vm *simulator.VirtualMachine) types.BaseMethodFault {
	var fault types.BaseMethodFault
	ctx.WithLock(vm, func() {
		if vm.Config == nil || vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
			return
		}
		for _, d := range vm.Config.Hardware.Device {
			disk, ok := d.(*types.VirtualDisk)
			if !ok {
				continue
			}
			backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			file, err := flatFile(ctx, backing.FileName)
			if err != nil {
				fault = &types.FileFault{File: backing.FileName}
				return
			}
			rec, err := fingerprint(file, diskCapacity(disk))
			if err != nil {
				fault = &types.FileFault{File: backing.FileName}
				return
			}
			b.mu.Lock()
			b.seq++
			id := fmt.Sprintf("52 vcsimext %s/%d", vm.Self.Value, b.seq)
			b.records[id] = rec
			b.mu.Unlock()
			backing.ChangeId = id
		}
	})
	return fault
}

func diskCapacity(d *types.VirtualDisk) int64 {
	if d.CapacityInBytes > 0 {
		return d.CapacityInBytes
	}
	return d.CapacityInKB * 1024
}

// flatFile is the local file behind a disk descriptor's flat extent.
func flatFile(ctx *simulator.Context, dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("datastore path %q malformed", dsPath)
	}
	return localFile(ctx, p.Datastore, strings.TrimSuffix(p.Path, ".vmdk")+"-flat.vmdk")
}

// localFile is the local file behind file (a path inside datastore ds).
func localFile(ctx *simulator.Context, ds, file string) (string, error) {
	for _, e := range ctx.Map.All("Datastore") {
		d, ok := e.(*simulator.Datastore)
		if ok && d.Name == ds {
			return filepath.Join(d.Summary.Url, filepath.FromSlash(file)), nil
		}
	}
	return "", fmt.Errorf("datastore %q not found", ds)
}

// fingerprint hashes file in CBT blocks; bytes past its end read as zeros.
func fingerprint(file string, size int64) (*cbtRecord, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := (size + CBTBlockSize - 1) / CBTBlockSize
	rec := &cbtRecord{file: file, size: size, blocks: make([][sha256.Size]byte, n), zero: make([]bool, n)}
	buf := make([]byte, CBTBlockSize)
	r := zeroPadded{f: f, size: size}
	for i := range n {
		m, err := r.ReadAt(buf, i*CBTBlockSize)
		if err != nil && err != io.EOF {
			return nil, err
		}
		blk := buf[:m]
		rec.blocks[i] = sha256.Sum256(blk)
		rec.zero[i] = allZero(blk)
	}
	return rec, nil
}

var zeroBlock = make([]byte, CBTBlockSize)

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// zeroPadded reads a file as if it were size bytes long.
type zeroPadded struct {
	f    *os.File
	size int64
}

func (z zeroPadded) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	if rest := z.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := z.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		n, err = len(p), nil
	}
	if err == nil && off+int64(n) == z.size {
		err = io.EOF
	}
	return n, err
}

// QueryChangedDiskAreas answers from the fingerprints recorded at the
// snapshots (see the stand-in's description above).
func (b *Backup) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := new(methods.QueryChangedDiskAreasBody)
	fail := func(msg string, f types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault(msg, f)
		return body
	}
	if req.Snapshot == nil {
		return fail("the stand-in needs a snapshot", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	snap, ok := ctx.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok || snap.Vm != req.This {
		return fail("snapshot not of this VM", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	var cur string
	var devices []types.BaseVirtualDevice
	ctx.WithLock(snap, func() { devices = snap.Config.Hardware.Device })
	for _, d := range devices {
		if disk, ok := d.(*types.VirtualDisk); ok && disk.Key == req.DeviceKey {
			if backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				cur = backing.ChangeId
			}
		}
	}
	b.mu.Lock()
	now, old := b.records[cur], b.records[req.ChangeId]
	b.mu.Unlock()
	if cur == "" || now == nil {
		return fail("changed block tracking is not enabled for this disk", &types.FileFault{})
	}
	if req.ChangeId != "*" && (old == nil || old.file != now.file || old.size != now.size) {
		return fail(fmt.Sprintf("changeId %q is not valid for this disk", req.ChangeId),
			&types.InvalidArgument{InvalidProperty: "changeId"})
	}
	if req.StartOffset < 0 || req.StartOffset > now.size {
		return fail("startOffset beyond the disk", &types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: now.size - req.StartOffset}
	for i := req.StartOffset / CBTBlockSize; i < int64(len(now.blocks)); i++ {
		changed := !now.zero[i]
		if req.ChangeId != "*" {
			changed = now.blocks[i] != old.blocks[i]
		}
		if !changed {
			continue
		}
		start := max(i*CBTBlockSize, req.StartOffset)
		end := min((i+1)*CBTBlockSize, now.size)
		if n := len(info.ChangedArea); n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == start {
			info.ChangedArea[n-1].Length += end - start
			continue
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: start, Length: end - start})
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

// ExportSnapshot lets the simulator make the snapshot's export lease, then
// points the lease's disk URLs at the stand-in's handler.
func (b *Backup) ExportSnapshot(ctx *simulator.Context, req *types.ExportSnapshot) soap.HasFault {
	s, ok := ctx.Map.Get(req.This).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return &methods.ExportSnapshotBody{Fault_: simulator.Fault("no such snapshot", &types.ManagedObjectNotFound{Obj: req.This})}
	}
	var res soap.HasFault
	ctx.WithLock(s, func() { res = s.ExportSnapshot(ctx, req) })
	body, ok := res.(*methods.ExportSnapshotBody)
	if !ok || body.Fault_ != nil || body.Res == nil {
		return res
	}
	ref := body.Res.Returnval
	lease, ok := ctx.Session.Get(ref).(*simulator.HttpNfcLease)
	if !ok || lease.Info == nil {
		return res
	}
	disks := map[string]leaseDisk{}
	for _, d := range s.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		name := backing.GetVirtualDeviceFileBackingInfo().FileName
		var p object.DatastorePath
		p.FromString(name)
		file, err := flatFile(ctx, name)
		if err != nil {
			continue
		}
		disks[path.Base(p.Path)] = leaseDisk{file: file, size: diskCapacity(disk)}
	}
	ctx.WithLock(lease, func() {
		info := *lease.Info
		info.DeviceUrl = append([]types.HttpNfcLeaseDeviceUrl(nil), info.DeviceUrl...)
		for i, du := range info.DeviceUrl {
			d, ok := disks[du.TargetId]
			at := strings.Index(du.Url, "/nfc/")
			if !ok || at < 0 {
				continue
			}
			info.DeviceUrl[i].Url = du.Url[:at] + nfcPath + ref.Value + "/" + du.TargetId
			info.DeviceUrl[i].FileSize = d.size
		}
		ctx.Update(lease, []types.PropertyChange{{Name: "info", Val: &info}})
	})
	b.mu.Lock()
	b.leases[ref.Value] = disks
	b.mu.Unlock()
	return res
}

// serveDisk streams a leased disk as a streamOptimized VMDK, ignoring
// Range as vCenter does.
func (b *Backup) serveDisk(w http.ResponseWriter, r *http.Request) {
	lease, name, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, nfcPath), "/")
	b.mu.Lock()
	d, found := b.leases[lease][name]
	b.mu.Unlock()
	if !ok || !found {
		http.Error(w, "no such lease or disk (the lease is over?)", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "read only", http.StatusMethodNotAllowed)
		return
	}
	defer b.read(r)()
	if b.failReads.Add(-1) >= 0 {
		http.Error(w, "injected read fault (vcsimext.Backup.FailReads)", http.StatusServiceUnavailable)
		return
	}
	b.failReads.Store(0)
	f, err := os.Open(d.file)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	b.requests.Add(1)
	w.Header().Set("Content-Type", "application/x-vnd.vmware-streamVmdk")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	var out io.Writer = &countingWriter{ResponseWriter: w, n: &b.served}
	if b.corrupt.Add(-1) >= 0 {
		out = &corruptingWriter{w: out, at: corruptAt}
	} else {
		b.corrupt.Store(0)
	}
	// An error here is the client gone or the file unreadable: the stream
	// ends short, which the reader sees as a truncated stream.
	_ = WriteStreamOptimized(out, zeroPadded{f: f, size: d.size}, d.size, name)
}

// CorruptStreams makes the next n disk streams of the export lease carry a
// malformed marker (a grain marker whose compressed size is beyond any
// grain), as a damaged transfer would.
func (b *Backup) CorruptStreams(n int) { b.corrupt.Store(int64(n)) }

// corruptAt is the stream offset CorruptStreams damages: the size field of
// the first grain marker, right after a header and a one-sector descriptor.
const corruptAt = 2*streamSector + 8

type corruptingWriter struct {
	w   io.Writer
	at  int64
	off int64
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if c.off <= c.at && c.at < c.off+int64(len(p)) {
		p = bytes.Clone(p)
		p[c.at-c.off] = 0xff
		if i := c.at - c.off + 3; i < int64(len(p)) {
			p[i] = 0x7f
		}
	}
	c.off += int64(len(p))
	return c.w.Write(p)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}
