// Package rpc speaks ONC RPC version 2 (RFC 5531) as rekindle's NFS front needs it:
// record marking over TCP, strict decoding of call headers, and building replies.
//
// Vocabulary: a record is one RPC message on a stream, sent as one or more
// fragments, each led by a 4-byte mark (last-fragment bit and length). A call is a
// record whose header names a program, version and procedure; its arguments follow
// the header as XDR. Every decoder here treats its input as hostile: lengths are
// checked against what remains before anything is allocated, and a malformed input
// yields an error, never a panic.
package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Message types and protocol constants of RFC 5531.
const (
	MsgCall  = 0
	MsgReply = 1

	RPCVersion = 2

	replyAccepted = 0
	replyDenied   = 1

	rejectRPCMismatch = 0
	rejectAuthError   = 1
)

// Authentication flavors.
const (
	AuthNone  = 0
	AuthUnix  = 1
	AuthShort = 2
)

// MaxAuthBody is the largest credential or verifier body RFC 5531 allows.
const MaxAuthBody = 400

// AcceptStat is the status of an accepted reply.
type AcceptStat uint32

// Accepted reply statuses.
const (
	Success      AcceptStat = 0
	ProgUnavail  AcceptStat = 1
	ProgMismatch AcceptStat = 2
	ProcUnavail  AcceptStat = 3
	GarbageArgs  AcceptStat = 4
	SystemErr    AcceptStat = 5
)

// AuthStat says why a call's credentials were refused.
type AuthStat uint32

// Authentication error statuses.
const (
	AuthOK           AuthStat = 0
	AuthBadCred      AuthStat = 1
	AuthRejectedCred AuthStat = 2
	AuthBadVerf      AuthStat = 3
	AuthRejectedVerf AuthStat = 4
	AuthTooWeak      AuthStat = 5
)

var (
	// ErrGarbage means the bytes are not an RPC call at all; the stream cannot be
	// trusted any further and should be closed.
	ErrGarbage = errors.New("rpc: malformed call")
	// ErrRPCVersion means the call is well framed but asks for an RPC version
	// other than 2; answer it with RPCMismatchReply.
	ErrRPCVersion = errors.New("rpc: unsupported RPC version")
	// ErrRecordTooLarge means a record's fragments add up to more than allowed.
	ErrRecordTooLarge = errors.New("rpc: record too large")
)

// Auth is an opaque_auth: a flavor and its body.
type Auth struct {
	Flavor uint32
	Body   []byte
}

// Call is a decoded call header and its undecoded arguments.
type Call struct {
	XID  uint32
	Prog uint32
	Vers uint32
	Proc uint32
	Cred Auth
	Verf Auth
	// Args are the procedure's arguments; a sub-slice of the record.
	Args []byte
	// ArgsOffset is where Args start within the record.
	ArgsOffset int
}

// ParseCall decodes the call header at the start of rec. On ErrRPCVersion the
// returned Call carries the XID so the caller can reply. Credentials and verifier
// bodies longer than MaxAuthBody are garbage.
func ParseCall(rec []byte) (Call, error) {
	var c Call
	d := NewDecoder(rec)
	c.XID = d.Uint32()
	mtype := d.Uint32()
	if d.Err() != nil {
		return c, fmt.Errorf("%w: short header", ErrGarbage)
	}
	if mtype != MsgCall {
		return c, fmt.Errorf("%w: message type %d is not a call", ErrGarbage, mtype)
	}
	if v := d.Uint32(); d.Err() == nil && v != RPCVersion {
		return c, fmt.Errorf("%w: %d", ErrRPCVersion, v)
	}
	c.Prog = d.Uint32()
	c.Vers = d.Uint32()
	c.Proc = d.Uint32()
	c.Cred.Flavor = d.Uint32()
	c.Cred.Body = d.Opaque(MaxAuthBody)
	c.Verf.Flavor = d.Uint32()
	c.Verf.Body = d.Opaque(MaxAuthBody)
	if err := d.Err(); err != nil {
		return c, fmt.Errorf("%w: header: %v", ErrGarbage, err)
	}
	c.ArgsOffset = d.Offset()
	c.Args = rec[c.ArgsOffset:]
	return c, nil
}

// ReadRecord reads one record from r, joining its fragments. The record's total
// size (fragment marks included) may not exceed max; a larger record is refused
// with ErrRecordTooLarge before its body is read. The returned slice reuses buf
// when it is large enough.
func ReadRecord(r io.Reader, max int, buf []byte) ([]byte, error) {
	return AppendRecord(buf[:0], r, max)
}

