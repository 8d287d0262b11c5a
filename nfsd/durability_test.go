package nfsd

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	nfs "github.com/willscott/go-nfs"
)

// syncCountingFS counts Sync calls on the files it opens for writing.
type syncCountingFS struct {
	billy.Filesystem
	syncs atomic.Int32
}

type countingFile struct {
	billy.File
	fs *syncCountingFS
}

func (f *countingFile) Sync() error {
	f.fs.syncs.Add(1)
	return nil
}

func (fs *syncCountingFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	f, err := fs.Filesystem.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &countingFile{File: f, fs: fs}, nil
}

func (fs *syncCountingFS) Open(name string) (billy.File, error) {
	return fs.OpenFile(name, os.O_RDONLY, 0)
}

func TestWritesAreSyncedBeforeTheReply(t *testing.T) {
	for _, unsafe := range []bool{false, true} {
		dir, _ := exportDir(t)
		fs := &syncCountingFS{Filesystem: osfs.New(dir)}
		ts := startServer(t, Config{StateDir: t.TempDir(), Unsafe: unsafe}, Export{Path: "/rekindle", FS: fs, ID: 7})
		n := newNFSClient(t, ts.Addr())
		fh := n.mustLookup(n.mustMount("/rekindle"), "hello.txt")
		for i := 0; i < 3; i++ {
			if st, _ := n.call(procWrite, writeArgs(fh, uint64(i), []byte("W"))); st != nfs.NFSStatusOk {
				t.Fatalf("WRITE: %v", st)
			}
		}
		got := fs.syncs.Load()
		if !unsafe && got != 3 {
			t.Errorf("3 WRITEs made %d syncs, want 3", got)
		}
		if unsafe && got != 0 {
			t.Errorf("Unsafe server synced %d times", got)
		}
	}
}

func TestSyncReachesTheOSFileBehindOsfs(t *testing.T) {
	fs := osfs.New(t.TempDir())
	f, err := fs.Create("x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(interface{ Sync() error }); ok {
		t.Log("osfs file has Sync itself")
	}
	s := syncerOf(f)
	if s == nil {
		t.Fatal("no Sync found behind go-billy's chroot file")
	}
	if err := s(); err != nil {
		t.Fatal(err)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestMetrics(t *testing.T) {
	dir, exp := exportDir(t)
	if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ts := startServer(t, Config{StateDir: t.TempDir(), Registry: reg}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	fh := n.mustLookup(root, "data")
	n.read(fh, 0, 4096)
	n.read(fh, 4096, 4096)
	n.call(procWrite, writeArgs(fh, 0, make([]byte, 300)))
	n.getattr([]byte("bogus"))
	n.mount("/nope")

	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rekindle_nfs_calls_total", map[string]string{"proc": "read"}, 2},
		{"rekindle_nfs_calls_total", map[string]string{"proc": "mount.mnt"}, 2},
		{"rekindle_nfs_call_duration_seconds", map[string]string{"proc": "write"}, 1},
		{"rekindle_nfs_read_bytes_total", nil, 5000},
		{"rekindle_nfs_write_bytes_total", nil, 300},
		{"rekindle_nfs_connections", nil, 1},
		{"rekindle_nfs_refused_total", map[string]string{"reason": "handle"}, 1},
		{"rekindle_nfs_refused_total", map[string]string{"reason": "export"}, 1},
	}
	// A call's metrics are recorded once its reply has left: wait for them.
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range checks {
		got := metricValue(t, reg, c.name, c.labels)
		for got != c.want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			got = metricValue(t, reg, c.name, c.labels)
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// A second server on the same registry is refused, not a panic.
	if _, err := New(Config{Listen: "127.0.0.1:0", Registry: reg}); err == nil {
		t.Error("a second server registered the same metrics")
	}
}
