package catalog

import (
	"context"
	"fmt"
	"slices"
)

// PointPins returns the restore points that live sessions run from, each
// with why it must stay: a session that is planned, running, failed (it
// may be resumed) or stopping still reads its points. Retention never
// forgets a pinned point.
func (c *Catalog) PointPins(ctx context.Context) (map[string]string, error) {
	ss, err := c.Sessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("catalog: sessions that pin points: %w", err)
	}
	pins := map[string]string{}
	for _, s := range ss {
		if slices.Contains([]string{SessionStopped, SessionDone}, s.State) {
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
