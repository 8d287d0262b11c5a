package datastore

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/nfsd/rpc"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// maxFilesHandle is the longest file handle /files may give (issue 8, as
// for the other exports: ESXi keeps handles of up to 56 bytes).
const maxFilesHandle = 56

// plusEntry is one entry of a READDIRPLUS reply.
type plusEntry struct {
	name   string
	cookie uint64
	handle []byte
	size   uint64
}

// readdirplus asks for one page of dir's entries from cookie on (verf the
// verifier the previous page gave) and returns its entries ("." and ".."
// left out), the page's verifier and whether it was the last.
func (r *rawClient) readdirplus(dir []byte, cookie uint64, verf []byte, maxcount uint32) ([]plusEntry, []byte, bool) {
	r.t.Helper()
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.Uint64(cookie)
	v := make([]byte, 8) // a first page's verifier is zero
	copy(v, verf)
	e.Fixed(v)
	e.Uint32(maxcount)
	e.Uint32(maxcount)
	st, d := r.nfs3(17, e.Bytes())
	if st != nfsStatOK {
		r.t.Fatalf("READDIRPLUS from cookie %d: status %d", cookie, st)
	}
	if d.Bool() {
		d.Fixed(84)
	}
	next := d.Fixed(8)
	var out []plusEntry
	for d.Bool() {
		d.Uint64() // fileid
		var pe plusEntry
		pe.name = d.String(1024)
		pe.cookie = d.Uint64()
		if d.Bool() {
			attr := rpc.NewDecoder(d.Fixed(84))
			attr.Fixed(20) // type, mode, nlink, uid, gid
			pe.size = attr.Uint64()
		}
		if d.Bool() {
			pe.handle = d.Opaque(64)
		}
		if pe.name != "." && pe.name != ".." {
			out = append(out, pe)
		}
	}
	eof := d.Bool()
	if err := d.Err(); err != nil {
		r.t.Fatalf("READDIRPLUS reply: %v", err)
	}
	return out, next, eof
}

// read reads count bytes of fh at off.
func (r *rawClient) read(fh []byte, off uint64, count uint32) (uint32, []byte) {
	r.t.Helper()
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint64(off)
	e.Uint32(count)
	st, d := r.nfs3(6, e.Bytes())
	if st != nfsStatOK {
		return st, nil
	}
	if d.Bool() {
		d.Fixed(84)
	}
	d.Uint32() // count
	d.Bool()   // eof
	return st, d.Opaque(1 << 20)
}

