package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Session kinds.
const (
	KindVM      = "vm"      // one VM
	KindVMs     = "vms"     // several VMs from one export (a site recovery's vApp)
	KindVApp    = "vapp"    // a whole app
	KindPartial = "partial" // some VMs of an app, back into the running app
	KindTest    = "test"    // clones under new names on an isolated network
	KindFile    = "file"    // file-level restore from the guest view
	KindSite    = "site"    // a site recovery: infrastructure, then a session per vApp or standalone VM
)

// Session states.
const (
	SessionPlanned  = "planned"
	SessionRunning  = "running"
	SessionFailed   = "failed"
	SessionStopping = "stopping"
	SessionStopped  = "stopped"
	SessionDone     = "done"
)

// Step states.
const (
	StepPending = "pending"
	StepRunning = "running"
	StepDone    = "done"
	StepFailed  = "failed"
	StepUndone  = "undone"
)

var (
	sessionKinds  = []string{KindVM, KindVMs, KindVApp, KindPartial, KindTest, KindFile, KindSite}
	sessionStates = []string{SessionPlanned, SessionRunning, SessionFailed, SessionStopping, SessionStopped, SessionDone}
	stepStates    = []string{StepPending, StepRunning, StepDone, StepFailed, StepUndone}
	endStates     = []string{StepDone, StepFailed, StepUndone}
)

func checkEnum(what, v string, allowed []string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%s %q unknown (want one of %s)", what, v, strings.Join(allowed, ", "))
	}
	return nil
}

// Session is one restore and its progress. Its JSON form follows the
// conventions of docs/json.md: snake_case keys, arrays never null, times in
// RFC 3339 with their zone (zero times omitted).
type Session struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	State      string          `json:"state"`
	Target     string          `json:"target,omitempty"`     // where the VMs go: cluster, resource pool, vApp...
	Hypervisor string          `json:"hypervisor,omitempty"` // which driver or vCenter
	NFSPath    string          `json:"nfs_path,omitempty"`   // the session folder in the export
	Error      string          `json:"error,omitempty"`      // why it failed, when it did
	Allow      []string        `json:"allow"`                // client addresses or CIDRs the export admits
	Request    json.RawMessage `json:"request,omitempty"`    // what was asked, as the caller encoded it
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"` // last change to the session, its VMs or steps
	VMs        []SessionVM     `json:"vms"`
	Steps      []Step          `json:"steps"` // ordered by Seq
}

// MarshalJSON writes missing lists as [] rather than null.
func (s Session) MarshalJSON() ([]byte, error) {
	type plain Session
	p := plain(s)
	p.Allow = nonNil(p.Allow)
	p.VMs = nonNil(p.VMs)
	p.Steps = nonNil(p.Steps)
	return json.Marshal(p)
}

// nonNil returns s, or an empty slice for nil, so JSON says [] not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// SessionVM is one VM a session restores.
type SessionVM struct {
	VM      string `json:"vm"`             // name in the catalog
	PointID string `json:"point_id"`       // restore point it runs from
	Host    string `json:"host,omitempty"` // hypervisor host it is registered on
	Name    string `json:"name"`           // name it is published under (differs for test clones)
}

// Step is one action of a session.
type Step struct {
	Seq     int             `json:"seq"` // 1, 2, ... in the order steps first started
	Name    string          `json:"name"`
	State   string          `json:"state"`
	Error   string          `json:"error,omitempty"`
	Detail  json.RawMessage `json:"detail,omitempty"`
	Started time.Time       `json:"started,omitzero"` // zero when not yet
	Ended   time.Time       `json:"ended,omitzero"`
}

// MarshalJSON leaves out a detail recorded as JSON null.
func (st Step) MarshalJSON() ([]byte, error) {
	type plain Step
	p := plain(st)
	if string(p.Detail) == "null" {
		p.Detail = nil
	}
	return json.Marshal(p)
}

