// Package fsutil holds the one way raftproxy makes a file or a directory
// entry durable.
package fsutil

import (
	"fmt"
	"os"
)

// Sync fsyncs the file or directory at path. A file written and renamed
// into place is durable only once both it and its directory are synced.
func Sync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}