// checkFilesHandles checks the file handles and directory cookies of
// /files across a restart of the service, through raw NFSv3 calls: every
// handle MOUNT, LOOKUP and READDIRPLUS give (down to the volume's big/ of
// tree, and each of its entries) is at most maxFilesHandle bytes; big/
// read in pages (hundreds of them) names each entry once with cookies
// rising; after the restart, with no MOUNT or LOOKUP, the old handles
// still name their files (GETATTR, a READ at an unaligned offset equal to
// the source), LOOKUP gives the same handle again, and a page asked from a
// cookie and verifier of before the restart lists the same entries.
func checkFilesHandles(t *testing.T, f *filesEnv, vol string, tree guestimg.Tree) {
	t.Helper()
	c := dialFrom(t, "127.0.0.1", f.svc.NFSAddr())
	st, root := c.mount("/files")
	if st != 0 {
		t.Fatalf("MNT /files: %d", st)
	}
	short := func(what string, fh []byte) {
		t.Helper()
		if len(fh) == 0 || len(fh) > maxFilesHandle {
			t.Fatalf("%s: a handle of %d bytes, want 1 to %d", what, len(fh), maxFilesHandle)
		}
	}
	short("/files", root)
	walk := func(c *rawClient, names ...string) []byte {
		t.Helper()
		fh := root
		for i, n := range names {
			var st uint32
			if st, fh = c.lookup(fh, n); st != nfsStatOK {
				t.Fatalf("LOOKUP %s: %d", strings.Join(names[:i+1], "/"), st)
			}
			short(strings.Join(names[:i+1], "/"), fh)
		}
		return fh
	}
	volPath := []string{"web01", f.pt.ID, f.pt.Disks[0].Name, vol}
	big := walk(c, append(volPath, "big")...)
	const file = "medium.bin"
	fileFH := walk(c, append(volPath, file)...)

	// big/ in pages of about 15 entries (go-nfs counts 512 bytes each).
	const maxcount = 8192
	var all []plusEntry
	type page struct {
		from uint64
		verf []byte
		ents []plusEntry
	}
	var pages []page
	var verf []byte
	for cookie, eof := uint64(0), false; !eof; {
		var ents []plusEntry
		ents, nextVerf, last := c.readdirplus(big, cookie, verf, maxcount)
		pages = append(pages, page{cookie, verf, ents})
		if len(ents) == 0 && !last {
			t.Fatalf("READDIRPLUS from cookie %d: no entry and not the end", cookie)
		}
		for _, e := range ents {
			short("big/"+e.name, e.handle)
			if len(all) > 0 && e.cookie <= all[len(all)-1].cookie {
				t.Fatalf("big/%s: cookie %d after %d", e.name, e.cookie, all[len(all)-1].cookie)
			}
			all = append(all, e)
		}
		if len(ents) > 0 {
			cookie = ents[len(ents)-1].cookie
		}
		verf, eof = nextVerf, last
	}
	if len(pages) < 100 {
		t.Fatalf("big/ took %d READDIRPLUS pages, want many", len(pages))
	}
	t.Logf("big/: %d entries in %d READDIRPLUS pages, handles of %d bytes", len(all), len(pages), len(all[0].handle))
	names := make([]string, len(all))
	for i, e := range all {
		names[i] = e.name
		if w := tree["big/"+e.name]; w != nil && e.size != uint64(w.Size) {
			t.Errorf("big/%s: READDIRPLUS gives %d bytes, want %d", e.name, e.size, w.Size)
		}
	}
	tree.CheckNames(t, "big", names)

	f.stop()
	f.start()
	c2 := dialFrom(t, "127.0.0.1", f.svc.NFSAddr())
	for _, h := range []struct {
		what string
		fh   []byte
	}{{"/files", root}, {"big/", big}, {file, fileFH}, {"big/" + all[0].name, all[0].handle}, {"big/" + all[len(all)-1].name, all[len(all)-1].handle}} {
		if st := c2.getattr(h.fh); st != nfsStatOK {
			t.Errorf("GETATTR of %s with its handle of before the restart: %d", h.what, st)
		}
	}
	want := tree.Bytes(file)
	const off, n = 12345, 70001 // unaligned, across chunk and block bounds
	if st, got := c2.read(fileFH, off, n); st != nfsStatOK || !bytes.Equal(got, want[off:off+n]) {
		t.Errorf("READ %s at %d with its handle of before the restart: status %d, %d bytes, equal %v", file, off, st, len(got), bytes.Equal(got, want[off:off+n]))
	}
	if again := walk(c2, append(volPath, file)...); !bytes.Equal(again, fileFH) {
		t.Errorf("LOOKUP %s after the restart: handle %x, was %x", file, again, fileFH)
	}
	mid := pages[len(pages)/2]
	got, _, _ := c2.readdirplus(big, mid.from, mid.verf, maxcount)
	if !slices.EqualFunc(got, mid.ents, func(a, b plusEntry) bool {
		return a.name == b.name && a.cookie == b.cookie && bytes.Equal(a.handle, b.handle)
	}) {
		t.Errorf("READDIRPLUS of big/ from cookie %d after the restart: %d entries from %q, was %d from %q", mid.from, len(got), firstName(got), len(mid.ents), firstName(mid.ents))
	}
}

func firstName(e []plusEntry) string {
	if len(e) == 0 {
		return ""
	}
	return e[0].name
}
