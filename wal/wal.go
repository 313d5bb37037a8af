// Package wal is the durable Raft log of one node: the etcd WAL, plus the
// node's identity stored in the WAL's metadata record.
package wal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/raftproxy/raftproxy/internal/fsutil"
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
	// A marker left by an earlier WAL in this place says nothing about this one.
	if err := removeMarker(dir); err != nil {
		w.Close()
		return nil, err
	}
	return &Log{w: w, Dir: dir}, nil
}

// State is what a WAL holds.
type State struct {
	Meta      Metadata
	HardState *raftpb.HardState
	Entries   []*raftpb.Entry
	// Repaired reports that a torn tail was cut off the last segment, by
	// this Open or an earlier one, and ClearRepaired has not been called
	// since. A crash in the middle of a write leaves only bytes that were
	// never fsynced, but a disk that lied (or lost a tail of fsynced data)
	// looks the same: records this node had acknowledged may be gone, so it
	// must not trust its own log for elections (see raftnode's quarantine)
	// until the cluster has repaired it. The fact is kept in a marker file
	// next to the WAL (written before the repair), so a node that restarts
	// again before that still knows.
	Repaired bool
}

// markerPath is the file that records an unresolved repair of the WAL in dir.
func markerPath(dir string) string { return filepath.Clean(dir) + ".repaired" }

// writeMarker durably records that the WAL in dir is about to be repaired.
func writeMarker(dir string, cause error) error {
	path := markerPath(dir)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record wal repair: %w", err)
	}
	_, err = fmt.Fprintf(f, "wal tail cut off at %s (%v); this node takes no part in elections until a newer leader has repaired its log\n",
		time.Now().UTC().Format(time.RFC3339Nano), cause)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = fsutil.Sync(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("record wal repair in %s: %w", path, err)
	}
	return nil
}

func removeMarker(dir string) error {
	err := os.Remove(markerPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = fsutil.Sync(filepath.Dir(markerPath(dir)))
	}
	if err != nil {
		return fmt.Errorf("clear wal repair marker: %w", err)
	}
	return nil
}

// ClearRepaired forgets a repair reported by State.Repaired: the log has
// been repaired by the cluster, and later restarts are ordinary.
func (l *Log) ClearRepaired() error { return removeMarker(l.Dir) }

// Open opens the WAL in dir positioned after snap (nil for the start of the
// log) and reads all of it. A torn tail is repaired once, and State.Repaired
// says so: the records cut were never fsynced if the tail was torn by a
// crash, but they may have been (and acknowledged) if the disk lost them.
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
				// The marker goes first: a crash after the repair and
				// before the marker would leave a log that looks intact.
				if merr := writeMarker(dir, err); merr != nil {
					return nil, State{}, merr
				}
				if !wal.Repair(lg, dir) {
					return nil, State{}, fmt.Errorf("repair torn wal in %s: %w", dir, err)
				}
				lg.Warn("repaired torn wal tail", zap.String("dir", dir))
				repaired = true
				continue
			}
			return nil, State{}, fmt.Errorf("read wal in %s: %w", dir, err)
		}
		st := State{HardState: hs, Entries: ents, Repaired: repaired}
		if !repaired {
			if _, err := os.Stat(markerPath(dir)); err == nil {
				st.Repaired = true
			} else if !errors.Is(err, os.ErrNotExist) {
				w.Close()
				return nil, State{}, fmt.Errorf("check wal repair marker: %w", err)
			}
		}
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

// Rename moves a WAL made by Create in from (a directory next to to) into
// to, atomically: a node whose WAL is built in more than one step (a seeded
// cluster's snapshot record and hard state) never leaves a half-made WAL
// that would look like a cluster. A repair marker left in to's place by an
// earlier WAL says nothing about this one and is removed first.
func Rename(from, to string) error {
	if err := removeMarker(to); err != nil {
		return err
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("move wal %s to %s: %w", from, to, err)
	}
	if err := fsutil.Sync(filepath.Dir(to)); err != nil {
		return fmt.Errorf("fsync %s: %w", filepath.Dir(to), err)
	}
	return nil
}
