//go:build !linux

package wal

import (
	"errors"
	"os"
)

// Only Linux has syncfs: elsewhere every WAL fsyncs its own segments.
const haveSyncfs = false

func syncfs(*os.File) error { return errors.New("syncfs is Linux only") }

func sameFileSystem(*os.File, string) bool { return false }
