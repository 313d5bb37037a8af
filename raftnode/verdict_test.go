package raftnode

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
)

func controlEntry(index uint64, c entry.Control) *raftpb.Entry {
	return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(1), Type: raftpb.EntryNormal.Enum(), Data: c.Marshal()}
}

// TestVerdicts checks the rule every node decides killable requests by: the
// first of an Abort and a Settle covering the request, in log order.
func TestVerdicts(t *testing.T) {
	settle := func(i uint64) entry.Control { return entry.Control{Op: entry.ControlSettle, Index: i} }
	abort := func(i, r uint64) entry.Control { return entry.Control{Op: entry.ControlAbort, Index: i, Req: r} }
	v := newVerdicts()
	batch := &raftpb.Entry{Index: proto.Uint64(9), Type: raftpb.EntryNormal.Enum(),
		Data: (&entry.Entry{Node: 1, Seq: 1, Reqs: []entry.Request{{Args: [][]byte{[]byte("GET"), []byte("k")}}}}).Marshal(nil)}
	v.takeEntries([]*raftpb.Entry{
		batch,
		controlEntry(10, abort(5, 1)),  // request 1 of entry 5: killed
		controlEntry(11, settle(6)),    // entries up to 6 settled
		controlEntry(12, abort(5, 0)),  // too late: 5 is settled
		controlEntry(13, abort(7, 0)),  // 7 is not settled: killed
		controlEntry(14, abort(14, 0)), // an abort never names its own or a later entry
		controlEntry(15, settle(20)),   // a settle covers only what came before it
		controlEntry(16, abort(15, 0)), // the settle at 15 covered up to 14: killed
	})
	for _, tc := range []struct {
		t    target
		want verdict
	}{
		{target{5, 1}, aborted}, {target{5, 0}, settled}, {target{6, 3}, settled},
		{target{7, 0}, aborted}, {target{8, 0}, settled}, {target{14, 0}, settled},
		{target{15, 0}, aborted}, {target{15, 1}, undecided}, {target{16, 0}, undecided},
	} {
		if got := v.of(tc.t); got != tc.want {
			t.Errorf("verdict of %+v = %d, want %d", tc.t, got, tc.want)
		}
	}
	if got := v.seen.Load(); got != 16 {
		t.Errorf("seen = %d, want 16", got)
	}
	// Entries raft hands again after a restart are taken in once.
	v.takeEntries([]*raftpb.Entry{controlEntry(12, abort(8, 0))})
	if got := v.of(target{8, 0}); got != settled {
		t.Errorf("an entry taken in again changed a verdict: %d", got)
	}
	v.prune(7)
	if got := v.of(target{7, 0}); got != settled {
		t.Errorf("after prune(7), request 7/0 = %d (a snapshot covers it, and the settle at 15 too)", got)
	}
}

// failingSnapshots is a state machine whose snapshots fail once started
// (redis's BGSAVE refused: a script is running, the disk is full).
type failingSnapshots struct{ recordingMachine }

type failedJob struct{}

func (failedJob) Wait(context.Context) (io.ReadCloser, error) {
	return nil, errors.New("BUSY Redis is busy running a script")
}

func (*failingSnapshots) StartSnapshot(context.Context) (fsm.SnapshotJob, error) {
	return failedJob{}, nil
}

// TestFailedSnapshotKeepsVerdicts: a snapshot that fails does not make the
// node forget the verdicts of the requests it would have covered. The next
// rebuild replays them from the older snapshot, and a killed script
// replayed without its abort runs for ever: the node never applies again
// (seen in TestRollingUpgrade, with the prune done when the snapshot
// started). The verdicts go only once a snapshot is stored.
func TestFailedSnapshotKeepsVerdicts(t *testing.T) {
	n := &Node{id: 1, metrics: NewMetrics(), log: slog.New(slog.DiscardHandler), stopc: make(chan struct{}),
		storage: raft.NewMemoryStorage(), members: newMembership()}
	n.cfg.StateMachine = &failingSnapshots{}
	n.cfg.Tunables = &Tunables{}
	n.cfg.Tunables.SnapshotEntries.Store(1)
	n.cfg.Tunables.SnapshotBytes.Store(1 << 30)
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
	}
	if err := n.storage.Append(ents); err != nil {
		t.Fatal(err)
	}
	n.prop = newProposer(n, 0)
	n.applier = newApplier(n)
	a := n.applier
	a.applied.Store(10)
	killed := target{index: 5, req: 0}
	a.verdicts.take(6, entry.Control{Op: entry.ControlAbort, Index: 5})

	a.maybeSnapshot(context.Background())
	for deadline := time.Now().Add(5 * time.Second); a.snapping.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the snapshot did not end")
		}
		time.Sleep(time.Millisecond)
	}
	a.snapRetry.Store(0)
	a.maybeSnapshot(context.Background()) // the next round, after the failure
	for a.snapping.Load() {
		time.Sleep(time.Millisecond)
	}
	if v := a.verdicts.of(killed); v != aborted {
		t.Fatalf("after a failed snapshot at 10 the abort of %v is forgotten (%v): a rebuild would run the killed script again", killed, v)
	}
	// Once a snapshot at 10 is stored, the next round forgets it.
	a.snapStored.Store(10)
	a.snapRetry.Store(time.Now().Add(time.Hour).UnixNano())
	a.maybeSnapshot(context.Background())
	if v := a.verdicts.of(killed); v == aborted {
		t.Error("the verdicts a stored snapshot covers are kept for ever")
	}
}
