package overlay

import (
	"bytes"
	"testing"
)

func sampleMeta(t testing.TB) []byte {
	st := newState("session-7", DefaultBlockSize)
	st.nextSeq = 4
	st.nodes["/"] = &node{ID: 1, Kind: kindDir, Mode: 0o755, MTime: 5}
	st.nodes["/web01"] = &node{ID: 2, Kind: kindDir, Mode: 0o755, MTime: 6, Opaque: true}
	st.nodes["/web01/disk-flat.vmdk"] = &node{ID: 3, Kind: kindFile, Mode: 0o644, UID: 1, GID: 2,
		MTime: 7, Origin: "/old/disk-flat.vmdk", BaseLimit: 1 << 30}
	st.nodes["/web01/vmware.log"] = &node{ID: 4, Kind: kindFile, Mode: 0o600, MTime: 8}
	st.whiteouts["/old"] = struct{}{}
	b, err := encodeMeta(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeMeta feeds the metadata decoder what a damaged disk could hold:
// it must answer with an error, never a panic, and what it accepts must
// survive a round trip.
func FuzzDecodeMeta(f *testing.F) {
	good := sampleMeta(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(metaHeader))
	_, body, _ := bytes.Cut(good[len(metaHeader):], []byte("\n"))
	f.Add(body)
	f.Add([]byte(`{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file"},{"path":"/a/b","id":"0000000000000002","kind":"file"}]}`))
	f.Add([]byte(`{"version":1,"blockSize":65536,"nodes":[{"path":"/../a","id":"00000000000000zz","kind":"dir","baseLimit":-1}],"whiteouts":["/"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The checked path, and the body decoder behind the checksum
		// (which random bytes would rarely get past).
		for _, decode := range []func([]byte) (*state, error){decodeMeta, decodeMetaBody} {
			st, err := decode(b)
			if err != nil {
				continue
			}
			enc, err := encodeMeta(st)
			if err != nil {
				t.Fatal(err)
			}
			st2, err := decodeMeta(enc)
			if err != nil {
				t.Fatalf("re-decoding accepted metadata: %v", err)
			}
			enc2, _ := encodeMeta(st2)
			if !bytes.Equal(enc, enc2) {
				t.Fatal("round trip changed the metadata")
			}
		}
	})
}

func TestDecodeMetaRejects(t *testing.T) {
	good := sampleMeta(t)
	if _, err := decodeMeta(good); err != nil {
		t.Fatalf("sample: %v", err)
	}
	_, body, _ := bytes.Cut(good[len(metaHeader):], []byte("\n"))
	if _, err := decodeMetaBody(body); err != nil {
		t.Fatalf("sample body: %v", err)
	}
	bad := map[string]string{
		"version":         `{"version":3,"blockSize":65536}`,
		"block size":      `{"version":1,"blockSize":1000}`,
		"unknown field":   `{"version":1,"blockSize":65536,"extra":1}`,
		"unclean path":    `{"version":1,"blockSize":65536,"nodes":[{"path":"/a/../b","id":"0000000000000001","kind":"file"}]}`,
		"relative path":   `{"version":1,"blockSize":65536,"nodes":[{"path":"a","id":"0000000000000001","kind":"file"}]}`,
		"zero id":         `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000000","kind":"file"}]}`,
		"duplicate id":    `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file"},{"path":"/b","id":"0000000000000001","kind":"file"}]}`,
		"duplicate path":  `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file"},{"path":"/a","id":"0000000000000002","kind":"file"}]}`,
		"kind":            `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"fifo"}]}`,
		"mode":            `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file","mode":2147484141}]}`,
		"limit no origin": `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file","baseLimit":5}]}`,
		"negative limit":  `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file","origin":"/a","baseLimit":-5}]}`,
		"node in file":    `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file"},{"path":"/a/b","id":"0000000000000002","kind":"file"}]}`,
		"root file":       `{"version":1,"blockSize":65536,"nodes":[{"path":"/","id":"0000000000000001","kind":"file"}]}`,
		"whiteout root":   `{"version":1,"blockSize":65536,"whiteouts":["/"]}`,
		"whiteout node":   `{"version":1,"blockSize":65536,"nodes":[{"path":"/a","id":"0000000000000001","kind":"file"}],"whiteouts":["/a"]}`,
		"trailing":        `{"version":1,"blockSize":65536} {}`,
	}
	for name, body := range bad {
		if _, err := decodeMetaBody([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