func validateSessionVMs(vms []SessionVM) error {
	for i, v := range vms {
		if v.VM == "" {
			return fmt.Errorf("vm %d: empty name", i+1)
		}
	}
	return nil
}

// CreateSession records a new session. Missing State becomes planned, zero
// Created now, zero Updated Created; Steps, if any, are recorded in order
// (seq 1, 2, ...), pending unless they say otherwise. s is updated with
// these defaults. It fails with ErrExists if the id is taken.
func (c *Catalog) CreateSession(ctx context.Context, s *Session) error {
	if s == nil {
		return errors.New("catalog: create session: nil")
	}
	if err := c.createSession(ctx, s); err != nil {
		return fmt.Errorf("catalog: create session %s: %w", s.ID, err)
	}
	return nil
}

func (c *Catalog) createSession(ctx context.Context, s *Session) error {
	if s.ID == "" || strings.ContainsAny(s.ID, "/\\\x00") {
		return fmt.Errorf("id %q invalid", s.ID)
	}
	if err := checkEnum("kind", s.Kind, sessionKinds); err != nil {
		return err
	}
	if s.State == "" {
		s.State = SessionPlanned
	}
	if err := checkEnum("state", s.State, sessionStates); err != nil {
		return err
	}
	allow, err := encodeAllow(s.Allow)
	if err != nil {
		return err
	}
	var request sql.NullString
	if len(s.Request) > 0 {
		if !json.Valid(s.Request) {
			return errors.New("request is not valid JSON")
		}
		request = sql.NullString{String: string(s.Request), Valid: true}
	}
	if s.Created.IsZero() {
		s.Created = c.now()
	}
	if s.Updated.IsZero() {
		s.Updated = s.Created
	}
	if err := checkTime("created", s.Created); err != nil {
		return err
	}
	if err := checkTime("updated", s.Updated); err != nil {
		return err
	}
	if err := validateSessionVMs(s.VMs); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range s.Steps {
		st := &s.Steps[i]
		st.Seq = i + 1
		if st.Name == "" || seen[st.Name] {
			return fmt.Errorf("step %d: name %q empty or repeated", st.Seq, st.Name)
		}
		seen[st.Name] = true
		if st.State == "" {
			st.State = StepPending
		}
		if err := checkEnum("step "+st.Name+": state", st.State, stepStates); err != nil {
			return err
		}
		if len(st.Detail) > 0 && !json.Valid(st.Detail) {
			return fmt.Errorf("step %s: detail is not valid JSON", st.Name)
		}
		if err := checkTime("step "+st.Name+": started", st.Started); err != nil {
			return err
		}
		if err := checkTime("step "+st.Name+": ended", st.Ended); err != nil {
			return err
		}
	}

	return c.inTx(ctx, func(r runner) error {
		var one int
		switch err := r.queryRow(ctx, `SELECT 1 FROM sessions WHERE id = ?`, s.ID).Scan(&one); {
		case err == nil:
			return ErrExists
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := r.exec(ctx, `INSERT INTO sessions
			(id, kind, state, target, hypervisor, nfs_path, allow, request, error, created, updated)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.Kind, s.State, s.Target, s.Hypervisor, s.NFSPath, string(allow), request, s.Error,
			s.Created.UnixNano(), s.Updated.UnixNano()); err != nil {
			return err
		}
		if err := insertSessionVMs(ctx, r, s.ID, s.VMs); err != nil {
			return err
		}
		for _, st := range s.Steps {
			if _, err := r.exec(ctx, `INSERT INTO session_steps
				(session_id, seq, name, state, started, ended, detail, error)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				s.ID, st.Seq, st.Name, st.State, nanos(st.Started), nanos(st.Ended), rawJSON(st.Detail), st.Error); err != nil {
				return fmt.Errorf("step %s: %w", st.Name, err)
			}
		}
		return nil
	})
}

