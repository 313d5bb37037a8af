package raftnode

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"
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

// BenchmarkRaftDriver: one entry proposed, persisted (in memory), committed
// and handed back, on a single voter, driven as raftnode drives it (core:
// a RawNode behind a lock) and as a raft.Node (a goroutine of its own,
// reached through channels). The difference is what the hand-offs to that
// goroutine cost per entry, without any I/O.
func BenchmarkRaftDriver(b *testing.B) {
	cfg := func(st *raft.MemoryStorage) *raft.Config {
		return &raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: st, MaxSizePerMsg: 1 << 20,
			MaxInflightMsgs: 256, Logger: raftLogger{slog.New(slog.DiscardHandler)}}
	}
	data := []byte("SET key value")
	b.Run("core", func(b *testing.B) {
		st := raft.NewMemoryStorage()
		c, err := newCore(cfg(st), []raft.Peer{{ID: 1}})
		if err != nil {
			b.Fatal(err)
		}
		step := func() (committed int) {
			for {
				rd, ok := c.ready()
				if !ok {
					return committed
				}
				st.Append(rd.Entries)
				committed += len(rd.CommittedEntries)
				c.advance(rd)
			}
		}
		// Raft campaigns only once the bootstrap's entries are applied.
		step()
		c.campaign()
		for step(); c.status().RaftState != raft.StateLeader; step() {
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := c.propose(data); err != nil {
				b.Fatal(err)
			}
			for n := 0; n == 0; {
				n = step()
			}
		}
	})
	b.Run("raft.Node", func(b *testing.B) {
		st := raft.NewMemoryStorage()
		n := raft.StartNode(cfg(st), []raft.Peer{{ID: 1}})
		defer n.Stop()
		ctx := context.Background()
		rd := <-n.Ready()
		st.Append(rd.Entries)
		n.Advance()
		n.Campaign(ctx)
		leader := false
		for !leader {
			rd := <-n.Ready()
			st.Append(rd.Entries)
			leader = rd.SoftState != nil && rd.SoftState.RaftState == raft.StateLeader || leader
			n.Advance()
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := n.Propose(ctx, data); err != nil {
				b.Fatal(err)
			}
			for committed := 0; committed == 0; {
				rd := <-n.Ready()
				st.Append(rd.Entries)
				for _, e := range rd.CommittedEntries {
					if e.GetType() == raftpb.EntryNormal && len(e.GetData()) > 0 {
						committed++
					}
				}
				n.Advance()
			}
		}
	})
}
