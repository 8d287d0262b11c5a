package simlab

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

// childEnv carries what the orchestrator child process needs to reach the
// parent's lab: the catalog file, vCenter, the NFS server and its API.
type childEnv struct {
	Catalog, VC, CAFile, NASRoot, API string
	Request                           orchestrator.Request
}

// TestMain runs the orchestrator as a child process when asked to, so a
// test can kill it with SIGKILL.
func TestMain(m *testing.M) {
	if spec := os.Getenv("REKINDLE_ORCHESTRATOR_CHILD"); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

func runChild(spec string) int {
	var env childEnv
	if err := json.Unmarshal([]byte(spec), &env); err != nil {
		return 3
	}
	ctx := context.Background()
	cat, err := catalog.Open(ctx, env.Catalog)
	if err != nil {
		return 3
	}
	d, err := vsphere.Connect(ctx, vsphere.Config{URL: env.VC, Username: "rekindle", Password: "demo-only", CAFile: env.CAFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		return 3
	}
	o := &orchestrator.Orchestrator{Catalog: cat, Driver: &SimHosts{Driver: d, NASRoot: env.NASRoot},
		Exporter: datastore.NewClient(env.API)}
	if _, err := o.Start(ctx, env.Request); err != nil {
		return 1
	}
	return 0
}

// TestOrchestratorKilledMidRestore kills the orchestrator process with
// SIGKILL while it boots the vApp, then resumes the session from another
// process: the restore finishes with no duplicate datastore, VM or vApp, in
// startup order.
func TestOrchestratorKilledMidRestore(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	api := httptest.NewServer(l.Service.Handler("test"))
	defer api.Close()
	before := l.inventory(t)
	u := *l.Server.URL
	u.User = nil
	spec, _ := json.Marshal(childEnv{Catalog: l.Catalog.Path(), VC: u.String(), CAFile: filepath.Join(l.Dir, "vcsim-ca.pem"),
		NASRoot: l.NASRoot, API: api.URL, Request: l.Request(orchestrator.KindVApp)})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "REKINDLE_ORCHESTRATOR_CHILD="+string(spec))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// db01 waits a second after it is up before group 2 starts: kill then.
	var id string
	deadline := time.Now().Add(60 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		list, _ := l.Catalog.Sessions(ctx)
		for _, s := range list {
			full, err := l.Catalog.Session(ctx, s.ID)
			if err != nil {
				continue
			}
			for _, st := range full.Steps {
				if st.Name == orchestrator.StepBoot && st.State == catalog.StepRunning {
					id = s.ID
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if id == "" {
		cmd.Process.Kill()
		t.Fatal("the orchestrator never reached the boot step")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("orchestrator was not killed mid-restore: %v", err)
	}
	s, _ := l.Catalog.Session(ctx, id)
	if s.State != catalog.SessionRunning {
		t.Fatalf("killed session is %s", s.State)
	}
	if err := l.Orchestrator.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	inv := l.inventory(t)
	if len(inv.VMs) != len(before.VMs)+3 || len(inv.VApps) != 1 || len(inv.Datastores) != len(before.Datastores)+1 {
		t.Fatalf("duplicates or gaps after resume: %+v", inv)
	}
	if got := l.powerOnOrder(t, []string{"db01", "app01", "web01"}); !slices.Equal(got, []string{"db01", "app01", "web01"}) {
		t.Fatalf("power-on order: %v", got)
	}
	s, _ = l.Catalog.Session(ctx, id)
	if s.State != catalog.SessionRunning {
		t.Fatalf("resumed session is %s", s.State)
	}
	for _, st := range s.Steps {
		if st.State != catalog.StepDone {
			t.Fatalf("step %s is %s after resume", st.Name, st.State)
		}
	}
}