func insertSessionVMs(ctx context.Context, r runner, id string, vms []SessionVM) error {
	for i, v := range vms {
		// A session may only pin a point the catalog still lists. Checked in
		// the transaction that records the pin, this is one side of the
		// handshake with ForgetPoint (see there): a point forgotten since the
		// caller resolved it fails the session instead of being lost to it.
		if v.PointID != "" {
			var one int
			err := r.queryRow(ctx, `SELECT 1 FROM restore_points WHERE id = ?`, v.PointID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("vm %s: restore point %s is not in the catalog (forgotten meanwhile?): %w; pick another (`rekindle list points --vm %s`)",
					v.VM, v.PointID, ErrNotFound, v.VM)
			}
			if err != nil {
				return fmt.Errorf("vm %s: restore point %s: %w", v.VM, v.PointID, err)
			}
		}
		if _, err := r.exec(ctx, `INSERT INTO session_vms (session_id, position, vm, point_id, host, published_name)
			VALUES (?, ?, ?, ?, ?, ?)`, id, i+1, v.VM, v.PointID, v.Host, v.Name); err != nil {
			return fmt.Errorf("vm %s: %w", v.VM, err)
		}
	}
	return nil
}

func rawJSON(b json.RawMessage) sql.NullString {
	if len(b) == 0 {
		return sql.NullString{}
	}
	return sql.NullString{String: string(b), Valid: true}
}

func fromRawJSON(s sql.NullString) json.RawMessage {
	if !s.Valid || s.String == "" {
		return nil
	}
	return json.RawMessage(s.String)
}

const sessionColumns = `id, kind, state, target, hypervisor, nfs_path, allow, request, error, created, updated`

func scanSession(sc interface{ Scan(...any) error }) (Session, error) {
	var s Session
	var allow string
	var request sql.NullString
	var created, updated int64
	if err := sc.Scan(&s.ID, &s.Kind, &s.State, &s.Target, &s.Hypervisor, &s.NFSPath,
		&allow, &request, &s.Error, &created, &updated); err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(allow), &s.Allow); err != nil {
		return s, fmt.Errorf("session %s: decode allow: %w", s.ID, err)
	}
	if len(s.Allow) == 0 {
		s.Allow = nil
	}
	s.Request = fromRawJSON(request)
	s.Created = time.Unix(0, created).UTC()
	s.Updated = time.Unix(0, updated).UTC()
	return s, nil
}

