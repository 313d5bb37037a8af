package raftnode

import (
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkApplierCommands: decoding committed entries into the state
// machine's commands, as a follower does for every entry (4 entries of 16
// SETs per op, the batch size of 50 clients without pipelining).
func BenchmarkApplierCommands(b *testing.B) {
	n := &Node{id: 1, metrics: NewMetrics(), log: slog.New(slog.DiscardHandler)}
	n.prop = newProposer(n, 0)
	a := newApplier(n)
	var reqs []string
	for i := range 16 {
		reqs = append(reqs, fmt.Sprintf("SET key:%012d xxx", i))
	}
	ents := make([]*raftpb.Entry, 4)
	for i := range ents {
		ents[i] = logEntry(uint64(i+1), 2, uint64(i+1), reqs...)
	}
	b.ReportAllocs()
	for b.Loop() {
		// The same entries again: they are new to an applier that forgets
		// the sequences it saw.
		clear(a.lastSeq)
		if cmds := a.commands(ents, false); len(cmds) != 64 {
			b.Fatalf("%d commands", len(cmds))
		}
	}
}
