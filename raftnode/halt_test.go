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

// TestNewerFormatHaltsTheApplier: an entry written in a newer format than
// this build decodes stops the applier before it, where a corrupt entry is
// skipped: skipping it would make this node diverge from the members that
// apply it. Nothing after it is applied, reads and writes on the node are
// refused with ErrHalted, and a snapshot past it lifts the halt.
func TestNewerFormatHaltsTheApplier(t *testing.T) {
	sm := &recordingMachine{}
	n := &Node{id: 1, metrics: NewMetrics(), log: slog.New(slog.DiscardHandler), stopc: make(chan struct{})}
	n.cfg.StateMachine = sm
	n.prop = newProposer(n, 0)
	n.applier = newApplier(n)
	a := n.applier
	a.gen.Store(0) // serving

	newer := logEntry(3, 2, 3, "SET c 1")
	newer.Data = append([]byte{entry.Version + 1}, newer.GetData()[1:]...)
	corrupt := &raftpb.Entry{Index: logEntry(2, 2, 2).Index, Type: raftpb.EntryNormal.Enum(), Data: []byte{entry.Version, 0xff}}
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
