package raftnode

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/raftproxy/raftproxy/snapshot"
)

// Backup returns a stored snapshot that holds every write committed before
// it was called, with its RDB file open for reading (the caller closes it).
// It is linearizable like a read: a ReadIndex round confirms the commit
// index with a quorum and waits until this node applied it; the newest
// snapshot at or past that point is reused, else one is made (as
// RAFT.DEBUG COMPACT does). The file stays readable while open even if the
// store purges it meanwhile.
func (n *Node) Backup(ctx context.Context) (snapshot.Meta, *os.File, error) {
	rw := n.StartRead()
	select {
	case <-rw.Ready():
	case <-ctx.Done():
		return snapshot.Meta{}, nil, fmt.Errorf("backup: waiting for the read index: %w", ctx.Err())
	}
	if err := rw.Err(); err != nil {
		return snapshot.Meta{}, nil, err
	}
	barrier := n.applier.applied.Load()
	// A snapshot found can be purged before it is opened, by two newer
	// ones; those qualify too, so looking again finds one.
	for range 3 {
		if m, f, err := n.openSnapshotFrom(barrier); err == nil || !errors.Is(err, snapshot.ErrNoSnapshot) {
			return m, f, err
		}
		if err := n.Compact(ctx); err != nil {
			return snapshot.Meta{}, nil, fmt.Errorf("backup: make a snapshot at index %d: %w", barrier, err)
		}
	}
	return snapshot.Meta{}, nil, fmt.Errorf("backup: no snapshot at or after index %d could be opened", barrier)
}

// openSnapshotFrom opens the newest stored snapshot at index min or later.
func (n *Node) openSnapshotFrom(min uint64) (snapshot.Meta, *os.File, error) {
	all, err := n.store.List()
	if err != nil {
		return snapshot.Meta{}, nil, err
	}
	for _, m := range all {
		if m.Index < min {
			break // newest first
		}
		f, err := os.Open(n.store.Path(m))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return snapshot.Meta{}, nil, fmt.Errorf("open snapshot %d: %w", m.Index, err)
		}
		return m, f, nil
	}
	return snapshot.Meta{}, nil, snapshot.ErrNoSnapshot
}
