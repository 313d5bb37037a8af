package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

func newTestSyncer(t *testing.T, dir string) *Syncer {
	t.Helper()
	s, err := NewSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Skip("no syncfs on this system: every WAL syncs itself")
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A Sync returns only after a sync that began after it was called: a call
// made while a round runs waits for the next round, which serves every call
// that queued meanwhile.
func TestSyncerRounds(t *testing.T) {
	s := newTestSyncer(t, t.TempDir())
	var began atomic.Int64 // rounds begun
	first, later := make(chan struct{}), make(chan struct{})
	s.sync = func() error {
		if began.Add(1) == 1 {
			<-first
		} else {
			<-later
		}
		return nil
	}
	done1 := make(chan error, 1)
	go func() { done1 <- s.Sync() }()
	waitFor(t, func() bool { return began.Load() == 1 })
	// Three calls while round 1 runs: none may return with it.
	done := make(chan error, 3)
	for range 3 {
		go func() { done <- s.Sync() }()
	}
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.next != nil
	})
	close(first)
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return began.Load() >= 2 })
	select {
	case <-done:
		t.Fatal("a Sync called during round 1 returned before a later round ended")
	case <-time.After(50 * time.Millisecond):
	}
	close(later)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// Those that called before round 2 began share it.
	if n := began.Load(); n > 4 {
		t.Fatalf("%d rounds for 4 calls", n)
	}
}

