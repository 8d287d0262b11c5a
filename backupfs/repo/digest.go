package repo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Digest is a SHA-256 sum. Chunks are named by the digest of their
// uncompressed bytes, indexes by the digest of their encoded file.
type Digest [32]byte

// ZeroDigest marks an all-zero chunk in an index: such a chunk is never stored.
var ZeroDigest Digest

// Sum returns the digest of b.
func Sum(b []byte) Digest { return sha256.Sum256(b) }

// IsZero reports whether d is the all-zero-chunk marker.
func (d Digest) IsZero() bool { return d == ZeroDigest }

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Short is the first 12 hex digits, for messages.
func (d Digest) Short() string { return hex.EncodeToString(d[:6]) }

// ParseDigest parses 64 lower-case hex digits.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 64 {
		return d, fmt.Errorf("digest %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	if s != d.String() {
		return d, fmt.Errorf("digest %q: must be lower case", s)
	}
	return d, nil
}

func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
