package guestfs

import (
	"io"
	"log/slog"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// addLVM turns the LVM physical volumes of a point's disks into their
// logical volumes.
func addLVM(pt *repo.RestorePoint, l *layout, readers map[string]io.ReaderAt, log *slog.Logger) {
	for _, vols := range l.disks {
		for _, v := range vols {
			if v.Status == StatusLVM {
				v.Reason = "LVM2 physical volume: logical volumes are not read yet"
				v.Status = StatusUnsupported
			}
		}
	}
}