// Session returns session id with its VMs and its steps ordered by seq.
func (c *Catalog) Session(ctx context.Context, id string) (*Session, error) {
	var s Session
	err := c.readTx(ctx, func(r runner) error {
		var err error
		s, err = scanSession(r.queryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		vms, err := sessionVMs(ctx, r, id)
		if err != nil {
			return err
		}
		s.VMs = vms[id]
		rows, err := r.query(ctx, `SELECT seq, name, state, started, ended, detail, error
			FROM session_steps WHERE session_id = ? ORDER BY seq`, id)
		if err != nil {
			return fmt.Errorf("steps: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var st Step
			var started, ended sql.NullInt64
			var detail sql.NullString
			if err := rows.Scan(&st.Seq, &st.Name, &st.State, &started, &ended, &detail, &st.Error); err != nil {
				return fmt.Errorf("steps: %w", err)
			}
			st.Started, st.Ended, st.Detail = fromNanos(started), fromNanos(ended), fromRawJSON(detail)
			s.Steps = append(s.Steps, st)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("steps: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: session %s: %w", id, err)
	}
	return &s, nil
}

// sessionVMs returns the VMs of session id, or of all sessions when id is "",
// keyed by session, in the order they were set.
func sessionVMs(ctx context.Context, r runner, id string) (map[string][]SessionVM, error) {
	q := `SELECT session_id, vm, point_id, host, published_name FROM session_vms`
	var args []any
	if id != "" {
		q += ` WHERE session_id = ?`
		args = append(args, id)
	}
	q += ` ORDER BY session_id, position`
	rows, err := r.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("vms: %w", err)
	}
	defer rows.Close()
	out := map[string][]SessionVM{}
	for rows.Next() {
		var sid string
		var v SessionVM
		if err := rows.Scan(&sid, &v.VM, &v.PointID, &v.Host, &v.Name); err != nil {
			return nil, fmt.Errorf("vms: %w", err)
		}
		out[sid] = append(out[sid], v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("vms: %w", err)
	}
	return out, nil
}

// Sessions lists all sessions, newest first, with their VMs but without
// their steps.
func (c *Catalog) Sessions(ctx context.Context) ([]Session, error) {
	var out []Session
	err := c.readTx(ctx, func(r runner) error {
		rows, err := r.query(ctx, `SELECT `+sessionColumns+` FROM sessions ORDER BY created DESC, id DESC`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			s, err := scanSession(rows)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		vms, err := sessionVMs(ctx, r, "")
		if err != nil {
			return err
		}
		for i := range out {
			out[i].VMs = vms[out[i].ID]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: list sessions: %w", err)
	}
	return out, nil
}

// touchSession sets the session's updated time, and reports ErrNotFound
// when there is no such session.
func touchSession(ctx context.Context, r runner, id string, now time.Time) error {
	res, err := r.exec(ctx, `UPDATE sessions SET updated = ? WHERE id = ?`, now.UnixNano(), id)
	return mustAffect(res, err)
}

// mustAffect turns "no row changed" into ErrNotFound.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// SetSessionState moves session id to state, recording errText (empty
// clears it).
func (c *Catalog) SetSessionState(ctx context.Context, id, state, errText string) error {
	err := checkEnum("state", state, sessionStates)
	if err == nil {
		err = c.inTx(ctx, func(r runner) error {
			res, err := r.exec(ctx, `UPDATE sessions SET state = ?, error = ?, updated = ? WHERE id = ?`,
				state, errText, c.now().UnixNano(), id)
			return mustAffect(res, err)
		})
	}
	if err != nil {
		return fmt.Errorf("catalog: session %s: set state %s: %w", id, state, err)
	}
	return nil
}

// SetSessionVMs replaces the VMs of session id.
func (c *Catalog) SetSessionVMs(ctx context.Context, id string, vms []SessionVM) error {
	err := validateSessionVMs(vms)
	if err == nil {
		err = c.inTx(ctx, func(r runner) error {
			if err := touchSession(ctx, r, id, c.now()); err != nil {
				return err
			}
			if _, err := r.exec(ctx, `DELETE FROM session_vms WHERE session_id = ?`, id); err != nil {
				return err
			}
			return insertSessionVMs(ctx, r, id, vms)
		})
	}
	if err != nil {
		return fmt.Errorf("catalog: session %s: set vms: %w", id, err)
	}
	return nil
}

// StartStep marks step name of session id running. A new step gets the next
// seq; a step started before (a resume after a crash, or a retry) keeps its
// seq and its detail, and loses its end time and error.
func (c *Catalog) StartStep(ctx context.Context, id, name string) (Step, error) {
	var st Step
	err := c.inTx(ctx, func(r runner) error {
		if name == "" {
			return errors.New("empty step name")
		}
		now := c.now()
		if err := touchSession(ctx, r, id, now); err != nil {
			return err
		}
		st = Step{Name: name, State: StepRunning, Started: now}
		var detail sql.NullString
		err := r.queryRow(ctx, `SELECT seq, detail FROM session_steps WHERE session_id = ? AND name = ?`,
			id, name).Scan(&st.Seq, &detail)
		switch {
		case err == nil:
			st.Detail = fromRawJSON(detail)
			_, err = r.exec(ctx, `UPDATE session_steps SET state = ?, started = ?, ended = NULL, error = ''
				WHERE session_id = ? AND name = ?`, StepRunning, now.UnixNano(), id, name)
			return err
		case errors.Is(err, sql.ErrNoRows):
			if err := r.queryRow(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM session_steps WHERE session_id = ?`,
				id).Scan(&st.Seq); err != nil {
				return err
			}
			_, err = r.exec(ctx, `INSERT INTO session_steps (session_id, seq, name, state, started)
				VALUES (?, ?, ?, ?, ?)`, id, st.Seq, name, StepRunning, now.UnixNano())
			return err
		default:
			return err
		}
	})
	if err != nil {
		return Step{}, fmt.Errorf("catalog: session %s: start step %s: %w", id, name, err)
	}
	return st, nil
}

// EndStep ends step name of session id in state done, failed or undone.
// detail is stored as JSON; nil (or anything encoding to null) keeps the
// detail the step had. errText replaces the step's error.
func (c *Catalog) EndStep(ctx context.Context, id, name, state string, detail any, errText string) error {
	err := c.endStep(ctx, id, name, state, detail, errText)
	if err != nil {
		return fmt.Errorf("catalog: session %s: end step %s as %s: %w", id, name, state, err)
	}
	return nil
}

func (c *Catalog) endStep(ctx context.Context, id, name, state string, detail any, errText string) error {
	if err := checkEnum("step state", state, endStates); err != nil {
		return err
	}
	var d sql.NullString
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("encode detail: %w", err)
		}
		if string(b) != "null" {
			d = sql.NullString{String: string(b), Valid: true}
		}
	}
	return c.inTx(ctx, func(r runner) error {
		now := c.now()
		if err := touchSession(ctx, r, id, now); err != nil {
			return err
		}
		res, err := r.exec(ctx, `UPDATE session_steps SET state = ?, ended = ?, error = ?, detail = COALESCE(?, detail)
			WHERE session_id = ? AND name = ?`, state, now.UnixNano(), errText, d, id, name)
		if err := mustAffect(res, err); err != nil {
			return fmt.Errorf("step: %w", err)
		}
		return nil
	})
}

// DeleteSession removes session id with its VMs and steps.
func (c *Catalog) DeleteSession(ctx context.Context, id string) error {
	err := c.inTx(ctx, func(r runner) error {
		res, err := r.exec(ctx, `DELETE FROM sessions WHERE id = ?`, id)
		return mustAffect(res, err)
	})
	if err != nil {
		return fmt.Errorf("catalog: delete session %s: %w", id, err)
	}
	return nil
}

// SetSessionExport records where session id is exported (nfsPath, empty once
// withdrawn) and which clients it admits.
func (c *Catalog) SetSessionExport(ctx context.Context, id, nfsPath string, allow []string) error {
	b, err := encodeAllow(allow)
	if err != nil {
		return fmt.Errorf("catalog: session %s: %w", id, err)
	}
	err = c.inTx(ctx, func(r runner) error {
		res, err := r.exec(ctx, `UPDATE sessions SET nfs_path = ?, allow = ?, updated = ? WHERE id = ?`,
			nfsPath, string(b), c.now().UnixNano(), id)
		return mustAffect(res, err)
	})
	if err != nil {
		return fmt.Errorf("catalog: session %s: set export: %w", id, err)
	}
	return nil
}

// SetSessionRequest replaces the request (the restore plan) stored with
// session id.
func (c *Catalog) SetSessionRequest(ctx context.Context, id string, request json.RawMessage) error {
	if !json.Valid(request) {
		return fmt.Errorf("catalog: session %s: request is not valid JSON", id)
	}
	err := c.inTx(ctx, func(r runner) error {
		res, err := r.exec(ctx, `UPDATE sessions SET request = ?, updated = ? WHERE id = ?`, string(request), c.now().UnixNano(), id)
		return mustAffect(res, err)
	})
	if err != nil {
		return fmt.Errorf("catalog: session %s: set request: %w", id, err)
	}
	return nil
}

// encodeAllow checks that every entry is an address or CIDR and encodes the
// list as stored (never null).
func encodeAllow(allow []string) ([]byte, error) {
	for _, a := range allow {
		if _, err := netip.ParsePrefix(a); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(a); err != nil {
			return nil, fmt.Errorf("allow %q: not an address or CIDR", a)
		}
	}
	if allow == nil {
		allow = []string{}
	}
	return json.Marshal(allow)
}
