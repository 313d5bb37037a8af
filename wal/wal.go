// Package wal is the durable Raft log of one node: the etcd WAL, plus the
// node's identity stored in the WAL's metadata record.
package wal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// Metadata is the identity a node keeps for its whole life.
type Metadata struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID uint64 `json:"cluster_id"`
}

// Log is an open WAL. It is used by one goroutine (the raft Ready loop).
type Log struct {
	w   *wal.WAL
	Dir string
}

// Exist reports whether dir holds a WAL, i.e. whether this node already
// belongs to a cluster.
func Exist(dir string) bool { return wal.Exist(dir) }

// Create makes a new WAL in dir recording md.
func Create(lg *zap.Logger, dir string, md Metadata) (*Log, error) {
	b, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encode wal metadata: %w", err)
	}
	w, err := wal.Create(lg, dir, b)
	if err != nil {
		return nil, fmt.Errorf("create wal in %s: %w", dir, err)
	}
	return &Log{w: w, Dir: dir}, nil
}

// State is what a WAL holds.
type State struct {
	Meta      Metadata
	HardState *raftpb.HardState
	Entries   []*raftpb.Entry
}

// Open opens the WAL in dir positioned after snap (nil for the start of the
// log) and reads all of it. A torn tail, left by a crash in the middle of a
// write, is repaired once: those bytes were never fsynced, so nothing that
// was acknowledged is lost by cutting them.
func Open(lg *zap.Logger, dir string, snap *walpb.Snapshot) (*Log, State, error) {
	if snap == nil {
		snap = &walpb.Snapshot{}
	}
	repaired := false
	for {
		w, err := wal.Open(lg, dir, snap)
		if err != nil {
			return nil, State{}, fmt.Errorf("open wal in %s: %w", dir, err)
		}
		md, hs, ents, err := w.ReadAll()
		if err != nil {
			w.Close()
			if errors.Is(err, io.ErrUnexpectedEOF) && !repaired {
				if !wal.Repair(lg, dir) {
					return nil, State{}, fmt.Errorf("repair torn wal in %s: %w", dir, err)
				}
				lg.Warn("repaired torn wal tail", zap.String("dir", dir))
				repaired = true
				continue
			}
			return nil, State{}, fmt.Errorf("read wal in %s: %w", dir, err)
		}
		st := State{HardState: hs, Entries: ents}
		if err := json.Unmarshal(md, &st.Meta); err != nil {
			w.Close()
			return nil, State{}, fmt.Errorf("decode wal metadata in %s: %w", dir, err)
		}
		return &Log{w: w, Dir: dir}, st, nil
	}
}

// Save appends entries and the hard state. The etcd WAL fsyncs when raft
// says the write must be durable, so one call is one group commit.
func (l *Log) Save(hs *raftpb.HardState, ents []*raftpb.Entry) error {
	if hs == nil {
		hs = &raftpb.HardState{}
	}
	if err := l.w.Save(hs, ents); err != nil {
		return fmt.Errorf("save %d entries to wal: %w", len(ents), err)
	}
	return nil
}

// Close closes the WAL.
func (l *Log) Close() error { return l.w.Close() }

// SaveSnapshot records that a snapshot at snap's index exists, so that the
// WAL can later be opened from it. The snapshot file must be durable first.
func (l *Log) SaveSnapshot(snap *walpb.Snapshot) error {
	if err := l.w.SaveSnapshot(snap); err != nil {
		return fmt.Errorf("record snapshot at index %d in wal: %w", snap.GetIndex(), err)
	}
	return nil
}

// ReleaseLockTo lets segments wholly before index be purged.
func (l *Log) ReleaseLockTo(index uint64) error {
	if err := l.w.ReleaseLockTo(index); err != nil {
		return fmt.Errorf("release wal segments before index %d: %w", index, err)
	}
	return nil
}

// ValidSnapshots lists the snapshots the WAL in dir records, oldest first,
// among which a node may restart from.
func ValidSnapshots(lg *zap.Logger, dir string) ([]*walpb.Snapshot, error) {
	snaps, err := wal.ValidSnapshotEntries(lg, dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots recorded in wal %s: %w", dir, err)
	}
	return snaps, nil
}
