package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
)

// KeepSegments is how many segment files Purge leaves, the newest ones,
// even once the WAL no longer needs them: etcd's default.
const KeepSegments = 5

// Purge deletes the oldest segment files of the WAL in dir beyond the
// newest keep, stopping at the first the open WAL still holds locked (those
// after a snapshot it has not released, ReleaseLockTo). It returns how many
// it deleted. etcd's fileutil.PurgeFile does the same on a timer; a process
// with many groups would wake for each every interval, so the node calls
// this once when it starts and again only after it releases segments.
func Purge(dir string, keep int) (int, error) {
	names, err := fileutil.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list wal segments in %s: %w", dir, err)
	}
	names = slices.DeleteFunc(names, func(s string) bool { return !strings.HasSuffix(s, ".wal") })
	purged := 0
	for ; purged < len(names)-keep; purged++ {
		path := filepath.Join(dir, names[purged])
		l, err := fileutil.TryLockFile(path, os.O_WRONLY, fileutil.PrivateFileMode)
		if errors.Is(err, fileutil.ErrLocked) {
			break // the WAL still reads or writes it, and all after it
		}
		if err != nil {
			return purged, fmt.Errorf("lock wal segment %s: %w", path, err)
		}
		rerr := os.Remove(path)
		cerr := l.Close()
		if rerr != nil {
			return purged, fmt.Errorf("remove wal segment %s: %w", path, rerr)
		}
		if cerr != nil {
			return purged, fmt.Errorf("unlock wal segment %s: %w", path, cerr)
		}
	}
	return purged, nil
}
