package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// Site packages record a datacenter's virtual infrastructure (the format is
// orchestrator/site's, see docs/repository-format.md): the repository
// stores each as sites/<id>.json and checks, before writing it, that every
// restore point it names is stored, so a package never names missing data.

// sitePackageIDRe is the shape of a package id: "<site>-<UTC time>-<hex>".
var sitePackageIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$`)

// ValidSitePackageID reports whether id has the shape of a site package id.
func ValidSitePackageID(id string) bool { return sitePackageIDRe.MatchString(id) }

func (r *Repo) sitePath(id string) string { return filepath.Join(r.Dir, "sites", id+".json") }

// SaveSitePackage writes a site package durably under id. points are the
// restore point ids the package names; each must be stored already.
func (r *Repo) SaveSitePackage(id string, data []byte, points []string) error {
	if !ValidSitePackageID(id) {
		return fmt.Errorf("site package id %q malformed (want <site>-<YYYYMMDDThhmmssZ>-<6 hex>)", id)
	}
	for _, p := range points {
		if _, err := r.fsys().Stat(r.pointPath(p)); err != nil || !ValidPointID(p) {
			return fmt.Errorf("site package %s names restore point %q, which is not in the repository: back it up first", id, p)
		}
	}
	if err := durablefs.MkdirAll(r.fsys(), filepath.Join(r.Dir, "sites"), 0o700); err != nil {
		return fmt.Errorf("save site package %s: %w", id, err)
	}
	if err := r.writeFileAtomic(r.sitePath(id), data, true); err != nil {
		return fmt.Errorf("save site package %s: %w", id, err)
	}
	return nil
}

// SitePackage returns the bytes of the site package id.
func (r *Repo) SitePackage(id string) ([]byte, error) {
	if !ValidSitePackageID(id) {
		return nil, fmt.Errorf("site package %q: %w", id, ErrNotFound)
	}
	b, err := durablefs.ReadFile(r.fsys(), r.sitePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("site package %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("site package %q: %w", id, err)
	}
	return b, nil
}

// SitePackages lists the stored site package ids, oldest first (ids sort
// by time within a site).
func (r *Repo) SitePackages() ([]string, error) {
	names, err := r.listNames(filepath.Join(r.Dir, "sites"), ".json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names = slices.DeleteFunc(names, func(n string) bool { return !ValidSitePackageID(n) })
	slices.Sort(names)
	return names, nil
}
