package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// CatalogOwner is the content of owner.json: the catalog the repository's
// restore sessions are recorded in, the one whose sessions forget must see
// (docs/repository-format.md, "The owning catalog").
type CatalogOwner struct {
	Format    int    `json:"format"`     // 1
	CatalogID string `json:"catalog_id"` // the catalog's own random id
	// Catalog is where the catalog was opened: a path relative to the
	// repository folder when inside it ("catalog.db"), else absolute.
	Catalog string    `json:"catalog"`
	Host    string    `json:"host"` // the host that recorded it
	Since   time.Time `json:"since"`
}

// String names the owner for people.
func (o CatalogOwner) String() string {
	return fmt.Sprintf("catalog %s (id %s, recorded by host %s on %s)", o.Catalog, o.CatalogID, o.Host,
		o.Since.UTC().Format(time.RFC3339))
}

func (r *Repo) ownerPath() string { return filepath.Join(r.Dir, "owner.json") }

// CatalogOwner reads owner.json; it returns nil (and no error) when the
// repository has no owning catalog yet.
func (r *Repo) CatalogOwner() (*CatalogOwner, error) {
	b, err := durablefs.ReadFile(r.fsys(), r.ownerPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: owner.json: %w", r.Dir, err)
	}
	var o CatalogOwner
	if err := json.Unmarshal(b, &o); err != nil || o.Format != 1 || o.CatalogID == "" {
		return nil, fmt.Errorf("repository %s: owner.json does not parse (format 1 with a catalog_id): delete it and run `rekindle catalog rebuild --repo %s --take-over` with the catalog that should own the repository", r.Dir, r.Dir)
	}
	return &o, nil
}

// SetCatalogOwner writes owner.json durably (one whole-object write).
func (r *Repo) SetCatalogOwner(o CatalogOwner) error {
	o.Format = 1
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	if err := r.writeFileAtomic(r.ownerPath(), append(b, '\n'), true); err != nil {
		return fmt.Errorf("repository %s: record its catalog: %w", r.Dir, err)
	}
	return nil
}
