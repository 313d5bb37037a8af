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
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/raftproxy/raftproxy/internal/fsutil"
)

// Metadata is the identity a node keeps for its whole life.
type Metadata struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID uint64 `json:"cluster_id"`
}

// Log is an open WAL. The raft Ready loop saves to it; a snapshot's
// goroutine records snapshots and releases segments.
type Log struct {
	w   *wal.WAL
	Dir string
	// mu orders the calls into the etcd WAL, which run on different
	// goroutines: the switch to the shared sync against the calls that read
	// the no-fsync setting (Save, SaveSnapshot, Sync, Close), and Sync,
	// which takes no lock of the etcd WAL's, against ReleaseLockTo.
	mu sync.Mutex
	// syncer, when set, is the process's shared sync (ShareSync); shared
	// says this WAL has switched to it and no longer fsyncs by itself.
	syncer *Syncer
	shared bool
	// state is the hard state last saved, to tell the saves that must be
	// durable (raft.MustSync) as the etcd WAL does.
	state *raftpb.HardState
}

// ShareSync lets the WAL make its saves durable through s, with the other
// WALs of the process, once more than one shares it (Syncer). It is called
// before the WAL is used, by its user; a nil s, or a WAL on another file
// system than s's, changes nothing.
func (l *Log) ShareSync(s *Syncer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s != nil && l.syncer == nil && s.attach(l.Dir) {
		l.syncer = s
	}
}

// useShared switches the WAL to its Syncer once the Syncer is crowded; the
// caller holds mu. The etcd WAL has no way back, nor needs one. Everything
// saved before was synced by the etcd WAL itself.
func (l *Log) useShared() bool {
	if !l.shared && l.syncer != nil && l.syncer.crowded() {
		l.w.SetUnsafeNoFsync()
		l.shared = true
	}
	return l.shared
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
// So is a log broken where its newest segment begins (setAsideNewest).
func Open(lg *zap.Logger, dir string, snap *walpb.Snapshot) (*Log, State, error) {
	if snap == nil {
		snap = &walpb.Snapshot{}
	}
	repaired, tornFixed := false, false
	var restore func() error // puts a segment set aside back
	fail := func(err error) (*Log, State, error) {
		if restore != nil {
			if rerr := restore(); rerr != nil {
				return nil, State{}, errors.Join(err, rerr)
			}
		}
		return nil, State{}, err
	}
	for {
		w, err := wal.Open(lg, dir, snap)
		if err != nil {
			return fail(fmt.Errorf("open wal in %s: %w", dir, err))
		}
		md, hs, ents, err := w.ReadAll()
		if err != nil {
			w.Close()
			if errors.Is(err, io.ErrUnexpectedEOF) && !tornFixed {
				// The marker goes first: a crash after the repair and
				// before the marker would leave a log that looks intact.
				if merr := writeMarker(dir, err); merr != nil {
					return fail(merr)
				}
				if !wal.Repair(lg, dir) {
					return fail(fmt.Errorf("repair torn wal in %s: %w", dir, err))
				}
				lg.Warn("repaired torn wal tail", zap.String("dir", dir))
				repaired, tornFixed = true, true
				continue
			}
			if restore == nil && (errors.Is(err, wal.ErrCRCMismatch) || errors.Is(err, io.ErrUnexpectedEOF)) {
				back, serr := setAsideNewest(lg, dir, err)
				if serr != nil {
					return fail(serr)
				}
				if back != nil {
					// The segment before it is now the last, and may
					// have a torn tail of its own to cut.
					restore, repaired, tornFixed = back, true, false
					continue
				}
			}
			return fail(fmt.Errorf("read wal in %s: %w", dir, err))
		}
		st := State{HardState: hs, Entries: ents, Repaired: repaired}
		if !repaired {
			if _, err := os.Stat(markerPath(dir)); err == nil {
				st.Repaired = true
			} else if !errors.Is(err, os.ErrNotExist) {
				w.Close()
				return fail(fmt.Errorf("check wal repair marker: %w", err))
			}
		}
		if err := json.Unmarshal(md, &st.Meta); err != nil {
			w.Close()
			return fail(fmt.Errorf("decode wal metadata in %s: %w", dir, err))
		}
		return &Log{w: w, Dir: dir, state: hs}, st, nil
	}
}

// setAsideNewest moves the newest segment of the WAL in dir out of the log
// (renamed with a ".broken" suffix, kept for inspection) after writing the
// repair marker, and returns what puts it back; it returns nil and does
// nothing when the WAL has a single segment.
//
// A log can break where its newest segment begins when its WAL shares a
// Syncer: the etcd WAL starts a segment by renaming it into place and
// fsyncing the directory, and with its own fsyncs off the end of the
// segment before may not be durable yet. A crash before the next syncfs
// then leaves that end lost and the new segment's first record naming a
// checksum that no longer matches. Nothing in either was acknowledged
// (nothing after the last completed sync is), so the log is whole without
// the new segment; a disk that lost synced data looks the same, which is
// why the node is quarantined (State.Repaired) as after a torn tail.
func setAsideNewest(lg *zap.Logger, dir string, cause error) (func() error, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal segments in %s: %w", dir, err)
	}
	var names []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".wal") {
			names = append(names, de.Name()) // fixed-width hex: sorted by position
		}
	}
	if len(names) < 2 {
		return nil, nil
	}
	if err := writeMarker(dir, cause); err != nil {
		return nil, err
	}
	from := filepath.Join(dir, names[len(names)-1])
	to := from + ".broken"
	move := func(a, b string) error {
		if err := os.Rename(a, b); err != nil {
			return fmt.Errorf("set wal segment aside: %w", err)
		}
		if err := fsutil.Sync(dir); err != nil {
			return fmt.Errorf("fsync %s: %w", dir, err)
		}
		return nil
	}
	if err := move(from, to); err != nil {
		return nil, err
	}
	lg.Warn("the wal breaks where its newest segment begins; set that segment aside",
		zap.String("segment", to), zap.Error(cause))
	return func() error { return move(to, from) }, nil
}

