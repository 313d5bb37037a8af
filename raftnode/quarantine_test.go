package raftnode

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/quorum"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	rwal "github.com/raftproxy/raftproxy/wal"
)

func msg(typ raftpb.MessageType, commit uint64) *raftpb.Message {
	return &raftpb.Message{Type: typ.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(3), Commit: proto.Uint64(commit)}
}

// A quarantined node sends no vote requests (it does not campaign) and
// everything else as raft wants.
func TestQuarantineOutgoing(t *testing.T) {
	tests := []struct {
		in      []raftpb.MessageType
		want    []raftpb.MessageType
		dropped int
	}{
		{nil, nil, 0},
		{[]raftpb.MessageType{raftpb.MsgAppResp, raftpb.MsgHeartbeatResp}, []raftpb.MessageType{raftpb.MsgAppResp, raftpb.MsgHeartbeatResp}, 0},
		{[]raftpb.MessageType{raftpb.MsgPreVote, raftpb.MsgPreVote}, nil, 2},
		{[]raftpb.MessageType{raftpb.MsgVote, raftpb.MsgAppResp, raftpb.MsgVote}, []raftpb.MessageType{raftpb.MsgAppResp}, 2},
		// Answers to vote requests are not requests: a quarantined node
		// never steps a request, so it never makes one, but none is dropped.
		{[]raftpb.MessageType{raftpb.MsgVoteResp, raftpb.MsgPreVoteResp, raftpb.MsgReadIndex, raftpb.MsgProp},
			[]raftpb.MessageType{raftpb.MsgVoteResp, raftpb.MsgPreVoteResp, raftpb.MsgReadIndex, raftpb.MsgProp}, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			var msgs []*raftpb.Message
			for _, typ := range tt.in {
				msgs = append(msgs, msg(typ, 0))
			}
			out, dropped := quarantineOutgoing(msgs)
			var got []raftpb.MessageType
			for _, m := range out {
				got = append(got, m.GetType())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || dropped != tt.dropped {
				t.Fatalf("kept %v, dropped %d; want %v, %d", got, dropped, tt.want, tt.dropped)
			}
		})
	}
}

// A quarantined node drops vote requests and leadership transfers to it,
// and clamps a heartbeat's commit index to its last index.
func TestQuarantineIncoming(t *testing.T) {
	tests := []struct {
		typ        raftpb.MessageType
		commit     uint64
		last       uint64
		drop       bool
		clamped    bool
		wantCommit uint64
	}{
		{raftpb.MsgPreVote, 0, 10, true, false, 0},
		{raftpb.MsgVote, 0, 10, true, false, 0},
		{raftpb.MsgTimeoutNow, 0, 10, true, false, 0},
		{raftpb.MsgHeartbeat, 25, 10, false, true, 10},
		{raftpb.MsgHeartbeat, 10, 10, false, false, 10},
		{raftpb.MsgHeartbeat, 4, 10, false, false, 4},
		{raftpb.MsgHeartbeat, 7, 0, false, true, 0},
		// MsgApp commits at most its own last new entry: untouched.
		{raftpb.MsgApp, 25, 10, false, false, 25},
		{raftpb.MsgSnap, 25, 10, false, false, 25},
		{raftpb.MsgReadIndexResp, 25, 10, false, false, 25},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s commit %d last %d", tt.typ, tt.commit, tt.last), func(t *testing.T) {
			m := msg(tt.typ, tt.commit)
			drop, clamped := quarantineIncoming(m, tt.last)
			if drop != tt.drop || clamped != tt.clamped || m.GetCommit() != tt.wantCommit {
				t.Fatalf("drop %v clamped %v commit %d; want %v %v %d", drop, clamped, m.GetCommit(), tt.drop, tt.clamped, tt.wantCommit)
			}
		})
	}
}

// followerWithLog is a raft follower (id 1 of voters 1, 2, 3) whose log
// holds entries 1..last of term 2, as a node that lost the tail of its log.
func followerWithLog(t *testing.T, last uint64) *raft.RawNode {
	t.Helper()
	ms := raft.NewMemoryStorage()
	var ents []*raftpb.Entry
	for i := uint64(1); i <= last; i++ {
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(2)})
	}
	if err := ms.ApplySnapshot(&raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(0), Term: proto.Uint64(0), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}); err != nil {
		t.Fatal(err)
	}
	if err := ms.Append(ents); err != nil {
		t.Fatal(err)
	}
	if err := ms.SetHardState(&raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(1)}); err != nil {
		t.Fatal(err)
	}
	rn, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: ms,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, Logger: raftLogger{discardLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	return rn
}

// The panic the quarantine prevents: a heartbeat from a leader whose match
// for this node predates its lost tail makes raft commit past the log.
func TestClampedHeartbeatDoesNotPanic(t *testing.T) {
	heartbeat := func() *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(2), Commit: proto.Uint64(9)}
	}
	t.Run("unclamped panics", func(t *testing.T) {
		rn := followerWithLog(t, 5)
		defer func() {
			if recover() == nil {
				t.Fatal("raft took a commit index past its log without panicking; the clamp may be unneeded")
			}
		}()
		_ = rn.Step(heartbeat())
	})
	t.Run("clamped", func(t *testing.T) {
		rn := followerWithLog(t, 5)
		m := heartbeat()
		if drop, _ := quarantineIncoming(m, 5); drop {
			t.Fatal("heartbeat dropped")
		}
		if err := rn.Step(m); err != nil {
			t.Fatal(err)
		}
		if c := rn.Status().GetCommit(); c != 5 {
			t.Fatalf("commit %d after clamped heartbeat, want 5", c)
		}
	})
}

