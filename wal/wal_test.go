package wal

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

func entries(from, to uint64) []*raftpb.Entry {
	var es []*raftpb.Entry
	for i := from; i <= to; i++ {
		es = append(es, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: []byte("payload-payload-payload")})
	}
	return es
}

func TestCreateSaveReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	if Exist(dir) {
		t.Fatal("Exist before Create")
	}
	md := Metadata{NodeID: 0xabc, ClusterID: 0xdef}
	l, err := Create(zap.NewNop(), dir, md)
	if err != nil {
		t.Fatal(err)
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(0xabc), Commit: proto.Uint64(10)}
	if _, err := l.Save(hs, entries(1, 10)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, st, err := Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st.Meta != md || len(st.Entries) != 10 || st.HardState.GetCommit() != 10 {
		t.Fatalf("reopened: meta %+v, %d entries, commit %d", st.Meta, len(st.Entries), st.HardState.GetCommit())
	}
	if st.Repaired {
		t.Fatal("an intact WAL was reported repaired")
	}
}

// A torn last record (a crash mid-write) is cut off; the records before it survive.
func TestOpenRepairsTornTail(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	l, err := Create(zap.NewNop(), dir, Metadata{NodeID: 1, ClusterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i++ {
		if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, entries(i, i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(segs)
	data, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	if err := os.Truncate(segs[len(segs)-1], int64(end-5)); err != nil {
		t.Fatal(err)
	}
	l, st, err := Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatalf("open torn wal: %v", err)
	}
	defer func() { l.Close() }()
	// Each Save writes an entry record then a state record; the cut tears
	// the last state record, so its commit index is lost and the rest kept.
	if n, commit := len(st.Entries), st.HardState.GetCommit(); n != 20 || commit != 19 {
		t.Fatalf("after repair: %d entries, commit %d; want 20 entries and the commit of the record before the torn one (19)", n, commit)
	}
	if !st.Repaired {
		t.Fatal("Open repaired a torn tail but did not report it")
	}
	if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(21)}, entries(uint64(len(st.Entries)+1), 21)); err != nil {
		t.Fatalf("append after repair: %v", err)
	}
	// The repair is remembered across restarts until it is cleared: a node
	// that crashes again before the cluster repaired its log must still
	// know that it may have lost acknowledged records.
	l.Close()
	l, st, err = Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Repaired || len(st.Entries) != 21 {
		t.Fatalf("reopened after repair: repaired %v, %d entries; want the repair still reported and 21 entries", st.Repaired, len(st.Entries))
	}
	if err := l.ClearRepaired(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, st, err = Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Repaired {
		t.Fatal("repair still reported after ClearRepaired")
	}
}

// A repair marker left next to a WAL that was deleted does not apply to a
// new WAL created in its place.
func TestCreateClearsStaleMarker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	if err := writeMarker(dir, nil); err != nil {
		t.Fatal(err)
	}
	l, err := Create(zap.NewNop(), dir, Metadata{NodeID: 1, ClusterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, st, err := Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st.Repaired {
		t.Fatal("a new WAL was reported repaired because of an old marker")
	}
}

// A WAL built aside (a seeded cluster's) and renamed into place opens at its
// snapshot with its hard state, and a stale marker at the place does not
// make it look repaired.
func TestRenameBuiltAside(t *testing.T) {
	base := t.TempDir()
	aside, dir := filepath.Join(base, "wal.seed"), filepath.Join(base, "wal")
	if err := writeMarker(dir, nil); err != nil {
		t.Fatal(err)
	}
	md := Metadata{NodeID: 3, ClusterID: 4}
	l, err := Create(zap.NewNop(), aside, md)
	if err != nil {
		t.Fatal(err)
	}
	snap := &walpb.Snapshot{Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: []uint64{3}}}
	if err := l.SaveSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(1)}, nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	if Exist(aside) || !Exist(dir) {
		t.Fatalf("after Rename: aside exists %v, final exists %v", Exist(aside), Exist(dir))
	}
	l, st, err := Open(zap.NewNop(), dir, snap)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st.Repaired || st.Meta != md || st.HardState.GetCommit() != 1 || len(st.Entries) != 0 {
		t.Fatalf("reopened: repaired %v, meta %+v, commit %d, %d entries", st.Repaired, st.Meta, st.HardState.GetCommit(), len(st.Entries))
	}
}

// A save of the commit index alone stays in the etcd WAL's buffer (raft
// asks no fsync for it), and a restart lists only the snapshots at or
// below the commit it reads back: a node that installs a snapshot must
// Sync after saving the hard state that commits it (etcd issue 10219), or
// a kill then restarts it before the snapshot it acknowledged.
func TestSyncMakesACommitDurable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	l, err := Create(zap.NewNop(), dir, Metadata{NodeID: 1, ClusterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(3)}, entries(1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := l.SaveSnapshot(&walpb.Snapshot{Index: proto.Uint64(5), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)}, nil); err != nil {
		t.Fatal(err)
	}
	listed := func() bool {
		snaps, err := ValidSnapshots(zap.NewNop(), dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			if s.GetIndex() == 5 {
				return true
			}
		}
		return false
	}
	if listed() {
		t.Log("the commit-only save reached the file without Sync (the etcd WAL flushed it by itself)")
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if !listed() {
		t.Fatal("after Sync, a restart would still not see the snapshot at 5: its commit is not on disk")
	}
}
