package simlab

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// TestNASMountSharedByHosts: the hosts that mount one export share its NAS
// folder (vcsimext's stand-in for their NFS clients): the first mount copies
// the export in, a second host's mount leaves the folder as it is (what the
// simulator's VMs changed stays), and a mount after every host unmounted
// copies the export anew.
func TestNASMountSharedByHosts(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	info, err := l.Service.Publish(ctx, storeapi.PublishRequest{VMs: []storeapi.PublishVM{{VM: "db01"}}})
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(l.Service.NFSAddr().String())
	m := orchestrator.NFSMount{Server: host, Path: storeapi.SessionsExport + "/" + info.ID, Name: info.ID}
	vmx := filepath.Join(l.NASRoot, info.ID, "db01", "db01.vmx")
	hosts := []string{"DC0_C0_H0", "DC0_C0_H1"}

	if err := l.Driver.MountNFS(ctx, hosts[0], m); err != nil {
		t.Fatal(err)
	}
	exported, err := os.ReadFile(vmx)
	if err != nil || !bytes.Contains(exported, []byte("displayName")) {
		t.Fatalf("first mount: %s: %v\n%s", vmx, err, exported)
	}
	changed := append(bytes.Clone(exported), "rekindle.test = \"changed by the simulator\"\n"...)
	if err := os.WriteFile(vmx, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Driver.MountNFS(ctx, hosts[1], m); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(vmx); !bytes.Equal(got, changed) {
		t.Errorf("a second host's mount copied the export over the shared folder:\n%s", got)
	}

	for _, h := range hosts {
		if err := l.Driver.UnmountNFS(ctx, h, info.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Driver.MountNFS(ctx, hosts[1], m); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(vmx); !bytes.Equal(got, exported) {
		t.Errorf("a mount after every host unmounted did not copy the export anew:\n%s", got)
	}
}
