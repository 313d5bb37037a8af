package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

const haveSyncfs = true

// syncfs writes out and commits everything dirty on f's file system,
// flushing the device's cache, and reports the write-back errors seen on
// that file system since the last call through f.
func syncfs(f *os.File) error {
	for {
		err := unix.Syncfs(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// sameFileSystem reports whether dir is on the file system holding f.
func sameFileSystem(f *os.File, dir string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(dir, &b) != nil {
		return false
	}
	return a.Dev == b.Dev
}
