package partition

import (
	"bytes"
	"testing"
)

// FuzzRead reads arbitrary bytes as a partition table: no panic, and every
// partition it reports lies inside the disk unless marked truncated.
func FuzzRead(f *testing.F) {
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Start < 0 || p.Size < 0 || (!p.Truncated && p.Start+p.Size > int64(len(b))) {
				t.Fatalf("%s: %d+%d outside the %d-byte disk", p.Name, p.Start, p.Size, len(b))
			}
		}
	})
}
