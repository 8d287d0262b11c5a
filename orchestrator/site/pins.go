package site

import (
	"fmt"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Pins returns the restore points that the newest package of each site
// names, each with why, for retention (retention.ForgetOptions.Pins): a
// later backup outside the protect cycle can make such a point no longer
// its VM's newest, and `site recover --package latest` must still find
// every point its package names.
func Pins(r *repo.Repo) (map[string]string, error) {
	ids, err := r.SitePackages()
	if err != nil {
		return nil, fmt.Errorf("site packages: %w", err)
	}
	newest := map[string]*Package{}
	for _, id := range ids {
		p, err := Load(r, id)
		if err != nil {
			return nil, fmt.Errorf("site package %s: %w", id, err)
		}
		if cur := newest[p.Site]; cur == nil || p.Created.After(cur.Created) {
			newest[p.Site] = p
		}
	}
	out := map[string]string{}
	for _, p := range newest {
		for _, pt := range p.Points() {
			out[pt] = "named by site package " + p.ID + ", the newest of site " + p.Site
		}
	}
	return out, nil
}
