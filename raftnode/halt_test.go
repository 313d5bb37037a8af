package raftnode

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
)

// recordingMachine is a state machine that records what it applies.
type recordingMachine struct{ applied []string }

func (m *recordingMachine) Apply(cmds []fsm.Command) error {
	for _, c := range cmds {
		var parts []string
		for _, a := range c.Args {
			parts = append(parts, string(a))
		}
		m.applied = append(m.applied, strings.Join(parts, " "))
	}
	return nil
}
func (m *recordingMachine) Reset(context.Context, io.Reader, int64) error { return nil }
func (m *recordingMachine) Healthy(context.Context) bool                  { return true }
func (m *recordingMachine) StartSnapshot(context.Context) (fsm.SnapshotJob, error) {
	return nil, errors.New("no snapshots here")
}

// servingApplier is a node with only an applier, serving, over a state
// machine that records what it applies.
func servingApplier() (*Node, *recordingMachine) {
	sm := &recordingMachine{}
	n := &Node{id: 1, metrics: NewMetrics(), log: slog.New(slog.DiscardHandler), stopc: make(chan struct{})}
	n.cfg.StateMachine = sm
	n.prop = newProposer(n, 0)
	n.applier = newApplier(n)
	n.applier.gen.Store(0) // serving
	return n, sm
}

// TestNewerFormatHaltsTheApplier: an entry written in a newer format than
// this build decodes stops the applier before it, where a corrupt entry is
// skipped: skipping it would make this node diverge from the members that
// apply it. Nothing after it is applied, reads and writes on the node are
// refused with ErrHalted, and a snapshot past it lifts the halt.
func TestNewerFormatHaltsTheApplier(t *testing.T) {
	n, sm := servingApplier()
	a := n.applier

	newer := logEntry(3, 2, 3, "SET c 1")
	newer.Data = append([]byte{entry.Version + 1}, newer.GetData()[1:]...)
	// Written wrong by its proposer (format 4 has no checksum): every node
	// holds the same bytes and skips them alike.
	corrupt := &raftpb.Entry{Index: logEntry(2, 2, 2).Index, Type: raftpb.EntryNormal.Enum(), Data: []byte{4, 0xff}}
	ents := []*raftpb.Entry{logEntry(1, 2, 1, "SET a 1"), corrupt, newer, logEntry(4, 2, 4, "SET d 1")}
	if !a.applyEntries(context.Background(), ents) {
		t.Fatal("applyEntries stopped")
	}
	if got := strings.Join(sm.applied, "|"); got != "SET a 1" {
		t.Fatalf("applied %q, want only the entries before the newer one (the corrupt one skipped)", got)
	}
	if a.applied.Load() != 2 {
		t.Fatalf("applied index %d, want 2", a.applied.Load())
	}
	halted, err := n.Halted()
	if !halted || !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "entry 3 is in format") {
		t.Fatalf("Halted() = %v, %v", halted, err)
	}
	// Later entries wait too.
	a.applyEntries(context.Background(), []*raftpb.Entry{logEntry(5, 2, 5, "SET e 1")})
	if len(sm.applied) != 1 || a.applied.Load() != 2 {
		t.Fatalf("applied %q up to %d after the halt", sm.applied, a.applied.Load())
	}
	if err := a.waitApplied(2, time.Second); err != nil {
		t.Errorf("a read at index 2 (before the entry): %v", err)
	}
	if err := a.waitApplied(3, time.Second); !errors.Is(err, ErrHalted) {
		t.Errorf("a read at index 3: %v, want ErrHalted at once", err)
	}
	if f := n.Propose(context.Background(), 0, [][]byte{[]byte("SET"), []byte("x"), []byte("1")}, false); !errors.Is(f.err, ErrHalted) {
		t.Errorf("a write on the halted node: %v, want ErrHalted before it is proposed", f.err)
	}
	a.unhaltPast(2)
	if halted, _ := n.Halted(); !halted {
		t.Error("a snapshot before the entry lifted the halt")
	}
	a.unhaltPast(3)
	if halted, _ := n.Halted(); halted {
		t.Error("a snapshot at the entry did not lift the halt")
	}
}

