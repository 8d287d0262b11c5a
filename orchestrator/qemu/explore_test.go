package qemu

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/testvm"
)

func TestExploreOutage(t *testing.T) {
	outage, err := time.ParseDuration(os.Getenv("OUTAGE"))
	if err != nil {
		t.Skip()
	}
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeWrite, seconds: 15 + int(outage.Seconds())})
	ctx := context.Background()
	id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	log := e.waitSerial("vm", testvm.WroteLine, bootWithin, func(l string) bool { return consoleCount(l, testvm.WroteLine) >= 2 })
	before := consoleCount(log, testvm.WroteLine)
	e.stopService()
	down := time.Now()
	status := func() string {
		mon, err := dialQMP(ctx, e.drv.vmFile("vm", "qmp.sock"))
		if err != nil {
			return err.Error()
		}
		defer mon.close()
		var st status
		qctx, c := context.WithTimeout(ctx, 5*time.Second)
		defer c()
		if err := mon.run(qctx, "query-status", nil, &st); err != nil {
			return err.Error()
		}
		var blocks []blockInfo
		mon.run(qctx, "query-block", nil, &blocks)
		io := ""
		if len(blocks) > 0 {
			io = blocks[0].IOStatus
		}
		return st.Status + " io=" + io
	}
	pid := e.drv.pid("vm")
	cpu := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		f := strings.Fields(string(b))
		out := ""
		if len(f) > 15 {
			out = "utime=" + f[13] + " stime=" + f[14]
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, tk := range tasks {
			sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, tk.Name()))
			cm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, tk.Name()))
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tk.Name()))
			sf := strings.Fields(string(st))
			u := ""
			if len(sf) > 15 {
				u = sf[13] + "/" + sf[14]
			}
			out += fmt.Sprintf("\n   %s %s cpu=%s sys=%.30s", tk.Name(), strings.TrimSpace(string(cm)), u, strings.TrimSpace(string(sc)))
		}
		return out
	}
	if os.Getenv("QMPPROBE") != "" {
		t.Logf("status at 0: %s", status())
	}
	for time.Since(down) < outage {
		t.Logf("%5.1fs down: wrote %d, %s", time.Since(down).Seconds(), consoleCount(e.serial("vm"), testvm.WroteLine), cpu())
		time.Sleep(outage / 4)
	}
	if os.Getenv("POWEROFF") != "" {
		st := time.Now()
		err := e.drv.PowerOff(ctx, "vm")
		t.Logf("PowerOff with the server down: %v after %s", err, time.Since(st))
		e.startService()
		return
	}
	if os.Getenv("NEWPORT") != "" {
		e.nfsAddr = "127.0.0.1:0"
	}
	e.startService()
	t.Logf("server was down %s; wrote %d before", time.Since(down), before)
	for i := 0; i < 10; i++ {
		t.Logf("%5.1fs after: wrote %d, status %s", time.Since(down).Seconds()-outage.Seconds(), consoleCount(e.serial("vm"), testvm.WroteLine), status())
		time.Sleep(2 * time.Second)
	}
	e.waitOff("vm", 3*time.Minute)
	t.Logf("console:\n%s\nqemu.log: %s", e.serial("vm"), e.drv.logTail("vm"))
	fs, _ := e.svc.Overlay(id)
	f, _ := fs.Open("vm/vm-flat.vmdk")
	n, err := testvm.ReadCounters(f)
	t.Logf("counters %d %v done %d", n, err, consoleCount(e.serial("vm"), testvm.DoneLine))
}
