package backupjob_test

import (
	"os"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator/backupjob"
)

// FuzzParse feeds job definitions (YAML a user gives `job define`): Parse
// must not panic, and a definition it accepts has a name and is due again
// strictly after any time (a schedule never due, or always due, would stop
// the job or run it back to back).
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../testdata/jobs/nightly.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("name: j\nvcenter: {url: x}\nvms: [a]\ncron: '0 2 * * *'\n"))
	f.Add([]byte("name: j\nvcenter: {url: x}\nvms: [a]\ninterval: 7d\nretention: {keep_last: 3, keep_within: 2w}\n"))
	f.Add([]byte("name: j\nvcenter: {url: x}\ntags: ['a:b']\ncron: '@hourly'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := backupjob.Parse(b)
		if err != nil {
			return
		}
		if d.Name == "" || d.Schedule() == "" {
			t.Fatalf("accepted %q with name %q schedule %q", b, d.Name, d.Schedule())
		}
		from := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
		if next := d.Next(from); !next.After(from) {
			t.Fatalf("accepted %q: next run after %v is %v", b, from, next)
		}
	})
}