// TestDamagedEntryHaltsTheApplier: an entry whose checksum does not match
// (this node's copy was damaged after its proposer wrote it; the others
// hold it whole) is neither skipped nor applied: the applier stops before
// it, as before an entry in a newer format, and says the copy is damaged.
// Skipping it, as a corrupt entry is, would diverge from the members that
// apply it (checked: with the check out of untilUnappliable, "SET c 1" is
// skipped and "SET d 1" applied).
func TestDamagedEntryHaltsTheApplier(t *testing.T) {
	n, sm := servingApplier()
	a := n.applier

	damaged := logEntry(2, 2, 2, "SET c 1")
	damaged.Data[len(damaged.Data)/2] ^= 0x10
	ents := []*raftpb.Entry{logEntry(1, 2, 1, "SET a 1"), damaged, logEntry(3, 2, 3, "SET d 1")}
	if !a.applyEntries(context.Background(), ents) {
		t.Fatal("applyEntries stopped")
	}
	if got := strings.Join(sm.applied, "|"); got != "SET a 1" || a.applied.Load() != 1 {
		t.Fatalf("applied %q up to %d, want only the entry before the damaged one", got, a.applied.Load())
	}
	halted, err := n.Halted()
	if !halted || !errors.Is(err, ErrHalted) || !errors.Is(err, entry.ErrChecksum) || !strings.Contains(err.Error(), "copy of entry 2 is damaged") {
		t.Fatalf("Halted() = %v, %v", halted, err)
	}
}

// TestRestampDropsDamagedProposals: a leader drops a forwarded entry that
// no longer matches its checksum (damaged on its way), so the log holds
// only entries as their proposers wrote them, and restamps the others.
func TestRestampDropsDamagedProposals(t *testing.T) {
	n := &Node{id: 1, log: slog.New(slog.DiscardHandler)}
	n.applier = &applier{n: n}
	damaged := logEntry(0, 2, 1, "SET a 1")
	damaged.Data[len(damaged.Data)-1] ^= 1
	whole := logEntry(0, 2, 2, "SET b 1")
	m := &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(2), Entries: []*raftpb.Entry{damaged, whole}}
	if !n.restamp(m) || len(m.Entries) != 1 {
		t.Fatalf("restamp kept %d entries, want the whole one", len(m.Entries))
	}
	e, err := entry.Unmarshal(m.Entries[0].GetData())
	if err != nil || e.Seq != 2 || e.TimeMs == 0 {
		t.Fatalf("kept entry: %+v, %v; want seq 2 restamped", e, err)
	}
	m = &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(2), Entries: []*raftpb.Entry{damaged}}
	if n.restamp(m) {
		t.Error("restamp of only a damaged entry reported one left: raft panics on an empty proposal")
	}
}

// TestLogFormatFollowsMembers: the format a node writes is the newest every
// member (learners too) decodes, as the members' records say, recomputed
// with each change, from a snapshot too, and never above this build's.
func TestLogFormatFollowsMembers(t *testing.T) {
	m := newMembership()
	check := func(what string, want int) {
		t.Helper()
		if got := m.logFormat(); got != want {
			t.Errorf("%s: log format %d, want %d", what, got, want)
		}
	}
	check("no members applied yet", unadvertisedFormat)
	m.add(Member{ID: 1, Format: entry.Version}, false)
	m.add(Member{ID: 2, Format: entry.Version + 1}, false)
	check("a member newer than this build", entry.Version)
	m.add(Member{ID: 3}, true)
	check("a learner from before advertised formats", unadvertisedFormat)
	m.add(Member{ID: 3, Format: entry.Version}, true)
	check("the learner upgraded", entry.Version)
	m.add(Member{ID: 4, Format: entry.MinFormat}, false)
	check("an older member joined", entry.MinFormat)
	m.remove(4)
	check("the older member removed", entry.Version)
	m.restore([]MemberInfo{{Member: Member{ID: 1, Format: entry.Version}, Voting: true}, {Member: Member{ID: 5}, Voting: true}}, nil)
	check("restored from a snapshot with an old member", unadvertisedFormat)
}
