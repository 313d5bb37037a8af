package raftnode

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
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
