package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// ErrPinned is returned, wrapped with the session, by ForgetPoint for a
// point a live session uses.
var ErrPinned = errors.New("in use by a session")

// pinningStates are the session states that pin their points: a session
// that is planned, running, failed (it may be resumed) or stopping still
// reads them.
var pinningStates = []string{SessionPlanned, SessionRunning, SessionFailed, SessionStopping}

// PointPins returns the restore points that live sessions run from, each
// with why it must stay (see pinningStates). Retention never forgets a
// pinned point.
func (c *Catalog) PointPins(ctx context.Context) (map[string]string, error) {
	ss, err := c.Sessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("catalog: sessions that pin points: %w", err)
	}
	pins := map[string]string{}
	for _, s := range ss {
		if !slices.Contains(pinningStates, s.State) {
			continue
		}
		for _, v := range s.VMs {
			if v.PointID != "" {
				pins[v.PointID] = fmt.Sprintf("in use by session %s (%s)", s.ID, s.State)
			}
		}
	}
	return pins, nil
}

// ForgetPoint removes restore point id from the catalog unless a live
// session pins it, in one write transaction; forget calls it before it
// removes the point's manifest. With the check CreateSession and
// SetSessionVMs make in their own transaction (the point must still be
// listed), this closes the race between a forget that read the pins and a
// session created since, in this process or another one sharing the
// catalog: SQLite runs the two transactions one after the other, so either
// the session came first and ForgetPoint fails with ErrPinned (the point
// stays), or the point went first and the session fails with ErrNotFound.
// A point the catalog does not list fails with ErrNotFound.
func (c *Catalog) ForgetPoint(ctx context.Context, id string) error {
	err := c.inTx(ctx, func(r runner) error {
		return removePoint(ctx, r, id, func() error {
			var sid, state string
			err := r.queryRow(ctx, `SELECT s.id, s.state FROM session_vms v JOIN sessions s ON s.id = v.session_id
				WHERE v.point_id = ? AND s.state IN (?, ?, ?, ?) ORDER BY s.id LIMIT 1`,
				id, pinningStates[0], pinningStates[1], pinningStates[2], pinningStates[3]).Scan(&sid, &state)
			switch {
			case err == nil:
				return fmt.Errorf("%w: session %s (%s)", ErrPinned, sid, state)
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("catalog: forget restore point %s: %w", id, err)
	}
	return nil
}
