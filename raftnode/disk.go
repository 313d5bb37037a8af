package raftnode

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
)

// A full disk. The WAL writes into preallocated segments, so an append
// rarely needs new space, but cutting the next segment needs a whole one.
// A write that fails half-way leaves a WAL the node cannot go on with; so
// the Ready loop checks the free space of the WAL's file system before it
// persists anything, and while it is below Config.MinFreeDisk it waits,
// having written nothing: no acknowledged write can be lost and the WAL
// stays whole. Waiting, it sends nothing either (a follower's answers
// follow its fsync) and ticks no clock, so the others carry on without it
// and it does not campaign; its own clients get ErrDiskFull at once rather
// than a timeout. Once space is back it persists the Ready it held and
// catches up. A write that fails anyway (space taken by something else
// between the check and the write) stops the node, and the Host restarts
// it from its data directory once it can (host.go).

// ErrDiskFull is the error of requests made while the node waits for disk
// space; errors.Is matches every *DiskFullError.
var ErrDiskFull = errors.New("the disk holding the raft log is full")

// DiskFullError says which directory lacks space, and how much.
type DiskFullError struct {
	Dir        string
	Free, Need uint64
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("the disk holding %s has %d MiB free, less than the %d MiB the raft log needs; this node writes nothing until there is more (the other nodes serve meanwhile)",
		e.Dir, e.Free>>20, e.Need>>20)
}

// Is makes errors.Is(err, ErrDiskFull) true.
func (e *DiskFullError) Is(target error) bool { return target == ErrDiskFull }

type diskGuard struct {
	full atomic.Bool
	free atomic.Uint64
	// checked is when free was measured (Ready loop only).
	checked time.Time
}

// freeBytes is what an unprivileged writer may still use on dir's file
// system.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// waitDisk returns once the WAL's file system has Config.MinFreeDisk free,
// or ErrStopped.
func (n *Node) waitDisk() error {
	need := n.cfg.MinFreeDisk
	if need == 0 {
		return nil
	}
	// Plenty measured a moment ago needs no new measure: the check costs a
	// system call on every write otherwise.
	if time.Since(n.disk.checked) < 100*time.Millisecond && n.disk.free.Load() >= 2*need {
		return nil
	}
	dir := walDir(n.cfg.DataDir)
	for {
		free, err := freeBytes(dir)
		n.disk.checked = time.Now()
		if err != nil {
			// Not knowing is no reason to stop: the write itself will tell.
			n.log.Warn("cannot tell the raft log's free disk space", "err", err)
			return nil
		}
		n.disk.free.Store(free)
		if free >= need {
			if n.disk.full.Swap(false) {
				n.log.Info("disk space is back; persisting and catching up", "dir", dir, "free_mib", free>>20)
			}
			return nil
		}
		if !n.disk.full.Swap(true) {
			n.log.Error("the raft log's disk is full: this node writes nothing, answers its clients MISCONF, and resumes by itself once space is freed",
				"dir", dir, "free_mib", free>>20, "need_mib", need>>20)
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-n.stopc:
			return ErrStopped
		}
	}
}

// DiskFull reports whether the node waits for disk space, with the error
// its clients get.
func (n *Node) DiskFull() (bool, error) {
	if !n.disk.full.Load() {
		return false, nil
	}
	return true, &DiskFullError{Dir: walDir(n.cfg.DataDir), Free: n.disk.free.Load(), Need: n.cfg.MinFreeDisk}
}

// DiskFree is the raft log's free disk space as last measured (0 before
// the first write).
func (n *Node) DiskFree() uint64 { return n.disk.free.Load() }
