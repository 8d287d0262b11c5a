package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// clock is a fake time source that advances a second per reading.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func TestSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	clk := &clock{t: t0}
	c.now = clk.now
	// A session may only name points the catalog lists.
	indexPointAs(t, c, "db01", "20261121T020200Z-aaaaaa")
	indexPointAs(t, c, "web01", "20261121T020000Z-bbbbbb")

	s := &Session{
		ID:         "20261121-shop",
		Kind:       KindVApp,
		Target:     "cluster/Prod/Resources",
		Hypervisor: "vcenter.example.com",
		NFSPath:    "/rekindle/20261121-shop",
		Allow:      []string{"10.0.0.0/24", "192.168.1.7", "fd00::/8"},
		Request:    json.RawMessage(`{"app":"shop","before":"2026-11-21T00:00:00Z"}`),
		VMs: []SessionVM{
			{VM: "db01", PointID: "20261121T020200Z-aaaaaa", Host: "esx1", Name: "db01"},
			{VM: "web01", PointID: "20261121T020000Z-bbbbbb", Host: "esx2", Name: "web01"},
		},
	}
	if err := c.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if s.State != SessionPlanned || s.Created.IsZero() || !s.Updated.Equal(s.Created) {
		t.Errorf("defaults not filled in: %+v", s)
	}
	got, err := c.Session(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("Session = %+v\nwant %+v", got, s)
	}
	if err := c.CreateSession(ctx, &Session{ID: s.ID, Kind: KindVM}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate id = %v, want ErrExists", err)
	}

	// Steps get seq in the order they first start.
	for i, name := range []string{"expose", "register", "assemble"} {
		st, err := c.StartStep(ctx, s.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Seq != i+1 || st.State != StepRunning || st.Started.IsZero() {
			t.Errorf("StartStep(%s) = %+v", name, st)
		}
		if name == "assemble" {
			break
		}
		if err := c.EndStep(ctx, s.ID, name, StepDone, map[string]any{"hosts": []string{"esx1", "esx2"}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.EndStep(ctx, s.ID, "assemble", StepFailed, nil, "vApp create: permission denied"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetSessionState(ctx, s.ID, SessionFailed, "assemble: permission denied"); err != nil {
		t.Fatal(err)
	}

	// Resume: the failed step runs again under its seq, keeps its detail,
	// loses its error; a new step comes after it.
	if err := c.EndStep(ctx, s.ID, "register", StepDone, json.RawMessage(`{"vms":2}`), ""); err != nil {
		t.Fatal(err)
	}
	st, err := c.StartStep(ctx, s.ID, "assemble")
	if err != nil {
		t.Fatal(err)
	}
	if st.Seq != 3 {
		t.Errorf("resumed step seq = %d, want 3", st.Seq)
	}
	if err := c.EndStep(ctx, s.ID, "assemble", StepDone, nil, ""); err != nil {
		t.Fatal(err)
	}
	if st, err := c.StartStep(ctx, s.ID, "boot"); err != nil || st.Seq != 4 {
		t.Errorf("StartStep(boot) = %+v, %v; want seq 4", st, err)
	}
	if err := c.SetSessionState(ctx, s.ID, SessionRunning, ""); err != nil {
		t.Fatal(err)
	}

	got, err = c.Session(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != SessionRunning || got.Error != "" || !got.Updated.After(got.Created) {
		t.Errorf("session = %+v", got)
	}
	type stepView struct {
		Seq                int
		Name, State, Error string
		Detail             string
		Ended              bool
	}
	var steps []stepView
	for _, st := range got.Steps {
		steps = append(steps, stepView{st.Seq, st.Name, st.State, st.Error, string(st.Detail), !st.Ended.IsZero()})
		if st.Started.IsZero() {
			t.Errorf("step %s has no start time", st.Name)
		}
	}
	wantSteps := []stepView{
		{1, "expose", StepDone, "", `{"hosts":["esx1","esx2"]}`, true},
		{2, "register", StepDone, "", `{"vms":2}`, true},
		{3, "assemble", StepDone, "", "", true},
		{4, "boot", StepRunning, "", "", false},
	}
	if !reflect.DeepEqual(steps, wantSteps) {
		t.Errorf("steps =\n%+v\nwant\n%+v", steps, wantSteps)
	}

	// Undo marks a done step undone and keeps what it recorded.
	if err := c.EndStep(ctx, s.ID, "expose", StepUndone, nil, ""); err != nil {
		t.Fatal(err)
	}
	got, _ = c.Session(ctx, s.ID)
	if st := got.Steps[0]; st.State != StepUndone || string(st.Detail) != `{"hosts":["esx1","esx2"]}` {
		t.Errorf("undone step = %+v", st)
	}

	// VMs are replaced as a whole, in order.
	moved := []SessionVM{{VM: "web01", PointID: "20261121T020000Z-bbbbbb", Host: "esx3", Name: "web01"}}
	if err := c.SetSessionVMs(ctx, s.ID, moved); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Session(ctx, s.ID); !reflect.DeepEqual(got.VMs, moved) {
		t.Errorf("VMs = %+v, want %+v", got.VMs, moved)
	}

	if err := c.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Session(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted session = %v, want ErrNotFound", err)
	}
	for _, table := range []string{"session_steps", "session_vms"} {
		if n := countRows(t, c, table); n != 0 {
			t.Errorf("%s keeps %d rows of a deleted session", table, n)
		}
	}
}

func TestSessionsList(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	clk := &clock{t: t0}
	c.now = clk.now
	for _, s := range []*Session{
		{ID: "b", Kind: KindVM, VMs: []SessionVM{{VM: "web01"}}},
		{ID: "a", Kind: KindFile},
		{ID: "c", Kind: KindTest, Created: t0.Add(-time.Hour), Steps: []Step{{Name: "plan", State: StepDone}, {Name: "expose"}}},
	} {
		if err := c.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.StartStep(ctx, "b", "expose"); err != nil {
		t.Fatal(err)
	}
	list, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
		if s.Steps != nil {
			t.Errorf("Sessions returned steps for %s", s.ID)
		}
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("Sessions order = %v, want %v (newest first)", ids, want)
	}
	if !reflect.DeepEqual(list[1].VMs, []SessionVM{{VM: "web01"}}) || list[0].VMs != nil {
		t.Errorf("session VMs: %+v / %+v", list[1].VMs, list[0].VMs)
	}
	// Planned steps keep their order; a new step comes after them.
	st, err := c.StartStep(ctx, "c", "register")
	if err != nil || st.Seq != 3 {
		t.Errorf("StartStep after planned steps = %+v, %v; want seq 3", st, err)
	}
	if st, err := c.StartStep(ctx, "c", "expose"); err != nil || st.Seq != 2 {
		t.Errorf("StartStep(planned expose) = %+v, %v; want seq 2", st, err)
	}
}

func TestSessionValidation(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	if err := c.CreateSession(ctx, &Session{ID: "ok", Kind: KindVM}); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		err  error
	}{
		{"unknown kind", c.CreateSession(ctx, &Session{ID: "x", Kind: "clone"})},
		{"unknown state", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, State: "paused"})},
		{"empty id", c.CreateSession(ctx, &Session{Kind: KindVM})},
		{"id with slash", c.CreateSession(ctx, &Session{ID: "a/b", Kind: KindVM})},
		{"bad allow", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, Allow: []string{"everyone"}})},
		{"bad request", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, Request: json.RawMessage(`{`)})},
		{"repeated step", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, Steps: []Step{{Name: "a"}, {Name: "a"}}})},
		{"bad step state", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, Steps: []Step{{Name: "a", State: "half"}}})},
		{"vm without name", c.CreateSession(ctx, &Session{ID: "x", Kind: KindVM, VMs: []SessionVM{{Host: "esx1"}}})},
		{"set unknown state", c.SetSessionState(ctx, "ok", "sleeping", "")},
		{"end step as running", c.EndStep(ctx, "ok", "a", StepRunning, nil, "")},
		{"unencodable detail", c.EndStep(ctx, "ok", "a", StepDone, func() {}, "")},
	}
	for _, tt := range bad {
		if tt.err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, err := c.Session(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an invalid session was stored: %v", err)
	}

	missing := []struct {
		name string
		err  error
	}{
		{"set state", c.SetSessionState(ctx, "nope", SessionDone, "")},
		{"set vms", c.SetSessionVMs(ctx, "nope", nil)},
		{"start step", func() error { _, err := c.StartStep(ctx, "nope", "a"); return err }()},
		{"end step of missing session", c.EndStep(ctx, "nope", "a", StepDone, nil, "")},
		{"end step never started", c.EndStep(ctx, "ok", "never", StepDone, nil, "")},
		{"delete", c.DeleteSession(ctx, "nope")},
	}
	for _, tt := range missing {
		if !errors.Is(tt.err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", tt.name, tt.err)
		}
	}
}

