package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCallRoundTrip(t *testing.T) {
	cred := Auth{Flavor: AuthUnix, Body: UnixCredBody(UnixCred{Stamp: 9, MachineName: "esx01", UID: 0, GID: 0, GIDs: []uint32{1, 2}})}
	rec := CallRecord(42, 100003, 3, 6, cred, []byte{1, 2, 3, 4})
	c, err := ParseCall(rec)
	if err != nil {
		t.Fatal(err)
	}
	if c.XID != 42 || c.Prog != 100003 || c.Vers != 3 || c.Proc != 6 || !bytes.Equal(c.Args, []byte{1, 2, 3, 4}) {
		t.Fatalf("ParseCall = %+v", c)
	}
	u, err := ParseUnixCred(c.Cred.Body)
	if err != nil || u.MachineName != "esx01" || len(u.GIDs) != 2 {
		t.Fatalf("ParseUnixCred = %+v, %v", u, err)
	}
}

func TestParseCallRejects(t *testing.T) {
	good := CallRecord(1, 100003, 3, 0, Auth{}, nil)
	rpcv3 := append([]byte{}, good...)
	binary.BigEndian.PutUint32(rpcv3[8:], 3)
	reply := append([]byte{}, good...)
	binary.BigEndian.PutUint32(reply[4:], MsgReply)
	longCred := CallRecord(1, 100003, 3, 0, Auth{Flavor: 1, Body: make([]byte, MaxAuthBody+4)}, nil)
	lyingCred := append([]byte{}, good...)
	binary.BigEndian.PutUint32(lyingCred[28:], 200) // cred length past the end
	for name, c := range map[string]struct {
		rec  []byte
		want error
	}{
		"empty":         {nil, ErrGarbage},
		"short":         {good[:20], ErrGarbage},
		"rpc version 3": {rpcv3, ErrRPCVersion},
		"a reply":       {reply, ErrGarbage},
		"long cred":     {longCred, ErrGarbage},
		"lying cred":    {lyingCred, ErrGarbage},
	} {
		if _, err := ParseCall(c.rec); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestReadRecordFragments(t *testing.T) {
	var in bytes.Buffer
	in.Write([]byte{0, 0, 0, 3, 'a', 'b', 'c'})
	in.Write([]byte{0x80, 0, 0, 2, 'd', 'e'})
	rec, err := ReadRecord(&in, 100, nil)
	if err != nil || string(rec) != "abcde" {
		t.Fatalf("ReadRecord = %q, %v", rec, err)
	}
	if _, err := ReadRecord(&in, 100, nil); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
	if _, err := ReadRecord(bytes.NewReader([]byte{0x80, 0, 1, 0}), 100, nil); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	// Many empty non-last fragments count against the limit too.
	if _, err := ReadRecord(bytes.NewReader(make([]byte, 1000)), 100, nil); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("empty fragments: %v", err)
	}
	if _, err := ReadRecord(bytes.NewReader([]byte{0x80, 0, 0, 8, 1}), 100, nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
}

func TestDecoderBounds(t *testing.T) {
	d := NewDecoder([]byte{0, 0, 0, 5, 'a', 'b'})
	if d.Opaque(100) != nil || !errors.Is(d.Err(), ErrShort) {
		t.Fatalf("opaque past the end: %v", d.Err())
	}
	d = NewDecoder([]byte{0xff, 0xff, 0xff, 0xff})
	if d.Opaque(1<<30) != nil || !errors.Is(d.Err(), ErrTooLong) {
		t.Fatalf("4 GiB opaque: %v", d.Err())
	}
	d = NewDecoder([]byte{0, 0, 0, 0})
	if b := d.Opaque(10); b == nil || len(b) != 0 || d.Err() != nil {
		t.Fatalf("empty opaque: %v %v", b, d.Err())
	}
}

// FuzzRPCCall feeds arbitrary bytes through everything the front does with a
// client's stream before it trusts it: record marking, the call header, AUTH_UNIX
// credentials, and the reply builders. None of it may panic or allocate beyond
// the record limit.
func FuzzRPCCall(f *testing.F) {
	cred := Auth{Flavor: AuthUnix, Body: UnixCredBody(UnixCred{MachineName: "h", GIDs: []uint32{0}})}
	f.Add(Frame(CallRecord(1, 100003, 3, 1, cred, []byte{0, 0, 0, 20})))
	f.Add(Frame(CallRecord(2, 100005, 3, 1, Auth{}, []byte{0, 0, 0, 1, '/', 0, 0, 0})))
	f.Add(Frame(CallRecord(3, 100000, 2, 3, Auth{}, make([]byte, 16))))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 1, 0x80, 0, 0, 4, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			rec, err := ReadRecord(r, 1<<16, nil)
			if err != nil {
				return
			}
			if len(rec) > 1<<16 {
				t.Fatalf("record of %d bytes passed a %d limit", len(rec), 1<<16)
			}
			c, err := ParseCall(rec)
			if errors.Is(err, ErrRPCVersion) {
				RPCMismatchReply(c.XID)
				continue
			}
			if err != nil {
				continue
			}
			if len(c.Cred.Body) > MaxAuthBody || len(c.Verf.Body) > MaxAuthBody {
				t.Fatalf("auth body over the limit")
			}
			if c.ArgsOffset+len(c.Args) != len(rec) {
				t.Fatalf("args do not end the record")
			}
			if c.Cred.Flavor == AuthUnix {
				_, perr := ParseUnixCred(c.Cred.Body)
				if cerr := CheckUnixCred(c.Cred.Body); (cerr == nil) != (perr == nil) {
					t.Fatalf("CheckUnixCred says %v where ParseUnixCred says %v", cerr, perr)
				}
			}
			reply := AcceptedReply(c.XID, Success).Bytes()
			if pr, err := ParseReply(reply); err != nil || pr.XID != c.XID {
				t.Fatalf("reply to %d does not parse: %v", c.XID, err)
			}
		}
	})
}

// TestCheckUnixCred: CheckUnixCred refuses what ParseUnixCred refuses
// (FuzzRPCCall compares them on any input) and allocates nothing.
func TestCheckUnixCred(t *testing.T) {
	good := UnixCredBody(UnixCred{Stamp: 9, MachineName: "esx01", UID: 5, GID: 6, GIDs: []uint32{1, 2}})
	bad := [][]byte{
		good[:len(good)-2], // cut
		append(append([]byte{}, good...), 0, 0, 0, 0),                 // trailing bytes
		UnixCredBody(UnixCred{MachineName: strings.Repeat("m", 256)}), // name over 255
		UnixCredBody(UnixCred{GIDs: make([]uint32, 17)}),              // 17 groups
	}
	if err := CheckUnixCred(good); err != nil {
		t.Fatalf("CheckUnixCred(good) = %v", err)
	}
	for i, b := range bad {
		_, perr := ParseUnixCred(b)
		if cerr := CheckUnixCred(b); cerr == nil || perr == nil {
			t.Errorf("credential %d: CheckUnixCred %v, ParseUnixCred %v; want both to refuse it", i, cerr, perr)
		}
	}
	if n := testing.AllocsPerRun(100, func() { CheckUnixCred(good) }); n != 0 {
		t.Errorf("CheckUnixCred allocates %.0f times", n)
	}
}