// Many concurrent callers share rounds, and a failed round's error reaches
// every caller it served.
func TestSyncerSharesAndFails(t *testing.T) {
	s := newTestSyncer(t, t.TempDir())
	var rounds atomic.Int64
	real := s.sync
	s.sync = func() error { rounds.Add(1); return real() }
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := s.Sync(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := rounds.Load(); n >= 640 {
		t.Fatalf("%d syncfs calls for 640 concurrent Syncs: nothing shared", n)
	}
	t.Logf("640 Syncs by 64 goroutines took %d syncfs calls", rounds.Load())
	s.sync = func() error { return os.ErrInvalid }
	if err := s.Sync(); err == nil {
		t.Fatal("a failed syncfs was reported as a success")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A lone WAL keeps its own fsync; once a second WAL shares the Syncer, each
// save that must be durable waits for it, and a save of the commit index
// alone does not.
func TestShareSyncSwitches(t *testing.T) {
	root := t.TempDir()
	s := newTestSyncer(t, root)
	var rounds atomic.Int64
	real := s.sync
	s.sync = func() error { rounds.Add(1); return real() }
	open := func(name string) *Log {
		l, err := Create(zap.NewNop(), filepath.Join(root, name), Metadata{NodeID: 1, ClusterID: 2})
		if err != nil {
			t.Fatal(err)
		}
		l.ShareSync(s)
		return l
	}
	a := open("a")
	defer a.Close()
	hs := func(commit uint64) *raftpb.HardState {
		return &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(commit)}
	}
	if _, err := a.Save(hs(1), entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	if n := rounds.Load(); n != 0 {
		t.Fatalf("a lone WAL used the shared sync (%d rounds)", n)
	}
	b := open("b")
	if _, err := a.Save(hs(2), entries(2, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Save(hs(1), entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d shared syncs for two durable saves; want 2", n)
	}
	if durable, err := a.Save(hs(3), nil); err != nil || durable {
		t.Fatalf("a save of the commit index alone: durable %v, %v", durable, err)
	}
	if n := rounds.Load(); n != 2 {
		t.Fatal("a save of the commit index alone waited for a sync")
	}
	// Raft's Ready gives an unchanged hard state as an empty one: with no
	// entries there is nothing to save, and with some only they count.
	if durable, err := a.Save(&raftpb.HardState{}, nil); err != nil || durable {
		t.Fatalf("an empty save: durable %v, %v", durable, err)
	}
	if n := rounds.Load(); n != 2 {
		t.Fatal("an empty save (an unchanged hard state, no entries) waited for a sync")
	}
	if durable, err := a.Save(&raftpb.HardState{}, entries(3, 3)); err != nil || !durable {
		t.Fatalf("entries under an unchanged hard state: durable %v, %v", durable, err)
	}
	if n := rounds.Load(); n != 3 {
		t.Fatalf("%d shared syncs after entries under an unchanged hard state; want 3", rounds.Load())
	}
	b.Close()
	if _, err := a.Save(hs(4), entries(4, 4)); err != nil {
		t.Fatal(err)
	}
	if n := rounds.Load(); n != 4 {
		t.Fatalf("a WAL that switched to the shared sync stopped using it (%d rounds)", n)
	}
}

// A crash after a shared WAL began a segment, before the next syncfs, can
// leave the older segment's end lost (whole sectors or pages read back as
// zeros) and the new segment's checksum matching nothing. Such a log opens
// (the new segment set aside, the node told to distrust its log), where the
// etcd WAL alone refuses it for good.
func TestOpenSetsAsideBrokenNewestSegment(t *testing.T) {
	for _, lost := range []int64{512, 4096} {
		t.Run(fmt.Sprintf("lost %d-byte block", lost), func(t *testing.T) { testSetAside(t, lost) })
	}
}

// smallSegments returns a new WAL in a temporary directory whose segments
// are 16 KiB (the etcd WAL's size is a package variable, put back after
// the test), and the directory.
func smallSegments(t *testing.T) (*Log, string) {
	t.Helper()
	old := wal.SegmentSizeBytes
	wal.SegmentSizeBytes = 16 << 10
	t.Cleanup(func() { wal.SegmentSizeBytes = old })
	dir := filepath.Join(t.TempDir(), "wal")
	l, err := Create(zap.NewNop(), dir, Metadata{NodeID: 1, ClusterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	return l, dir
}

func segmentsIn(dir string) []string {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(segs)
	return segs
}

// saveUntil saves one entry per save until the WAL has n segments, and
// returns the last index saved.
func saveUntil(t *testing.T, l *Log, dir string, n int) uint64 {
	t.Helper()
	var i uint64
	for i = 1; ; i++ {
		if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, entries(i, i)); err != nil {
			t.Fatal(err)
		}
		if len(segmentsIn(dir)) == n {
			return i
		}
	}
}

func testSetAside(t *testing.T, block int64) {
	l, dir := smallSegments(t)
	last := saveUntil(t, l, dir, 2)
	l.Close()
	segs := segmentsIn(dir)
	// The older segment's last block, which holds the end of the save that
	// began the new segment, reads back as never written.
	older := segs[0]
	fi, err := os.Stat(older)
	if err != nil {
		t.Fatal(err)
	}
	from := (fi.Size() - 1) / block * block
	if err := os.Truncate(older, from); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(older, fi.Size()); err != nil {
		t.Fatal(err)
	}

	snaps, err := ValidSnapshots(zap.NewNop(), dir)
	if err != nil {
		t.Fatalf("list snapshots of a log broken where its newest segment begins: %v", err)
	}
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots recorded; want the initial one", len(snaps))
	}
	l, st, err := Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatalf("open a log broken where its newest segment begins: %v", err)
	}
	defer l.Close()
	if !st.Repaired {
		t.Fatal("the newest segment was set aside but the log was not reported repaired")
	}
	n := uint64(len(st.Entries))
	if n == 0 || n >= last {
		t.Fatalf("%d entries after the repair; want fewer than the %d saved, and some", n, last)
	}
	for i, e := range st.Entries {
		if e.GetIndex() != uint64(i)+1 {
			t.Fatalf("entry %d has index %d: the log has a hole", i, e.GetIndex())
		}
	}
	if _, err := os.Stat(segs[1] + ".broken"); err != nil {
		t.Fatalf("the set-aside segment is not kept for inspection: %v", err)
	}
	if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(n + 1)}, entries(n+1, n+1)); err != nil {
		t.Fatalf("append after the repair: %v", err)
	}
	t.Logf("%d of %d entries kept", n, last)
}

// A log broken elsewhere than where its newest segment begins is not
// repaired by setting that segment aside: Open fails and the segment stays.
func TestOpenKeepsNewestSegmentOnOtherDamage(t *testing.T) {
	l, dir := smallSegments(t)
	saveUntil(t, l, dir, 3)
	l.Close()
	segs := segmentsIn(dir)
	// Flip a byte in the middle of the first segment's records.
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[4096] ^= 0xff
	if err := os.WriteFile(segs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(zap.NewNop(), dir, nil); err == nil {
		t.Fatal("a log damaged in its oldest segment opened")
	}
	if _, err := os.Stat(segs[2]); err != nil {
		t.Fatalf("the newest segment was not put back: %v", err)
	}
}

// The switch to the shared sync happens while the Ready loop saves and a
// snapshot's goroutine records a snapshot: with -race, this checks that the
// switch never races the etcd WAL's own reads of its fsync setting.
func TestShareSyncSwitchWhileSaving(t *testing.T) {
	root := t.TempDir()
	s := newTestSyncer(t, root)
	a, err := Create(zap.NewNop(), filepath.Join(root, "a"), Metadata{NodeID: 1, ClusterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.ShareSync(s)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 200; i++ {
			if _, err := a.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, entries(i, i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			if err := a.SaveSnapshot(&walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b, err := Create(zap.NewNop(), filepath.Join(root, "b"), Metadata{NodeID: 1, ClusterID: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.ShareSync(s) // a switches during one of its next calls
	wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.shared {
		t.Fatal("the WAL never switched to the shared sync")
	}
}