func TestStaleProgress(t *testing.T) {
	tests := []struct {
		leaderTerm, match uint64
		hasProgress       bool
		t0, last          uint64
		want              bool
	}{
		{3, 0, true, 3, 10, true},    // leader of T0 itself: may predate the loss
		{2, 0, true, 3, 10, true},    // older still
		{4, 0, true, 3, 10, false},   // elected after the restart, fresh progress
		{4, 10, true, 3, 10, false},  // match within the log: honest
		{4, 11, true, 3, 10, true},   // match past the log: its term record was lost too
		{4, 11, false, 3, 10, false}, // no progress for it (not a member yet)
	}
	for _, tt := range tests {
		if got := staleProgress(tt.leaderTerm, tt.match, tt.hasProgress, tt.t0, tt.last); got != tt.want {
			t.Errorf("staleProgress(%+v) = %v, want %v", tt, got, tt.want)
		}
	}
}

func TestStepDownTarget(t *testing.T) {
	voters := quorum.MajorityConfig{1: {}, 2: {}, 3: {}, 4: {}, 5: {}}
	st := raft.Status{Config: tracker.Config{Voters: quorum.JointConfig{voters, nil}}, Progress: map[uint64]tracker.Progress{}}
	st.HardState = &raftpb.HardState{Term: proto.Uint64(3), Commit: proto.Uint64(100)}
	st.ID = 1
	up := func(match uint64) tracker.Progress {
		return tracker.Progress{Match: match, Next: match + 1, State: tracker.StateReplicate, RecentActive: true}
	}
	st.Progress[1] = up(120)
	st.Progress[2] = up(500) // the quarantined asker; stale match
	st.Progress[3] = up(110)
	st.Progress[4] = up(118)
	st.Progress[5] = up(90) // behind the commit index
	all := func(uint64) bool { return true }
	if got := stepDownTarget(st, 1, 2, all); got != 4 {
		t.Fatalf("target %d, want 4 (highest match other than the asker)", got)
	}
	if got := stepDownTarget(st, 1, 2, func(id uint64) bool { return id != 4 }); got != 3 {
		t.Fatalf("target %d with 4 unreachable, want 3", got)
	}
	p := st.Progress[4]
	p.State = tracker.StateProbe
	st.Progress[4] = p
	p = st.Progress[3]
	p.RecentActive = false
	st.Progress[3] = p
	if got := stepDownTarget(st, 1, 2, all); got != 0 {
		t.Fatalf("target %d, want none: 3 inactive, 4 probing, 5 behind", got)
	}
}

// A node restarted on a repaired WAL is quarantined with T0 = the highest
// term it knows; an entry of a higher term ends it and clears the marker,
// an entry of T0 does not.
func TestQuarantineLifecycle(t *testing.T) {
	dataDir := t.TempDir()
	dir := walDir(dataDir)
	w, err := rwal.Create(zap.NewNop(), dir, rwal.Metadata{NodeID: 1, ClusterID: 9})
	if err != nil {
		t.Fatal(err)
	}
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 20; i++ {
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(min(3, 1+i/8)), Data: []byte("0123456789abcdef")})
		if _, err := w.Save(&raftpb.HardState{Term: proto.Uint64(3), Commit: proto.Uint64(i)}, ents[i-1:i]); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	tearLastRecord(t, dir)

	w, st, err := rwal.Open(zap.NewNop(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Repaired {
		t.Fatal("WAL not reported repaired")
	}
	n, err := newNode(Config{DataDir: dataDir, Logger: discardLogger()}, 1, 9, w, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !n.Quarantined() || n.QuarantineTerm() != 3 {
		t.Fatalf("quarantined %v, T0 %d; want quarantined with T0 3", n.Quarantined(), n.QuarantineTerm())
	}
	last, _ := n.storage.LastIndex()
	appendTerm := func(term uint64) {
		t.Helper()
		last++
		e := []*raftpb.Entry{{Index: proto.Uint64(last), Term: proto.Uint64(term)}}
		if _, err := w.Save(&raftpb.HardState{Term: proto.Uint64(term), Commit: proto.Uint64(1)}, e); err != nil {
			t.Fatal(err)
		}
		if err := n.storage.Append(e); err != nil {
			t.Fatal(err)
		}
		n.maybeLeaveQuarantine()
	}
	appendTerm(3)
	if !n.Quarantined() {
		t.Fatal("an entry of term T0 ended the quarantine")
	}
	if _, err := os.Stat(dir + ".repaired"); err != nil {
		t.Fatalf("repair marker gone while quarantined: %v", err)
	}
	appendTerm(4)
	if n.Quarantined() {
		t.Fatal("an entry of a term above T0 did not end the quarantine")
	}
	if _, err := os.Stat(dir + ".repaired"); !os.IsNotExist(err) {
		t.Fatalf("repair marker still there after the quarantine ended: %v", err)
	}
}

// tearLastRecord zeroes the second half of the last record of the newest
// segment in dir, as a lost tail leaves it.
func tearLastRecord(t *testing.T, dir string) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(segs)
	path := segs[len(segs)-1]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var start, end int
	for off := 0; off+8 <= len(data); {
		h := binary.LittleEndian.Uint64(data[off:])
		if h == 0 {
			break
		}
		size := int(h&(1<<56-1)) + int(h>>56&7)
		start, end = off, off+8+size
		off = end
	}
	for i := start + 8; i < end; i++ {
		data[i] = 0
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