// Save appends entries and the hard state, durably when raft says the write
// must be (new entries, or a new term or vote), so one call is one group
// commit: the etcd WAL fsyncs its segment, or a shared WAL waits for the
// Syncer. It reports whether the save was made durable. An empty hard state
// is an unchanged one, as raft's Ready gives it.
func (l *Log) Save(hs *raftpb.HardState, ents []*raftpb.Entry) (durable bool, err error) {
	if hs == nil {
		hs = &raftpb.HardState{}
	}
	if raft.IsEmptyHardState(hs) && len(ents) == 0 {
		return false, nil // nothing to write, as the etcd WAL skips it
	}
	l.mu.Lock()
	if l.state == nil {
		l.state = &raftpb.HardState{}
	}
	st := hs
	if raft.IsEmptyHardState(st) {
		st = l.state
	}
	mustSync := raft.MustSync(st, l.state, len(ents))
	shared, sy := l.useShared(), l.syncer
	err = l.w.Save(hs, ents)
	if err == nil {
		l.state = st
	}
	l.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("save %d entries to wal: %w", len(ents), err)
	}
	if shared && mustSync {
		return true, sy.Sync()
	}
	return mustSync, nil
}

// Sync makes everything saved so far durable, including what Save left in
// the etcd WAL's buffer because raft did not ask for it (a commit index
// alone).
func (l *Log) Sync() error {
	l.mu.Lock()
	shared, sy := l.useShared(), l.syncer
	err := l.w.Sync() // only flushes once shared
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sync wal: %w", err)
	}
	if shared {
		return sy.Sync()
	}
	return nil
}

// Close closes the WAL.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.syncer != nil {
		l.syncer.detach()
		l.syncer = nil
	}
	return l.w.Close()
}

// SaveSnapshot records that a snapshot at snap's index exists, so that the
// WAL can later be opened from it. The snapshot file must be durable first.
func (l *Log) SaveSnapshot(snap *walpb.Snapshot) error {
	l.mu.Lock()
	shared, sy := l.useShared(), l.syncer
	err := l.w.SaveSnapshot(snap)
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("record snapshot at index %d in wal: %w", snap.GetIndex(), err)
	}
	if shared {
		return sy.Sync()
	}
	return nil
}

// ReleaseLockTo lets segments wholly before index be purged.
func (l *Log) ReleaseLockTo(index uint64) error {
	// The etcd WAL's Sync reads its list of segments without its own lock,
	// and a snapshot's goroutine releases segments while the Ready loop
	// syncs.
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.ReleaseLockTo(index); err != nil {
		return fmt.Errorf("release wal segments before index %d: %w", index, err)
	}
	return nil
}

// ValidSnapshots lists the snapshots the WAL in dir records, oldest first,
// among which a node may restart from. It reads the log before Open does,
// so it is the first to meet a log broken where its newest segment begins,
// and sets that segment aside (setAsideNewest) when the rest reads whole.
func ValidSnapshots(lg *zap.Logger, dir string) ([]*walpb.Snapshot, error) {
	snaps, err := wal.ValidSnapshotEntries(lg, dir)
	if errors.Is(err, wal.ErrCRCMismatch) {
		restore, serr := setAsideNewest(lg, dir, err)
		if serr != nil {
			return nil, errors.Join(err, serr)
		}
		if restore != nil {
			if snaps, err = wal.ValidSnapshotEntries(lg, dir); err != nil {
				if rerr := restore(); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}
	}
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
