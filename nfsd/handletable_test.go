package nfsd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/internal/durable"
)

func TestHandleTableSurvivesReopenAndTornTail(t *testing.T) {
	file := filepath.Join(t.TempDir(), "h", "export-1.log")
	tb, err := openHandleTable(durable.OS(), file)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint64{}
	for _, p := range []string{"/", "/a", "/a/b", "/c"} {
		id, err := tb.idFor(p)
		if err != nil {
			t.Fatal(err)
		}
		ids[p] = id
	}
	if again, _ := tb.idFor("/a"); again != ids["/a"] {
		t.Fatal("idFor is not stable within a run")
	}
	tb.forget(ids["/c"])
	if err := tb.Sync(); err != nil {
		t.Fatal(err)
	}
	tb.Close()

	// A torn half record at the end is cut off.
	f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(encodeRecord(opAdd, 99, "/torn")[:9])
	f.Close()

	tb, err = openHandleTable(durable.OS(), file)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for _, p := range []string{"/", "/a", "/a/b"} {
		if got, ok := tb.pathOf(ids[p]); !ok || got != p {
			t.Errorf("after reopen, id of %s names %q, %v", p, got, ok)
		}
	}
	if _, ok := tb.pathOf(ids["/c"]); ok {
		t.Error("a forgotten id came back")
	}
	if _, ok := tb.pathOf(99); ok {
		t.Error("the torn record was applied")
	}
	// Appending after the cut works and the id of a known path is unchanged.
	if id, _ := tb.idFor("/a/b"); id != ids["/a/b"] {
		t.Error("id changed after reopen")
	}
}

func TestHandleTableCollisionsAndCompaction(t *testing.T) {
	file := filepath.Join(t.TempDir(), "export-2.log")
	tb, err := openHandleTable(durable.OS(), file)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := tb.idFor("/x")
	// Pretend another path already holds the id "/y" hashes to.
	tb.forget(first)
	idY, _ := tb.idFor("/y")
	tb.mu.Lock()
	delete(tb.byID, idY)
	delete(tb.byPath, "/y")
	tb.byID[idY] = "/other"
	tb.byPath["/other"] = idY
	tb.mu.Unlock()
	moved, _ := tb.idFor("/y")
	if moved == idY {
		t.Fatal("a colliding path got a taken id")
	}
	for i := 0; i < compactAfter; i++ {
		id, _ := tb.idFor("/churn")
		tb.forget(id)
	}
	tb.Close()
	before, _ := os.Stat(file)
	tb, err = openHandleTable(durable.OS(), file)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	after, _ := os.Stat(file)
	if after.Size() >= before.Size() {
		t.Errorf("log not compacted: %d bytes, then %d", before.Size(), after.Size())
	}
	if p, ok := tb.pathOf(moved); !ok || p != "/y" {
		t.Errorf("after compaction the moved id names %q, %v", p, ok)
	}
}
