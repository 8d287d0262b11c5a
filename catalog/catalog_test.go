package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// memSource is a repository held in memory.
type memSource struct {
	points []*repo.RestorePoint
	apps   []*repo.App
}

func (s memSource) Points() ([]*repo.RestorePoint, error) { return s.points, nil }
func (s memSource) Apps() ([]*repo.App, error)            { return s.apps, nil }

const gib = 1 << 30

// mkPoint builds a realistic restore point of vm with one or more disks.
func mkPoint(vm, app string, created time.Time, parent string, disks int) *repo.RestorePoint {
	seed := repo.Sum([]byte(fmt.Sprint(vm, created, disks)))
	id := created.UTC().Format("20060102T150405Z") + "-" + seed.String()[:6]
	vmx := []byte(fmt.Sprintf(".encoding = \"UTF-8\"\ndisplayName = \"%s\"\nguestOS = \"ubuntu-64\"\n", vm))
	p := &repo.RestorePoint{
		Format: repo.ManifestFormat,
		ID:     id,
		VM: repo.VMIdentity{
			Name:         vm,
			UUID:         "42" + repo.Sum([]byte("bios" + vm)).String()[:30],
			InstanceUUID: "50" + repo.Sum([]byte("vc" + vm)).String()[:30],
			GuestOS:      "ubuntu-64",
			NumCPU:       2,
			MemoryMB:     4096,
			Firmware:     "efi",
			HWVersion:    19,
		},
		App:     app,
		Created: created.UTC(),
		Parent:  parent,
		Files: []repo.ConfigFile{
			{Name: vm + ".vmx", Size: int64(len(vmx)), Inline: vmx},
			{Name: vm + ".nvram", Size: 270840, Index: repo.Sum([]byte("nvram" + id))},
		},
		NICs: []repo.NIC{
			{Key: "ethernet0", Network: "VM Network", Type: "vmxnet3", MAC: "00:50:56:aa:bb:01", AddressType: "generated"},
			{Key: "ethernet1", Network: "backend", Type: "vmxnet3", MAC: "00:50:56:aa:bb:02", AddressType: "static", IPAddress: "10.0.0.5"},
		},
	}
	var logical int64
	for i := range disks {
		name := vm
		if i > 0 {
			name = fmt.Sprintf("%s_%d", vm, i)
		}
		size := int64(16+8*i) * gib
		logical += size
		p.Disks = append(p.Disks, repo.Disk{
			Name:         name,
			Controller:   fmt.Sprintf("scsi0:%d", i),
			Adapter:      "pvscsi",
			Size:         size,
			Index:        repo.Sum([]byte(fmt.Sprintf("index %s %d", id, i))),
			SourceFormat: "monolithicFlat",
			Thin:         i > 0,
		})
	}
	p.Stats = repo.IngestStats{
		BytesLogical: logical,
		BytesRead:    logical / 3,
		BytesNew:     logical / 10,
		BytesStored:  logical / 25,
		ChunksTotal:  logical / 3 / (4 << 20),
		ChunksNew:    logical / 10 / (4 << 20),
	}
	return p
}

var t0 = time.Date(2026, 11, 21, 2, 0, 0, 0, time.UTC)

// fixture is a small repository: an app of three VMs, a standalone VM, and
// an app whose member was never backed up.
func fixture() memSource {
	var s memSource
	chain := func(vm, app string, disks int, times ...time.Time) {
		parent := ""
		for _, tm := range times {
			p := mkPoint(vm, app, tm, parent, disks)
			s.points = append(s.points, p)
			parent = p.ID
		}
	}
	day := 24 * time.Hour
	chain("web01", "shop", 1, t0, t0.Add(day), t0.Add(2*day))
	chain("web02", "shop", 1, t0.Add(time.Minute), t0.Add(day+time.Minute))
	chain("db01", "shop", 3, t0.Add(2*time.Minute), t0.Add(day+2*time.Minute), t0.Add(2*day+2*time.Minute+123456789))
	// Two points at the same instant: order falls back to id.
	chain("mail 1", "", 2, t0.Add(5*time.Hour))
	s.points = append(s.points, mkPoint("mail 1", "", t0.Add(5*time.Hour), s.points[len(s.points)-1].ID, 1))
	s.apps = []*repo.App{
		{
			Format: repo.ManifestFormat, Name: "shop",
			Members: []repo.AppMember{
				{VM: "db01", Group: 1, StartDelay: 120, WaitForGuest: true, StartAction: "powerOn", StopAction: "guestShutdown", StopDelay: 60},
				{VM: "web01", Group: 2, StartAction: "powerOn", StopAction: "guestShutdown"},
				{VM: "web02", Group: 2, StartAction: "powerOn", StopAction: "powerOff"},
			},
			Networks:  []string{"VM Network", "backend"},
			Resources: repo.Resources{CPUSharesLevel: "high", MemReservationMB: 8192},
			Updated:   t0.Add(3 * day),
		},
		{
			Format:  repo.ManifestFormat,
			Name:    "crm",
			Members: []repo.AppMember{{VM: "crm-app", Group: 1}},
			Updated: t0.Add(time.Hour),
		},
	}
	return s
}

