package qemu

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/nfsd/nfstest"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/testvm"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// The tests boot the test VM (testdata/testvm) under QEMU from rekindle's
// NFS export. QEMU's nfs:// driver always asks the portmapper on port 111,
// so they bind 127.0.0.1:111 and must run in a private network namespace:
//
//	unshare -n sh -c 'ip link set lo up && go test ./orchestrator/qemu/'
//
// (make test does this through scripts/netns-run.)

// testVM is a VM to import: the test VM image in a given mode.
type testVM struct {
	name    string
	mode    string // testvm.Mode*
	seconds int    // for ModeWrite
}

type env struct {
	tb      testing.TB
	dir     string
	repo    *repo.Repo
	cat     *catalog.Catalog
	state   string
	svc     *datastore.Service
	nfsAddr string // kept across restarts: QEMU reconnects to the same port
	cancel  context.CancelFunc
	done    chan error
	drv     *Driver
	orch    *orchestrator.Orchestrator
	images  map[string]string // vm -> the source disk image, as imported
	points  map[string]*repo.RestorePoint
}

// logger writes slog records to the test log when -v is given.
func logger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// newEnv imports vms into a new repository, serves it over NFS with the
// portmapper on 127.0.0.1:111, and wires an orchestrator to a qemu Driver.
func newEnv(tb testing.TB, vms ...testVM) *env {
	tb.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("%s not found: run `make deps` (qemu-system-x86, qemu-utils, qemu-block-extra)", tool)
		}
	}
	img := filepath.Join(testvm.CacheDir(), "disk.img")
	if _, err := os.Stat(img); err != nil {
		tb.Fatalf("the test VM image %s is missing: run `make testvm` (it needs the network) before the tests", img)
	}
	// Other packages' tests bind port 111 in the same namespace.
	nfstest.LockPortmap(tb, 10*time.Minute)
	ctx := context.Background()
	dir := tb.TempDir()
	e := &env{tb: tb, dir: dir, state: filepath.Join(dir, "state"), images: map[string]string{}, points: map[string]*repo.RestorePoint{}}
	var err error
	if e.repo, err = repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{}); err != nil {
		tb.Fatal(err)
	}
	for i, v := range vms {
		src := testvm.Copy(tb, filepath.Join(dir, v.name+".img"))
		if err := testvm.SetMode(src, v.mode, v.seconds); err != nil {
			tb.Fatal(err)
		}
		folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: v.name, Seed: int64(i + 1), NumCPUs: 1, MemoryMB: 256,
			Disks: []vmgen.DiskSpec{{Source: src, Format: vmgen.FormatFlat}}})
		if err != nil {
			tb.Fatal(err)
		}
		p, err := ingest.Import(ctx, e.repo, folder, ingest.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		e.images[v.name], e.points[v.name] = src, p
	}
	if e.cat, err = catalog.Open(ctx, filepath.Join(dir, "catalog.db")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.cat.Close() })
	if _, err := e.cat.Rebuild(ctx, e.repo); err != nil {
		tb.Fatal(err)
	}
	e.nfsAddr = "127.0.0.1:0"
	e.startService()
	tb.Cleanup(e.stopService)
	// The test guest ignores ACPI power-off: skip that step of the stop
	// (ready_test.go tests it).
	if e.drv, err = New(Config{WorkDir: filepath.Join(dir, "qemu"), Logger: logger(tb), Stop: StopTimeouts{Powerdown: -1}}); err != nil {
		tb.Fatal(err)
	}
	// Runs before the service stops: no QEMU outlives the test.
	tb.Cleanup(e.powerOffAll)
	e.orch = &orchestrator.Orchestrator{Catalog: e.cat, Driver: e.drv, Exporter: e.svc, Logger: logger(tb)}
	return e
}

// saveApp records an app in the repository and the catalog.
func (e *env) saveApp(a *repo.App) {
	e.tb.Helper()
	if err := e.repo.SaveApp(a); err != nil {
		e.tb.Fatal(err)
	}
	if err := e.cat.IndexApp(context.Background(), a); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *env) startService() {
	e.tb.Helper()
	svc, err := datastore.New(context.Background(), datastore.Config{Repo: e.repo, Catalog: e.cat, StateDir: e.state,
		NFSListen: e.nfsAddr, PortmapAddr: "127.0.0.1:111", Logger: logger(e.tb)})
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			e.tb.Fatalf("port 111 (or the NFS port) is taken: run this test in a private network namespace: "+
				"unshare -n sh -c 'ip link set lo up && go test ./orchestrator/qemu/' (make test does): %v", err)
		}
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.svc, e.cancel, e.done = svc, cancel, make(chan error, 1)
	e.nfsAddr = svc.NFSAddr().String()
	go func() { e.done <- svc.Serve(ctx) }()
	if e.orch != nil {
		e.orch.Exporter = svc
	}
}

func (e *env) stopService() {
	if e.svc == nil {
		return
	}
	e.cancel()
	if err := e.svc.Close(); err != nil {
		e.tb.Errorf("close the datastore service: %v", err)
	}
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		e.tb.Error("the datastore service did not stop")
	}
	e.svc = nil
}

// powerOffAll stops every QEMU this test's driver started.
func (e *env) powerOffAll() {
	names, _ := e.drv.vmNames()
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := e.drv.PowerOff(ctx, orchestrator.VMRef(n)); err != nil {
			e.tb.Errorf("cleanup: %v", err)
		}
		cancel()
	}
}

// vm returns the driver's record of a VM.
func (e *env) vm(name string) *vmState {
	e.tb.Helper()
	v, err := e.drv.loadVM(name)
	if err != nil {
		e.tb.Fatal(err)
	}
	return v
}

func (e *env) serial(name string) string {
	b, _ := os.ReadFile(e.drv.vmFile(name, "serial.log"))
	return string(b)
}

// waitSerial polls the VM's console log until cond holds, failing the test
// after within.
func (e *env) waitSerial(name, what string, within time.Duration, cond func(log string) bool) string {
	e.tb.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		log := e.serial(name)
		if cond(log) {
			return log
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("vm %s: no %s on the serial console within %s; console:\n%s\nqemu.log: %s", name, what, within, log, e.drv.logTail(name))
		}
		<-tick.C
	}
}

// waitOff polls until the VM's QEMU has exited.
func (e *env) waitOff(name string, within time.Duration) {
	e.tb.Helper()
	if !waitFor(context.Background(), within, func() bool { return !e.drv.running(name) }) {
		e.tb.Fatalf("vm %s still runs after %s; console:\n%s", name, within, e.serial(name))
	}
}

// consoleCount returns the number of the last console line starting with
// prefix ("REKINDLE-WROTE 42" gives 42), -1 when there is none.
func consoleCount(log, prefix string) int {
	n := -1
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == prefix {
			if v, err := strconv.Atoi(f[1]); err == nil {
				n = v
			}
		}
	}
	return n
}

func sha256File(tb testing.TB, path string) string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// run runs a command, failing the test when it fails or hangs.
func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := tryRun(tb, name, args...)
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryRun(tb testing.TB, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		tb.Fatalf("%s %s: hung", name, strings.Join(args, " "))
	}
	return string(out), err
}
