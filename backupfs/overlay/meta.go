package overlay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/rekindle/rekindle/internal/durable"
)

const (
	metaName    = "meta"
	metaVersion = 2
	metaHeader  = "rekindle-overlay-meta 2\n"
	// metaHeaderV1 is read still: a version 1 upper directory has no log.
	metaHeaderV1 = "rekindle-overlay-meta 1\n"
	maxMetaSize  = 64 << 20
)

// ErrCorruptMeta is wrapped by the error New returns when the upper
// directory's metadata cannot be trusted.
var ErrCorruptMeta = errors.New("corrupt overlay metadata")

type kind uint8

const (
	kindFile kind = iota + 1
	kindDir
)

func (k kind) String() string {
	switch k {
	case kindFile:
		return "file"
	case kindDir:
		return "dir"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// node is one entry of the path→node table. Its fields are guarded by
// Overlay.mu.
type node struct {
	ID        uint64
	Kind      kind
	Mode      os.FileMode // permission bits only
	UID, GID  uint32
	MTime     int64  // ns; directories, and files without a data file
	Origin    string // base path read through unmarked blocks; files only
	BaseLimit int64  // origin bytes at or beyond read as zeros
	Opaque    bool   // directories: hide the base directory at this path
}

// metaFile is the JSON document of the meta file.
type metaFile struct {
	Version   int        `json:"version"`
	Salt      string     `json:"salt"`
	BlockSize int        `json:"blockSize"`
	NextSeq   uint64     `json:"nextSeq"`
	LogSeq    uint64     `json:"logSeq,omitempty"`
	Nodes     []metaNode `json:"nodes"`
	Whiteouts []string   `json:"whiteouts"`
}

type metaNode struct {
	Path      string `json:"path"`
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Mode      uint32 `json:"mode"`
	UID       uint32 `json:"uid"`
	GID       uint32 `json:"gid"`
	MTime     int64  `json:"mtimeNs"`
	Origin    string `json:"origin,omitempty"`
	BaseLimit int64  `json:"baseLimit,omitempty"`
	Opaque    bool   `json:"opaque,omitempty"`
}

// state is the decoded, validated metadata.
type state struct {
	salt      string
	blockSize int
	nextSeq   uint64
	logSeq    uint64 // the last log record this state includes
	version   int    // of the meta file it was read from
	nodes     map[string]*node
	whiteouts map[string]struct{}
}

func newState(salt string, blockSize int) *state {
	return &state{
		salt:      salt,
		blockSize: blockSize,
		nextSeq:   1,
		nodes:     make(map[string]*node),
		whiteouts: make(map[string]struct{}),
	}
}

func idString(id uint64) string { return fmt.Sprintf("%016x", id) }

func parseID(s string) (uint64, error) {
	if len(s) != 16 || strings.ToLower(s) != s {
		return 0, fmt.Errorf("id %q: want 16 lowercase hex digits", s)
	}
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("id %q: %w", s, err)
	}
	if id == 0 {
		return 0, fmt.Errorf("id %q: zero", s)
	}
	return id, nil
}

// encodeMeta renders st as the meta file, nodes and whiteouts sorted by path.
func encodeMeta(st *state) ([]byte, error) {
	mf := metaFile{
		Version:   metaVersion,
		Salt:      st.salt,
		BlockSize: st.blockSize,
		NextSeq:   st.nextSeq,
		LogSeq:    st.logSeq,
		Nodes:     make([]metaNode, 0, len(st.nodes)),
		Whiteouts: make([]string, 0, len(st.whiteouts)),
	}
	for p, n := range st.nodes {
		mf.Nodes = append(mf.Nodes, toMetaNode(p, n))
	}
	sort.Slice(mf.Nodes, func(i, j int) bool { return mf.Nodes[i].Path < mf.Nodes[j].Path })
	for p := range st.whiteouts {
		mf.Whiteouts = append(mf.Whiteouts, p)
	}
	sort.Strings(mf.Whiteouts)
	body, err := json.MarshalIndent(&mf, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	out := make([]byte, 0, len(metaHeader)+8+64+len(body))
	out = append(out, metaHeader...)
	out = append(out, "sha256 "...)
	out = hex.AppendEncode(out, sum[:])
	out = append(out, '\n')
	return append(out, body...), nil
}

func toMetaNode(p string, n *node) metaNode {
	return metaNode{
		Path: p, ID: idString(n.ID), Kind: n.Kind.String(), Mode: uint32(n.Mode),
		UID: n.UID, GID: n.GID, MTime: n.MTime,
		Origin: n.Origin, BaseLimit: n.BaseLimit, Opaque: n.Opaque,
	}
}

// decodeMeta checks the header and checksum of a meta file and decodes it.
func decodeMeta(b []byte) (*state, error) {
	rest, ok := bytes.CutPrefix(b, []byte(metaHeader))
	version := metaVersion
	if !ok {
		rest, ok = bytes.CutPrefix(b, []byte(metaHeaderV1))
		version = 1
	}
	if !ok {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		if len(line) > 40 {
			line = line[:40]
		}
		return nil, fmt.Errorf("%w: header %q, want %q", ErrCorruptMeta, line, strings.TrimSpace(metaHeader))
	}
	sumLine, body, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("%w: no checksum line", ErrCorruptMeta)
	}
	hexSum, ok := bytes.CutPrefix(sumLine, []byte("sha256 "))
	if !ok || len(hexSum) != 64 {
		return nil, fmt.Errorf("%w: malformed checksum line", ErrCorruptMeta)
	}
	var want [32]byte
	if _, err := hex.Decode(want[:], hexSum); err != nil {
		return nil, fmt.Errorf("%w: checksum: %v", ErrCorruptMeta, err)
	}
	if sha256.Sum256(body) != want {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptMeta)
	}
	st, err := decodeMetaBody(body)
	if err == nil && st.version != version {
		return nil, fmt.Errorf("%w: header says version %d, document %d", ErrCorruptMeta, version, st.version)
	}
	return st, err
}