// AppendRecord is ReadRecord appending the record to dst; on success the result
// is dst followed by the record. See RecordReader for limits beyond the size.
func AppendRecord(dst []byte, r io.Reader, max int) ([]byte, error) {
	rec, err := (&RecordReader{R: r, MaxSize: max}).Append(dst)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// Frame returns rec led by a single last-fragment mark, ready for one Write.
func Frame(rec []byte) []byte {
	out := make([]byte, 4+len(rec))
	binary.BigEndian.PutUint32(out, uint32(len(rec))|1<<31)
	copy(out[4:], rec)
	return out
}

// AcceptedReply starts an accepted reply with an AUTH_NONE verifier and the given
// status; the caller appends the procedure's results (or the mismatch range) to
// the returned encoder.
func AcceptedReply(xid uint32, stat AcceptStat) *Encoder {
	e := &Encoder{}
	e.Uint32(xid)
	e.Uint32(MsgReply)
	e.Uint32(replyAccepted)
	e.Uint32(AuthNone)
	e.Uint32(0)
	e.Uint32(uint32(stat))
	return e
}

// ProgMismatchReply tells the caller which versions of the program are served.
func ProgMismatchReply(xid, low, high uint32) []byte {
	e := AcceptedReply(xid, ProgMismatch)
	e.Uint32(low)
	e.Uint32(high)
	return e.Bytes()
}

// RPCMismatchReply refuses a call that is not RPC version 2.
func RPCMismatchReply(xid uint32) []byte {
	e := &Encoder{}
	e.Uint32(xid)
	e.Uint32(MsgReply)
	e.Uint32(replyDenied)
	e.Uint32(rejectRPCMismatch)
	e.Uint32(RPCVersion)
	e.Uint32(RPCVersion)
	return e.Bytes()
}

// AuthErrorReply refuses a call for its credentials.
func AuthErrorReply(xid uint32, stat AuthStat) []byte {
	e := &Encoder{}
	e.Uint32(xid)
	e.Uint32(MsgReply)
	e.Uint32(replyDenied)
	e.Uint32(rejectAuthError)
	e.Uint32(uint32(stat))
	return e.Bytes()
}

// Reply is a decoded reply header.
type Reply struct {
	XID uint32
	// Accepted is false for MSG_DENIED replies.
	Accepted bool
	// Stat is the accept status of an accepted reply.
	Stat AcceptStat
	// RejectStat is 0 (RPC_MISMATCH) or 1 (AUTH_ERROR) for a denied reply.
	RejectStat uint32
	// AuthStat is set for AUTH_ERROR denials.
	AuthStat AuthStat
	// Body holds what follows the header: results, or the mismatch range.
	Body []byte
}

// ParseReply decodes a reply record.
func ParseReply(rec []byte) (Reply, error) {
	var r Reply
	d := NewDecoder(rec)
	r.XID = d.Uint32()
	if t := d.Uint32(); d.Err() == nil && t != MsgReply {
		return r, fmt.Errorf("%w: message type %d is not a reply", ErrGarbage, t)
	}
	switch d.Uint32() {
	case replyAccepted:
		r.Accepted = true
		d.Uint32()            // verifier flavor
		d.Opaque(MaxAuthBody) // verifier body
		r.Stat = AcceptStat(d.Uint32())
	case replyDenied:
		r.RejectStat = d.Uint32()
		if r.RejectStat == rejectAuthError {
			r.AuthStat = AuthStat(d.Uint32())
		}
	default:
		return r, fmt.Errorf("%w: bad reply status", ErrGarbage)
	}
	if err := d.Err(); err != nil {
		return r, fmt.Errorf("%w: reply header: %v", ErrGarbage, err)
	}
	r.Body = rec[d.Offset():]
	return r, nil
}

// UnixCred is the body of an AUTH_UNIX credential.
type UnixCred struct {
	Stamp       uint32
	MachineName string
	UID, GID    uint32
	GIDs        []uint32
}

// ParseUnixCred decodes an AUTH_UNIX credential body.
func ParseUnixCred(b []byte) (UnixCred, error) { return parseUnixCred(b, true) }

// CheckUnixCred is ParseUnixCred's check alone: it allocates nothing (no
// machine name, no group list), for a server that checks every call's
// credential but needs its fields for few calls.
func CheckUnixCred(b []byte) error {
	_, err := parseUnixCred(b, false)
	return err
}

func parseUnixCred(b []byte, keep bool) (UnixCred, error) {
	var u UnixCred
	d := NewDecoder(b)
	u.Stamp = d.Uint32()
	if name := d.Opaque(255); keep {
		u.MachineName = string(name)
	}
	u.UID = d.Uint32()
	u.GID = d.Uint32()
	n := d.Uint32()
	if n > 16 {
		return u, fmt.Errorf("%w: %d auxiliary groups", ErrGarbage, n)
	}
	for i := uint32(0); i < n && d.Err() == nil; i++ {
		if gid := d.Uint32(); keep {
			u.GIDs = append(u.GIDs, gid)
		}
	}
	if err := d.Err(); err != nil {
		return u, err
	}
	if d.Remaining() != 0 {
		return u, fmt.Errorf("%w: trailing bytes in AUTH_UNIX credential", ErrGarbage)
	}
	return u, nil
}

// UnixCredBody encodes an AUTH_UNIX credential body.
func UnixCredBody(u UnixCred) []byte {
	e := &Encoder{}
	e.Uint32(u.Stamp)
	e.String(u.MachineName)
	e.Uint32(u.UID)
	e.Uint32(u.GID)
	e.Uint32(uint32(len(u.GIDs)))
	for _, g := range u.GIDs {
		e.Uint32(g)
	}
	return e.Bytes()
}

// CallRecord encodes a call header followed by args.
func CallRecord(xid, prog, vers, proc uint32, cred Auth, args []byte) []byte {
	e := &Encoder{}
	e.Uint32(xid)
	e.Uint32(MsgCall)
	e.Uint32(RPCVersion)
	e.Uint32(prog)
	e.Uint32(vers)
	e.Uint32(proc)
	e.Uint32(cred.Flavor)
	e.Opaque(cred.Body)
	e.Uint32(AuthNone)
	e.Uint32(0)
	e.Raw(args)
	return e.Bytes()
}
