package simlab

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// VCenter is a simulated vCenter (a VPX model with one VM per host and
// cluster, extended by vcsimext) served over HTTPS with the user rekindle,
// password demo-only.
type VCenter struct {
	Model   *simulator.Model
	Server  *simulator.Server
	URL     url.URL // the SDK URL, without credentials
	CAFile  string  // the simulator's certificate, to trust as a CA
	NASRoot string  // the folders behind its NAS datastores

	mu     sync.Mutex
	onCall func(*simulator.Context, *simulator.Method)
}

// StartVCenter starts a simulated vCenter whose NAS mounts read the NFS
// server at nfs (rekindle's) through a real NFS client. Its files live in
// dir. Close stops it.
func StartVCenter(dir, nfs string) (*VCenter, error) {
	vc := &VCenter{Model: simulator.VPX(), NASRoot: filepath.Join(dir, "nas"), CAFile: filepath.Join(dir, "vcsim-ca.pem")}
	vc.Model.Machine = 1
	if err := vc.Model.Create(); err != nil {
		return nil, fmt.Errorf("vCenter simulator: %w", err)
	}
	if err := os.MkdirAll(vc.NASRoot, 0o755); err != nil {
		vc.Model.Remove()
		return nil, err
	}
	vcsimext.Extend(vc.Model.Map(), vcsimext.Options{NASRoot: vc.NASRoot, NFS: nfs})
	next := vc.Model.Map().Handler
	vc.Model.Map().Handler = func(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		vc.mu.Lock()
		f := vc.onCall
		vc.mu.Unlock()
		if f != nil {
			f(ctx, m)
		}
		return next(ctx, m)
	}
	vc.Model.Service.TLS = new(tls.Config)
	vc.Model.Service.Listen = &url.URL{User: url.UserPassword("rekindle", "demo-only")}
	vc.Server = vc.Model.Service.NewServer()
	vc.URL = *vc.Server.URL
	vc.URL.User = nil
	// Trust the simulator's certificate as a CA: verified on the first
	// handshake (a thumbprint makes govmomi try, fail, then pin).
	if err := os.WriteFile(vc.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vc.Server.Certificate().Raw}), 0o644); err != nil {
		vc.Close()
		return nil, err
	}
	return vc, nil
}

// OnCall makes f run as each call arrives at the simulator, before it is
// dispatched (nil: nothing runs); when f returns, the call goes on. It is a
// test's hold on the exact moment of one call: a test kills its client
// there, so that vCenter does what the client asked and the client never
// learns it (TestSiteRecoverCLI's kills). f runs on the simulator's request
// goroutines, at once for calls made at once; ctx.Session (nil before a
// login) tells one client's calls from another's.
func (vc *VCenter) OnCall(f func(ctx *simulator.Context, m *simulator.Method)) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	vc.onCall = f
}

// Close stops the simulator.
func (vc *VCenter) Close() {
	vc.Server.Close()
	vc.Model.Remove()
}

// Snapshot lists a vCenter's inventory by kind (VMs, vApps, pools, folders,
// networks, distributed switches and port groups, datastores, and each
// host's port groups with their VLAN and vSwitches), names sorted: what a
// recovery's stop must leave as it found it.
func Snapshot(ctx context.Context, c *vim25.Client) (map[string][]string, error) {
	out := map[string][]string{}
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, nil, true)
	if err != nil {
		return nil, err
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	for _, kind := range []string{"VirtualMachine", "VirtualApp", "ResourcePool", "Folder", "Network", "DistributedVirtualPortgroup", "DistributedVirtualSwitch", "Datastore"} {
		var objs []types.ObjectContent
		if err := v.Retrieve(ctx, []string{kind}, []string{"name"}, &objs); err != nil {
			return nil, err
		}
		for _, o := range objs {
			for _, p := range o.PropSet {
				if p.Name == "name" {
					out[kind] = append(out[kind], fmt.Sprint(p.Val))
				}
			}
		}
		sort.Strings(out[kind])
	}
	var hosts []mo.HostSystem
	if err := v.Retrieve(ctx, []string{"HostSystem"}, []string{"name", "config.network.portgroup", "configManager.networkSystem"}, &hosts); err != nil {
		return nil, err
	}
	for _, h := range hosts {
		for _, pg := range h.Config.Network.Portgroup {
			out["portgroup"] = append(out["portgroup"], fmt.Sprintf("%s:%s/%d", h.Name, pg.Spec.Name, pg.Spec.VlanId))
		}
		// vSwitches as the host's network system has them (the simulator
		// does not copy a new one into the host's config).
		var ns mo.HostNetworkSystem
		if h.ConfigManager.NetworkSystem != nil {
			if err := property.DefaultCollector(c).RetrieveOne(ctx, *h.ConfigManager.NetworkSystem, []string{"networkInfo.vswitch"}, &ns); err != nil {
				return nil, err
			}
		}
		if ns.NetworkInfo != nil {
			for _, s := range ns.NetworkInfo.Vswitch {
				out["vswitch"] = append(out["vswitch"], h.Name+":"+s.Name)
			}
		}
	}
	sort.Strings(out["portgroup"])
	sort.Strings(out["vswitch"])
	return out, nil
}

// Added lists the names of kind that after has and before had not (a name
// made twice is listed twice).
func Added(before, after map[string][]string, kind string) []string {
	rest, out := slices.Clone(before[kind]), []string(nil)
	for _, n := range after[kind] {
		if i := slices.Index(rest, n); i >= 0 {
			rest = slices.Delete(rest, i, i+1)
		} else {
			out = append(out, n)
		}
	}
	return out
}

// SnapshotDiff says how two snapshots differ, kind by kind ("" when equal).
func SnapshotDiff(got, want map[string][]string) string {
	var d string
	kinds := map[string]bool{}
	for k := range got {
		kinds[k] = true
	}
	for k := range want {
		kinds[k] = true
	}
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Equal(got[k], want[k]) {
			d += fmt.Sprintf("%s: %v, want %v\n", k, got[k], want[k])
		}
	}
	return d
}
