// Package storeapi is the datastore service's API as the orchestrator uses
// it: the requests and replies of publishing and discarding a session, the
// errors they match, and an HTTP client of the API. The orchestrator owns
// these types (a consumer owns the interface it needs); nfsd/datastore
// implements them in process and serves them over HTTP.
//
// Vocabulary: a session is a set of VM folders exported read-write over NFS
// as <server>:/rekindle/<session>/<vm>/, each a copy-on-write overlay of one
// restore point; publishing creates it, discarding withdraws the export and
// deletes what was written to it.
package storeapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/rekindle/rekindle/catalog"
)

// Export paths of the datastore service.
const (
	PointsExport   = "/points"   // read-only: /points/<vm>/<point>/
	SessionsExport = "/rekindle" // read-write: /rekindle/<session>/<vm>/
)

// PublishRequest asks for a session.
type PublishRequest struct {
	// ID attaches the export to an existing catalog session (the
	// orchestrator's); empty creates a new session.
	ID   string      `json:"id,omitempty"`
	Kind string      `json:"kind,omitempty"` // catalog session kind; default "vm"
	VMs  []PublishVM `json:"vms"`
	// Allow lists the client networks (CIDRs or addresses) that may mount the
	// session; default loopback.
	Allow []string `json:"allow,omitempty"`
	// Squash maps the session's NFS identities to nobody (65534): "root"
	// (uid 0) or "all"; default "none" (the server's --squash still applies).
	Squash string `json:"squash,omitempty"`
}

// PublishVM is one VM of a session.
type PublishVM struct {
	VM    string `json:"vm"`
	Point string `json:"point,omitempty"` // default: the VM's latest restore point
	// As is the folder name in the session (a test clone's new name);
	// default the VM's name.
	As string `json:"as,omitempty"`
}

// SessionInfo describes a published session.
type SessionInfo struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	State    string          `json:"state"`
	NFSPath  string          `json:"nfs_path"` // server:/rekindle/<id>
	Server   string          `json:"server"`
	Export   string          `json:"export"` // /rekindle/<id>
	Allow    []string        `json:"allow"`
	Squash   string          `json:"squash,omitempty"` // none when empty
	VMs      []SessionVMInfo `json:"vms"`
	Created  time.Time       `json:"created"`
	Error    string          `json:"error,omitempty"`
	Steps    []catalog.Step  `json:"steps,omitempty"`
	Exported bool            `json:"exported"`
	// Plan is what a restore session carries out, as
	// stored with it (`restore --dry-run --json` prints the same form):
	// each VM's host, startup group and readiness (ready.via, ready.marker).
	Plan json.RawMessage `json:"plan,omitempty"`
}

// SessionVMInfo is one VM folder of a session.
type SessionVMInfo struct {
	VM     string `json:"vm"`
	Point  string `json:"point"`
	Folder string `json:"folder"` // folder in the session, e.g. "web01"
	VMX    string `json:"vmx"`    // path of the .vmx inside the export
	Host   string `json:"host,omitempty"`
}

// Status is the server's state as GET /v1/status reports it.
type Status struct {
	Version  string   `json:"version"`
	NFS      string   `json:"nfs"`
	Portmap  string   `json:"portmap,omitempty"`
	Server   string   `json:"server"`
	Exports  []string `json:"exports"`
	Sessions int      `json:"sessions"`
	Cache    struct {
		Hits     int64 `json:"hits"`
		Misses   int64 `json:"misses"`
		Bytes    int64 `json:"bytes"`
		MaxBytes int64 `json:"max_bytes"`
	} `json:"cache"`
}

// ErrNotFound is returned (wrapped) for unknown sessions, VMs and points.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped) for requests that cannot be carried out as
// asked.
var ErrInvalid = errors.New("invalid request")

// NewSessionID returns a fresh session id, "rk-" and 8 hex digits: short,
// because it names a datastore and a folder in the hypervisor's inventory.
func NewSessionID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "rk-" + hex.EncodeToString(b)
}