func openTemp(t *testing.T) (*Catalog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "catalog.db")
	c, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func indexAll(t *testing.T, c *Catalog, s memSource) {
	t.Helper()
	ctx := context.Background()
	for _, p := range s.points {
		if err := c.IndexPoint(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range s.apps {
		if err := c.IndexApp(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
}

func countRows(t *testing.T, c *Catalog, table string) int {
	t.Helper()
	var n int
	if err := c.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOpenCreatesAndSetsPragmas(t *testing.T) {
	c, path := openTemp(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("catalog file: %v", err)
	}
	for _, tt := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"synchronous", "2"}, // FULL
		{"busy_timeout", fmt.Sprint(busyTimeoutMS)},
	} {
		// Each connection of the pool must carry the pragmas: hold several.
		conns := make([]*sql.Conn, 3)
		for i := range conns {
			conn, err := c.db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = conn
			var got string
			if err := conn.QueryRowContext(context.Background(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("conn %d: PRAGMA %s = %s, want %s", i, tt.pragma, got, tt.want)
			}
		}
		for _, conn := range conns {
			conn.Close()
		}
	}
}

func TestOpenPathWithOddCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#%", "cat alog.db")
	c, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("catalog not at %q: %v", path, err)
	}
}

func TestMigrationsIdempotentAcrossReopen(t *testing.T) {
	ctx := context.Background()
	c, path := openTemp(t)
	indexAll(t, c, fixture())
	want, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for i := range 3 {
		c2, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if n := countRows(t, c2, "schema_migrations"); n != len(migrations) {
			t.Errorf("reopen %d: %d migrations recorded, want %d", i, n, len(migrations))
		}
		got, err := c2.VMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("reopen %d: data changed", i)
		}
		c2.Close()
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	c, path := openTemp(t)
	if _, err := c.db.Exec(`INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`,
		SchemaVersion()+1, "from the future", time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err := Open(ctx, path)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
	for _, s := range []string{path, "upgrade rekindle", fmt.Sprint(SchemaVersion() + 1)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	c, path := openTemp(t)
	c.Close()
	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(append([]migration(nil), saved...), migration{
		version: SchemaVersion() + 1,
		name:    "broken",
		stmts:   []string{`CREATE TABLE half_done (a TEXT)`, `THIS IS NOT SQL`},
	})
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("Open with a broken migration = %v, want an error naming it", err)
	}
	migrations = saved
	c, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var n int
	if err := c.db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("a failed migration left its table behind")
	}
}

func TestQueries(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	src := fixture()
	indexAll(t, c, src)
	byID := map[string]*repo.RestorePoint{}
	for _, p := range src.points {
		byID[p.ID] = p
	}

	vms, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vms {
		names = append(names, v.Name)
	}
	if want := []string{"db01", "mail 1", "web01", "web02"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("VMs = %v, want %v", names, want)
	}
	db01 := src.points[7] // third db01 point
	wantDB := VMSummary{Name: "db01", App: "shop", UUID: db01.VM.UUID, Points: 3,
		LatestPoint: db01.ID, LatestTime: db01.Created, LogicalBytes: (16 + 24 + 32) * gib}
	if vms[0] != wantDB {
		t.Errorf("VMs[0] = %+v\nwant %+v", vms[0], wantDB)
	}
	if vms[0].LatestTime.Nanosecond() != 123456789 {
		t.Errorf("nanoseconds lost: %v", vms[0].LatestTime)
	}

	// Every point comes back exactly as indexed.
	for id, want := range byID {
		got, err := c.Point(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Point(%s) = %+v\nwant %+v", id, got, want)
		}
	}
	if _, err := c.Point(ctx, "20990101T000000Z-000000"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "20990101T000000Z-000000") {
		t.Errorf("Point(unknown) = %v, want ErrNotFound naming the id", err)
	}

	all, err := c.Points(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(src.points) {
		t.Fatalf("Points(\"\") returned %d, want %d", len(all), len(src.points))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		ordered := a.VM < b.VM || a.VM == b.VM && (a.Created.After(b.Created) || a.Created.Equal(b.Created) && a.ID > b.ID)
		if !ordered {
			t.Errorf("Points out of order at %d: %s/%s before %s/%s", i, a.VM, a.ID, b.VM, b.ID)
		}
	}
	web01, err := c.Points(ctx, "web01")
	if err != nil {
		t.Fatal(err)
	}
	want0 := PointSummary{ID: src.points[2].ID, VM: "web01", App: "shop", Parent: src.points[1].ID,
		Created: src.points[2].Created, Disks: 1, LogicalBytes: 16 * gib,
		NewBytes: src.points[2].Stats.BytesNew, StoredBytes: src.points[2].Stats.BytesStored}
	if len(web01) != 3 || web01[0] != want0 || web01[2].ID != src.points[0].ID {
		t.Errorf("Points(web01) = %+v", web01)
	}
	if none, err := c.Points(ctx, "nobody"); err != nil || len(none) != 0 {
		t.Errorf("Points(nobody) = %v, %v", none, err)
	}

	day := 24 * time.Hour
	latest := []struct {
		name   string
		vm     string
		before time.Time
		want   string // point id; "" for not found
	}{
		{"newest", "web01", time.Time{}, src.points[2].ID},
		{"exactly at a point", "web01", t0.Add(day), src.points[1].ID},
		{"between points", "web01", t0.Add(day + time.Hour), src.points[1].ID},
		{"just before a point", "web01", t0.Add(day - time.Nanosecond), src.points[0].ID},
		{"before all", "web01", t0.Add(-time.Second), ""},
		{"far future", "web01", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), src.points[2].ID},
		{"far past", "web01", time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{"non-UTC zone", "web02", t0.Add(day + time.Minute).In(time.FixedZone("CET", 3600)), src.points[4].ID},
		{"same instant tie", "mail 1", time.Time{}, max(src.points[8].ID, src.points[9].ID)},
		{"unknown vm", "nobody", time.Time{}, ""},
	}
	for _, tt := range latest {
		t.Run("LatestPoint/"+tt.name, func(t *testing.T) {
			p, err := c.LatestPoint(ctx, tt.vm, tt.before)
			if tt.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("got %v, %v; want ErrNotFound", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != tt.want {
				t.Errorf("got %s, want %s", p.ID, tt.want)
			}
		})
	}

	apps, err := c.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantApps := []AppSummary{
		{Name: "crm", Members: 1, Groups: 1, Updated: t0.Add(time.Hour)},
		{Name: "shop", Members: 3, Groups: 2, Updated: t0.Add(3 * day)},
	}
	if !reflect.DeepEqual(apps, wantApps) {
		t.Errorf("Apps = %+v\nwant %+v", apps, wantApps)
	}
	shop, err := c.App(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shop, src.apps[0]) {
		t.Errorf("App(shop) = %+v\nwant %+v", shop, src.apps[0])
	}
	if _, err := c.App(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("App(nope) = %v, want ErrNotFound", err)
	}
}

func TestIndexRejectsInvalid(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	good := func() *repo.RestorePoint { return mkPoint("web01", "", t0, "", 1) }
	tests := []struct {
		name    string
		breakIt func(p *repo.RestorePoint)
	}{
		{"bad id", func(p *repo.RestorePoint) { p.ID = "yesterday" }},
		{"bad vm name", func(p *repo.RestorePoint) { p.VM.Name = "../etc" }},
		{"no created", func(p *repo.RestorePoint) { p.Created = time.Time{} }},
		{"created out of range", func(p *repo.RestorePoint) { p.Created = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"disk without index", func(p *repo.RestorePoint) { p.Disks[0].Index = repo.Digest{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := good()
			tt.breakIt(p)
			err := c.IndexPoint(ctx, p)
			if err == nil {
				t.Fatal("indexed an invalid point")
			}
			if !strings.HasPrefix(err.Error(), "catalog: index restore point "+p.ID+": ") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
	if n := countRows(t, c, "restore_points") + countRows(t, c, "vms"); n != 0 {
		t.Errorf("invalid points left %d rows", n)
	}
	if err := c.IndexApp(ctx, &repo.App{Format: 1, Name: "empty"}); err == nil {
		t.Error("indexed an app without members")
	}
}

func TestReindexDoesNotDuplicate(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	src := fixture()
	tables := append([]string(nil), indexTables...)
	counts := func() map[string]int {
		m := map[string]int{}
		for _, tb := range tables {
			m[tb] = countRows(t, c, tb)
		}
		return m
	}
	indexAll(t, c, src)
	first := counts()
	indexAll(t, c, src)
	if second := counts(); !reflect.DeepEqual(first, second) {
		t.Fatalf("re-indexing changed row counts: %v -> %v", first, second)
	}

	// A re-indexed point replaces its disks and NICs.
	p := *src.points[7]
	p.Disks = p.Disks[:1]
	p.NICs = nil
	if err := c.IndexPoint(ctx, &p); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got["disks"] != first["disks"]-2 || got["nics"] != first["nics"]-2 {
		t.Errorf("after shrinking a point: %v, was %v", got, first)
	}
	// A re-indexed app replaces its members.
	a := *src.apps[0]
	a.Members = a.Members[:1]
	if err := c.IndexApp(ctx, &a); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, c, "app_members"); got != first["app_members"]-2 {
		t.Errorf("app members = %d, want %d", got, first["app_members"]-2)
	}

	// A point re-indexed under another VM name moves; the old VM goes when
	// it has no point left.
	lone := mkPoint("old-name", "", t0, "", 1)
	if err := c.IndexPoint(ctx, lone); err != nil {
		t.Fatal(err)
	}
	moved := *lone
	moved.VM.Name = "new-name"
	if err := c.IndexPoint(ctx, &moved); err != nil {
		t.Fatal(err)
	}
	vms, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.Name == "old-name" {
			t.Error("old-name still listed")
		}
	}
	if got, err := c.LatestPoint(ctx, "new-name", time.Time{}); err != nil || got.ID != lone.ID {
		t.Errorf("LatestPoint(new-name) = %v, %v", got, err)
	}
}

func TestRemovePoint(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	src := fixture()
	indexAll(t, c, src)
	web02 := src.points[3:5]

	if err := c.RemovePoint(ctx, web02[1].ID); err != nil {
		t.Fatal(err)
	}
	vms, _ := c.VMs(ctx)
	if v := vms[3]; v.Name != "web02" || v.Points != 1 || v.LatestPoint != web02[0].ID || !v.LatestTime.Equal(web02[0].Created) {
		t.Errorf("after removing the latest point: %+v", v)
	}
	disks := countRows(t, c, "disks")
	if err := c.RemovePoint(ctx, web02[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, c, "disks"); got != disks-1 {
		t.Errorf("disks = %d, want %d (cascade)", got, disks-1)
	}
	vms, _ = c.VMs(ctx)
	if len(vms) != 3 {
		t.Errorf("VM without points still listed: %+v", vms)
	}
	if err := c.RemovePoint(ctx, web02[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing twice = %v, want ErrNotFound", err)
	}
	if err := c.RemoveApp(ctx, "crm"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveApp(ctx, "crm"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing app twice = %v, want ErrNotFound", err)
	}
}

// snapshot is the answer of every query.
type snapshot struct {
	VMs    []VMSummary
	All    []PointSummary
	PerVM  map[string][]PointSummary
	Point  map[string]*repo.RestorePoint
	Latest map[string]*repo.RestorePoint
	Apps   []AppSummary
	App    map[string]*repo.App
}

func takeSnapshot(t *testing.T, c *Catalog, src memSource) snapshot {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var s snapshot
	var err error
	s.VMs, err = c.VMs(ctx)
	must(err)
	s.All, err = c.Points(ctx, "")
	must(err)
	s.PerVM = map[string][]PointSummary{}
	s.Point = map[string]*repo.RestorePoint{}
	s.Latest = map[string]*repo.RestorePoint{}
	for _, p := range src.points {
		s.PerVM[p.VM.Name], err = c.Points(ctx, p.VM.Name)
		must(err)
		s.Point[p.ID], err = c.Point(ctx, p.ID)
		must(err)
		for _, before := range []time.Time{{}, p.Created, p.Created.Add(-time.Nanosecond)} {
			key := p.VM.Name + "@" + before.Format(time.RFC3339Nano)
			lp, err := c.LatestPoint(ctx, p.VM.Name, before)
			if !errors.Is(err, ErrNotFound) {
				must(err)
			}
			s.Latest[key] = lp
		}
	}
	s.Apps, err = c.Apps(ctx)
	must(err)
	s.App = map[string]*repo.App{}
	for _, a := range src.apps {
		s.App[a.Name], err = c.App(ctx, a.Name)
		must(err)
	}
	return s
}

func TestRebuildGivesTheSameAnswers(t *testing.T) {
	ctx := context.Background()
	src := fixture()
	c, path := openTemp(t)
	// Index in an order unlike the source's, as backups arrive over time.
	for i := len(src.points) - 1; i >= 0; i-- {
		if err := c.IndexPoint(ctx, src.points[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range src.apps {
		if err := c.IndexApp(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	before := takeSnapshot(t, c, src)
	if len(before.VMs) != 4 || len(before.All) != len(src.points) || len(before.Apps) != 2 {
		t.Fatalf("snapshot looks empty: %+v", before)
	}
	c.Close()

	// Lose the catalog.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	c, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if vms, _ := c.VMs(ctx); len(vms) != 0 {
		t.Fatalf("fresh catalog lists %d VMs", len(vms))
	}
	// A session, and stale index rows Rebuild must clear.
	if err := c.CreateSession(ctx, &Session{ID: "s1", Kind: KindVApp}); err != nil {
		t.Fatal(err)
	}
	if err := c.IndexPoint(ctx, mkPoint("gone", "", t0, "", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.IndexApp(ctx, &repo.App{Format: 1, Name: "gone", Members: []repo.AppMember{{VM: "gone", Group: 1}}}); err != nil {
		t.Fatal(err)
	}

	st, err := c.Rebuild(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if want := (RebuildStats{VMs: 4, Points: len(src.points), Disks: 3 + 2 + 9 + 2 + 1, Apps: 2, Took: st.Took}); st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
	after := takeSnapshot(t, c, src)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("answers differ after rebuild\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := c.Session(ctx, "s1"); err != nil {
		t.Errorf("rebuild lost a session: %v", err)
	}
	if _, err := c.App(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stale app survived rebuild: %v", err)
	}

	// A failing rebuild changes nothing.
	bad := memSource{points: append(append([]*repo.RestorePoint(nil), src.points...), &repo.RestorePoint{ID: "broken"}), apps: src.apps}
	if _, err := c.Rebuild(ctx, bad); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("rebuild from a bad source = %v, want an error naming the point", err)
	}
	if again := takeSnapshot(t, c, src); !reflect.DeepEqual(before, again) {
		t.Error("a failed rebuild changed the catalog")
	}
}

// Several catalogs on one file, each used from several goroutines, must wait
// for each other instead of failing with SQLITE_BUSY.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	_, path := openTemp(t)
	const handles, workers, writes = 3, 2, 12
	var wg sync.WaitGroup
	errs := make(chan error, handles*workers*writes)
	for h := range handles {
		c, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm := fmt.Sprintf("vm-%d-%d", h, w)
				sid := "session-" + vm
				if err := c.CreateSession(ctx, &Session{ID: sid, Kind: KindVM}); err != nil {
					errs <- err
					return
				}
				for i := range writes {
					p := mkPoint(vm, "", t0.Add(time.Duration(i)*time.Hour), "", 1)
					if err := c.IndexPoint(ctx, p); err != nil {
						errs <- err
					}
					step := fmt.Sprintf("step%d", i)
					if _, err := c.StartStep(ctx, sid, step); err != nil {
						errs <- err
					}
					if err := c.EndStep(ctx, sid, step, StepDone, map[string]int{"i": i}, ""); err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := countRows(t, c, "restore_points"); got != handles*workers*writes {
		t.Errorf("%d points indexed, want %d", got, handles*workers*writes)
	}
	if got := countRows(t, c, "session_steps"); got != handles*workers*writes {
		t.Errorf("%d steps recorded, want %d", got, handles*workers*writes)
	}
}
