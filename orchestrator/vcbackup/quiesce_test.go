package vcbackup_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestQuiesce: a snapshot is quiesced only when the user asks and the
// guest's VMware Tools run (as vCenter received the request: quiesce set,
// memory never); asked for a VM without tools, the snapshot is not
// quiesced and the result and the point say so.
func TestQuiesce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tools, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "tools01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	must(t, e.lab.StartTools(ctx, tools))
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "bare01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	const note = "not quiesced: VMware Tools are not running in the guest"
	for _, c := range []struct {
		vm          string
		ask, want   bool
		wantNote    bool
		description string
	}{
		{"tools01", true, true, false, "asked, tools running"},
		{"bare01", true, false, true, "asked, no tools"},
		{"tools01", false, false, false, "not asked, tools running"},
		{"bare01", false, false, false, "not asked, no tools"},
	} {
		t.Run(c.description, func(t *testing.T) {
			cfg := e.cfg
			cfg.Quiesce = c.ask
			before := len(e.lab.Backup.SnapshotRequests())
			rs, err := vcbackup.BackupVMs(ctx, cfg, []string{c.vm})
			must(t, err)
			res := rs[0]
			must(t, res.Err)
			reqs := e.lab.Backup.SnapshotRequests()[before:]
			if len(reqs) != 1 || !strings.HasPrefix(reqs[0].Name, vcbackup.SnapshotPrefix) {
				t.Fatalf("vCenter received snapshot requests %+v, want one named %s...", reqs, vcbackup.SnapshotPrefix)
			}
			if reqs[0].Quiesce != c.want || reqs[0].Memory {
				t.Fatalf("vCenter received quiesce=%v memory=%v, want quiesce=%v and never memory", reqs[0].Quiesce, reqs[0].Memory, c.want)
			}
			if res.Point.Source.Quiesced != c.want {
				t.Fatalf("point %s records quiesced=%v, want %v", res.Point.ID, res.Point.Source.Quiesced, c.want)
			}
			noted := strings.Contains(strings.Join(res.Notes, "; "), note)
			inPoint := strings.Contains(res.Point.Source.Note, note)
			if noted != c.wantNote || inPoint != c.wantNote {
				t.Fatalf("note %q in the result %v (notes %q), in the point %v (%q), want %v", note, noted, res.Notes, inPoint, res.Point.Source.Note, c.wantNote)
			}
			// The point as stored says the same.
			p, err := e.r.Point(res.Point.ID)
			must(t, err)
			if p.Source.Quiesced != c.want || strings.Contains(p.Source.Note, note) != c.wantNote {
				t.Fatalf("stored point %s: quiesced %v note %q", p.ID, p.Source.Quiesced, p.Source.Note)
			}
		})
	}
}