// TestSessionJSON: a session's JSON has snake_case keys, [] for empty
// lists, no zero times and no null detail (docs/json.md).
func TestSessionJSON(t *testing.T) {
	at := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	s := Session{ID: "rk-1", Kind: KindVM, State: SessionRunning, Created: at, Updated: at,
		VMs:   []SessionVM{{VM: "web01", PointID: "p1", Name: "web01"}},
		Steps: []Step{{Seq: 1, Name: "expose", State: StepDone, Detail: []byte("null"), Started: at, Ended: at}, {Seq: 2, Name: "boot", State: StepPending}}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"rk-1","kind":"vm","state":"running","allow":[],"created":"2026-12-02T14:00:00Z","updated":"2026-12-02T14:00:00Z",` +
		`"vms":[{"vm":"web01","point_id":"p1","name":"web01"}],` +
		`"steps":[{"seq":1,"name":"expose","state":"done","started":"2026-12-02T14:00:00Z","ended":"2026-12-02T14:00:00Z"},{"seq":2,"name":"boot","state":"pending"}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Session{ID: "rk-2"})
	if !strings.Contains(string(b), `"vms":[],"steps":[]`) {
		t.Fatalf("empty session: %s", b)
	}
	b, _ = json.Marshal(JobRun{ID: "r", VMs: []JobRunVM{{VM: "a", Duration: 2500 * time.Millisecond}}})
	if !strings.Contains(string(b), `"duration_s":2.5`) || strings.Contains(string(b), `"ended"`) {
		t.Fatalf("job run: %s", b)
	}
}

// indexPointAs indexes a point of vm under id.
func indexPointAs(t *testing.T, c *Catalog, vm, id string) {
	t.Helper()
	p := mkPoint(vm, "", t0, "", 1)
	p.ID = id
	if err := c.IndexPoint(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// TestForgetPoint: a point a live session names stays (ErrPinned naming
// the session); once the session is done it goes; a session cannot name
// it then.
func TestForgetPoint(t *testing.T) {
	ctx := context.Background()
	c, _ := openTemp(t)
	id := "20261121T020000Z-cccccc"
	indexPointAs(t, c, "web01", id)
	if err := c.CreateSession(ctx, &Session{ID: "s1", Kind: KindVM, State: SessionFailed,
		VMs: []SessionVM{{VM: "web01", PointID: id}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.ForgetPoint(ctx, id); !errors.Is(err, ErrPinned) || !strings.Contains(err.Error(), "session s1 (failed)") {
		t.Fatalf("forget of a pinned point = %v, want ErrPinned naming session s1", err)
	}
	if _, err := c.Point(ctx, id); err != nil {
		t.Fatalf("pinned point left the catalog: %v", err)
	}
	if err := c.SetSessionState(ctx, "s1", SessionDone, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.ForgetPoint(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Point(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("forgotten point = %v, want ErrNotFound", err)
	}
	if err := c.ForgetPoint(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second forget = %v, want ErrNotFound", err)
	}
	err := c.CreateSession(ctx, &Session{ID: "s2", Kind: KindVM, VMs: []SessionVM{{VM: "web01", PointID: id}}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), id) {
		t.Errorf("session on a forgotten point = %v, want ErrNotFound naming it", err)
	}
}
