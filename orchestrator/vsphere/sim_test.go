package vsphere

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

const (
	simUser     = "administrator@vsphere.local"
	simPassword = "s3cret-Pa55"
	cluster     = "/DC0/host/DC0_C0"
)

// sim is a simulated vCenter (govmomi's VPX model: datacenter DC0, cluster
// DC0_C0 with hosts DC0_C0_H0..H2, standalone host DC0_H0, datastore
// LocalDS_0, networks "VM Network" and distributed port group DC0_DVPG0),
// extended by vcsimext, with NAS datastores backed by nasRoot.
type sim struct {
	model   *simulator.Model
	server  *simulator.Server
	nasRoot string
}

func newSim(t *testing.T) *sim {
	t.Helper()
	model := simulator.VPX()
	model.Machine = 1
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Remove)

	s := &sim{model: model, nasRoot: t.TempDir()}
	vcsimext.Extend(model.Map(), vcsimext.Options{NASRoot: s.nasRoot})

	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{User: url.UserPassword(simUser, simPassword)}
	s.server = model.Service.NewServer()
	t.Cleanup(s.server.Close)
	return s
}

// config is a Config that pins the simulator's certificate.
func (s *sim) config() Config {
	u := *s.server.URL
	u.User = nil
	return Config{
		URL:        u.String(),
		Username:   simUser,
		Password:   simPassword,
		Thumbprint: soap.ThumbprintSHA1(s.server.Certificate()),
	}
}

func (s *sim) connect(t *testing.T) *Driver {
	t.Helper()
	d, err := Connect(context.Background(), s.config(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// writeVMFolder writes what a restore point view shows for a VM: the .vmx,
// the .nvram, vmware.log (the simulator's RegisterVM wants all three) and a
// monolithicFlat disk (descriptor and extent).
func writeVMFolder(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const sectors = 2048 // 1 MiB
	files := map[string]string{
		name + ".vmx": fmt.Sprintf(`.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "%[1]s"
guestOS = "otherlinux-64"
numvcpus = "2"
memSize = "1024"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "%[1]s.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "DC0_DVPG0"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:3f:00:01"
`, name),
		name + ".nvram": "nvram",
		"vmware.log":    "",
		name + ".vmdk": fmt.Sprintf(`# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW %d FLAT "%s-flat.vmdk" 0

# The Disk Data Base
ddb.adapterType = "lsilogic"
ddb.virtualHWVersion = "19"
`, sectors, name),
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(mustCreate(t, filepath.Join(dir, name+"-flat.vmdk")), sectors*512); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, name string) string {
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	return name
}

// playGuest sets guest facts the simulator does not simulate, as VMware
// Tools would report them.
func playGuest(t *testing.T, ctx context.Context, d *Driver, vm orchestrator.VMRef, facts map[string]string) {
	t.Helper()
	var spec types.VirtualMachineConfigSpec
	for k, v := range facts {
		spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: "SET." + k, Value: v})
	}
	task, err := object.NewVirtualMachine(d.Client(), vmRef(vm)).Reconfigure(ctx, spec)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func mustNotFound(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("%s: want ErrNotFound, got %v", what, err)
	}
}
