package repo

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

const (
	// FormatName identifies a rekindle repository's config file.
	FormatName = "rekindle-repository"
	// FormatVersion is the repository layout version this code writes and the
	// newest it opens. Version 2 stores chunks as independently decodable
	// frames (chunk.go); version 1 repositories open as they are and keep
	// getting version 1 chunks, so older releases still read them.
	FormatVersion = 2

	// DefaultChunkSize is 256 KiB: see docs/repository-format.md ("Chunk size")
	// for the benchmark behind the choice.
	DefaultChunkSize = 256 << 10
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 16 << 20

	// MaxDiskSize is the largest disk a repository accepts (VMware's limit).
	MaxDiskSize = 62 << 40
)

// ErrNotRepository is returned by Open when DIR holds no repository config.
var ErrNotRepository = errors.New("not a rekindle repository")

// Config is the repository's config.json.
type Config struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	ChunkSize   int       `json:"chunk_size"`
	Hash        string    `json:"hash"`
	Compression string    `json:"compression"`
	Created     time.Time `json:"created"`
}

func (c *Config) validate() error {
	if c.Format != FormatName {
		return fmt.Errorf("config format %q is not %q", c.Format, FormatName)
	}
	if c.Version < 1 || c.Version > FormatVersion {
		return fmt.Errorf("repository format version %d is newer than this rekindle supports (%d): upgrade rekindle", c.Version, FormatVersion)
	}
	if err := validChunkSize(c.ChunkSize); err != nil {
		return err
	}
	if c.Hash != "sha256" {
		return fmt.Errorf("hash %q not supported (want sha256)", c.Hash)
	}
	if c.Compression != "zstd" {
		return fmt.Errorf("compression %q not supported (want zstd)", c.Compression)
	}
	return nil
}

func validChunkSize(n int) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d: must be a power of two between %d and %d", n, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// InitOptions are the settings fixed when a repository is created.
type InitOptions struct {
	ChunkSize int // 0 means DefaultChunkSize
	// Version is the layout version to create, 0 meaning FormatVersion.
	// Version 1 (whole-chunk payloads) is for tests and benchmarks that
	// compare with repositories written by older releases.
	Version int
}

var layoutDirs = []string{"chunks", "indexes", "points", "apps", "sites", "tmp"}

// Init creates a repository in dir (created if missing; it must not already
// hold a repository) and opens it.
func Init(dir string, opts InitOptions) (*Repo, error) { return InitFS(durablefs.OS(), dir, opts) }

// InitFS is Init on fsys (tests put a powercut.FS here).
func InitFS(fsys durablefs.FS, dir string, opts InitOptions) (*Repo, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if err := validChunkSize(opts.ChunkSize); err != nil {
		return nil, fmt.Errorf("init repository %s: %w", dir, err)
	}
	if opts.Version == 0 {
		opts.Version = FormatVersion
	}
	if opts.Version < 1 || opts.Version > FormatVersion {
		return nil, fmt.Errorf("init repository %s: format version %d: want 1 to %d", dir, opts.Version, FormatVersion)
	}
	if _, err := fsys.Stat(filepath.Join(dir, "config.json")); err == nil {
		return nil, fmt.Errorf("init repository %s: a repository already exists there", dir)
	}
	for _, d := range layoutDirs {
		if err := durablefs.MkdirAll(fsys, filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("init repository %s: %w", dir, err)
		}
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	cfg := Config{
		Format: FormatName, Version: opts.Version, ID: hex.EncodeToString(id),
		ChunkSize: opts.ChunkSize, Hash: "sha256", Compression: "zstd",
		Created: time.Now().UTC().Truncate(time.Second),
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := writeFileAtomic(fsys, filepath.Join(dir, "tmp"), filepath.Join(dir, "config.json"), append(b, '\n'), true); err != nil {
		return nil, fmt.Errorf("init repository %s: %w", dir, err)
	}
	return OpenFS(fsys, dir)
}

func readConfig(fsys durablefs.FS, dir string) (*Config, error) {
	b, err := durablefs.ReadFile(fsys, filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: %w (no config.json; create one with `rekindle init --repo %s`)", dir, ErrNotRepository, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("open repository %s: config.json: %w", dir, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	return &c, nil
}
