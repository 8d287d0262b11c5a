package catalog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// ErrOtherCatalog is returned, wrapped with the owner and what to do, when
// a repository's sessions are recorded in another catalog than this one.
var ErrOtherCatalog = errors.New("the repository belongs to another catalog")

// Claim makes c the catalog of repository r, or checks that it is one
// (docs/repository-format.md, "The owning catalog"). Restore sessions pin
// their points only in the catalog they are recorded in, so forget run
// with another catalog would not see them: a repository names its catalog
// in owner.json and is used with that one only.
//
//   - r names no catalog (new, or from before owners): c becomes its owner.
//   - r names c: nothing to do.
//   - r names another catalog at c's place (the same path inside the
//     repository, or the same absolute path on the same host) and this
//     Open created c: the owner's file was lost and c replaces it (its
//     sessions went with it); c becomes the owner.
//   - takeOver: c becomes the owner whatever r names (sessions recorded
//     only in the old catalog stop pinning their points).
//   - otherwise ErrOtherCatalog, naming the owner and how to proceed.
func (c *Catalog) Claim(ctx context.Context, r *repo.Repo, takeOver bool) error {
	o, err := r.CatalogOwner()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	place := c.placeIn(r)
	switch {
	case o != nil && o.CatalogID == c.id:
		return nil
	case o == nil, takeOver, c.created && o.Catalog == place && (!filepath.IsAbs(place) || o.Host == host):
	default:
		return fmt.Errorf("%w: repository %s records its restore sessions in %s, not in %s (id %s), and forget must see them: "+
			"use --catalog %s (or REKINDLE_CATALOG); if that catalog is gone for good, make this one the repository's with "+
			"`rekindle catalog rebuild --repo %s --catalog %s --take-over` (sessions recorded only in the old catalog then no longer keep their points)",
			ErrOtherCatalog, r.Dir, o, c.path, c.id, OwnerPath(r, o), r.Dir, c.path)
	}
	want := repo.CatalogOwner{CatalogID: c.id, Catalog: place, Host: host, Since: c.now()}
	if err := r.SetCatalogOwner(want); err != nil {
		return err
	}
	// Two catalogs claiming at once: the last write wins; the loser finds
	// out here rather than at its next command.
	if got, err := r.CatalogOwner(); err != nil || got == nil || got.CatalogID != c.id {
		return fmt.Errorf("%w: repository %s was claimed by another catalog at the same time (%v): run the command again", ErrOtherCatalog, r.Dir, got)
	}
	return nil
}

// placeIn is where c is, as owner.json records it: relative to the
// repository folder when inside it (the same file from every host that
// mounts the repository), else absolute.
func (c *Catalog) placeIn(r *repo.Repo) string {
	abs, err := filepath.Abs(c.path)
	if err != nil {
		return c.path
	}
	dir, err := filepath.Abs(r.Dir)
	if err != nil {
		return abs
	}
	if rel, err := filepath.Rel(dir, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return filepath.ToSlash(rel)
	}
	return abs
}

// OwnerPath is the owner's catalog as a path to give --catalog.
func OwnerPath(r *repo.Repo, o *repo.CatalogOwner) string {
	if filepath.IsAbs(o.Catalog) {
		return o.Catalog
	}
	return filepath.Join(r.Dir, filepath.FromSlash(o.Catalog))
}