// decodeMetaBody decodes and validates the JSON document of a meta file.
func decodeMetaBody(body []byte) (*state, error) {
	var mf metaFile
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptMeta, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after document", ErrCorruptMeta)
	}
	if mf.Version != metaVersion && mf.Version != 1 {
		return nil, fmt.Errorf("%w: version %d, want 1 or %d", ErrCorruptMeta, mf.Version, metaVersion)
	}
	if mf.Version == 1 && mf.LogSeq != 0 {
		return nil, fmt.Errorf("%w: version 1 has no log", ErrCorruptMeta)
	}
	if err := checkBlockSize(mf.BlockSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptMeta, err)
	}
	st := newState(mf.Salt, mf.BlockSize)
	st.nextSeq, st.logSeq, st.version = mf.NextSeq, mf.LogSeq, mf.Version
	for i := range mf.Nodes {
		mn := &mf.Nodes[i]
		n, err := decodeNode(mn)
		if err != nil {
			return nil, fmt.Errorf("%w: node %q: %v", ErrCorruptMeta, mn.Path, err)
		}
		if _, dup := st.nodes[mn.Path]; dup {
			return nil, fmt.Errorf("%w: node %q listed twice", ErrCorruptMeta, mn.Path)
		}
		st.nodes[mn.Path] = n
	}
	for _, p := range mf.Whiteouts {
		if _, dup := st.whiteouts[p]; dup {
			return nil, fmt.Errorf("%w: whiteout %q listed twice", ErrCorruptMeta, p)
		}
		st.whiteouts[p] = struct{}{}
	}
	if err := st.validate(); err != nil {
		return nil, err
	}
	return st, nil
}

// validate checks what no single node can: ids are unique, nothing lies
// inside a file, the root is a directory, whiteouts are valid paths that
// are not nodes.
func (st *state) validate() error {
	ids := make(map[uint64]string, len(st.nodes))
	for p, n := range st.nodes {
		if other, dup := ids[n.ID]; dup {
			return fmt.Errorf("%w: nodes %q and %q share id %s", ErrCorruptMeta, other, p, idString(n.ID))
		}
		ids[n.ID] = p
	}
	for p, n := range st.nodes {
		if p == "/" {
			if n.Kind != kindDir {
				return fmt.Errorf("%w: root is a %s", ErrCorruptMeta, n.Kind)
			}
			continue
		}
		if parent := st.nodes[path.Dir(p)]; parent != nil && parent.Kind != kindDir {
			return fmt.Errorf("%w: node %q is inside file %q", ErrCorruptMeta, p, path.Dir(p))
		}
	}
	for p := range st.whiteouts {
		if err := checkMetaPath(p); err != nil || p == "/" {
			return fmt.Errorf("%w: whiteout %q: invalid path", ErrCorruptMeta, p)
		}
		if _, ok := st.nodes[p]; ok {
			return fmt.Errorf("%w: whiteout %q is also a node", ErrCorruptMeta, p)
		}
	}
	return nil
}

func decodeNode(mn *metaNode) (*node, error) {
	if err := checkMetaPath(mn.Path); err != nil {
		return nil, err
	}
	id, err := parseID(mn.ID)
	if err != nil {
		return nil, err
	}
	if mn.Mode&^uint32(os.ModePerm) != 0 {
		return nil, fmt.Errorf("mode %#o has bits other than permissions", mn.Mode)
	}
	n := &node{ID: id, Mode: os.FileMode(mn.Mode), UID: mn.UID, GID: mn.GID, MTime: mn.MTime,
		Origin: mn.Origin, BaseLimit: mn.BaseLimit, Opaque: mn.Opaque}
	switch mn.Kind {
	case "file":
		n.Kind = kindFile
		if n.Opaque {
			return nil, errors.New("a file cannot be opaque")
		}
		if n.BaseLimit < 0 {
			return nil, fmt.Errorf("negative base limit %d", n.BaseLimit)
		}
		if n.Origin == "" && n.BaseLimit != 0 {
			return nil, errors.New("base limit without origin")
		}
		if n.Origin != "" {
			if err := checkMetaPath(n.Origin); err != nil || n.Origin == "/" {
				return nil, fmt.Errorf("origin %q: invalid path", n.Origin)
			}
		}
	case "dir":
		n.Kind = kindDir
		if n.Origin != "" || n.BaseLimit != 0 {
			return nil, errors.New("a directory has no origin")
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", mn.Kind)
	}
	return n, nil
}

// checkMetaPath accepts exactly the paths cleanPath produces.
func checkMetaPath(p string) error {
	c, err := cleanPath(p)
	if err != nil {
		return err
	}
	if c != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	return nil
}

// readMeta loads the meta file of dir; it returns (nil, nil) when there is none.
func readMeta(fsys durable.FS, dir string) (*state, error) {
	name := filepath.Join(dir, metaName)
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxMetaSize {
		return nil, fmt.Errorf("%s: %w: %d bytes, more than %d", name, ErrCorruptMeta, fi.Size(), maxMetaSize)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && len(b) == 0) {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	st, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}
