package raftnode

import (
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// memGroup is a raft group of cores in memory: deliver passes the messages
// of every Ready, except to or from a cut member.
type memGroup struct {
	cores map[uint64]*core
	store map[uint64]*raft.MemoryStorage
	cut   map[uint64]bool
	reads map[uint64][]raft.ReadState
}

func newMemGroup(t *testing.T, ids ...uint64) *memGroup {
	g := &memGroup{cores: map[uint64]*core{}, store: map[uint64]*raft.MemoryStorage{}, cut: map[uint64]bool{}, reads: map[uint64][]raft.ReadState{}}
	var peers []raft.Peer
	for _, id := range ids {
		peers = append(peers, raft.Peer{ID: id})
	}
	for _, id := range ids {
		st := raft.NewMemoryStorage()
		c, err := newCore(&raft.Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: st, MaxSizePerMsg: 1 << 20,
			MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true, ReadOnlyOption: raft.ReadOnlySafe,
			Logger: raftLogger{slog.New(slog.DiscardHandler)}}, peers)
		if err != nil {
			t.Fatal(err)
		}
		c.q.allowed = true
		g.cores[id], g.store[id] = c, st
	}
	return g
}

// deliver runs every core's Readies until no message is left in flight.
func (g *memGroup) deliver() {
	for more := true; more; {
		more = false
		for id, c := range g.cores {
			for {
				rd, ok := c.ready()
				if !ok {
					break
				}
				g.store[id].Append(rd.Entries)
				g.reads[id] = append(g.reads[id], rd.ReadStates...)
				msgs := append(rd.Messages, c.takeQuietMessages()...)
				c.advance(rd)
				for _, m := range msgs {
					if to := g.cores[m.GetTo()]; to != nil && !g.cut[m.GetTo()] && !g.cut[id] {
						to.step(m)
						more = true
					}
				}
			}
			if q := c.takeQuietMessages(); len(q) > 0 {
				for _, m := range q {
					if to := g.cores[m.GetTo()]; to != nil && !g.cut[m.GetTo()] && !g.cut[id] {
						to.step(m)
						more = true
					}
				}
			}
		}
	}
}

// TestQuiesceMarkedNeverReachRaft: raft reads a heartbeat answer's context
// as its read-index counter, so a marked answer stepped into raft would
// count as an acknowledgement of reads the follower never saw. A leader cut
// off from both followers gets marked answers from one of them (sent
// before the cut) while a read waits, and must still not confirm it.
func TestQuiesceMarkedNeverReachRaft(t *testing.T) {
	g := newMemGroup(t, 1, 2, 3)
	g.deliver()
	g.cores[1].campaign()
	g.deliver()
	if st := g.cores[1].status(); st.RaftState != raft.StateLeader {
		t.Fatalf("node 1 is %v", st.RaftState)
	}
	term := g.cores[1].status().Term
	g.cut[2], g.cut[3] = true, true
	g.cores[1].readIndex(readCtx(1))
	g.deliver()
	for _, ctx := range [][]byte{quiesceCtx, quiescedCtx, wakeCtx} {
		g.cores[1].step(&raftpb.Message{Type: raftpb.MsgHeartbeatResp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1),
			Term: term, Context: ctx})
		g.deliver()
	}
	if rs := g.reads[1]; len(rs) != 0 {
		t.Fatalf("a leader cut off from its followers confirmed a read: %+v", rs)
	}
}

// TestQuiesceRound: an idle group's leader quiesces it once every member
// answered; a proposal on a follower wakes every node.
func TestQuiesceRound(t *testing.T) {
	g := newMemGroup(t, 1, 2, 3)
	g.deliver()
	g.cores[1].campaign()
	g.deliver()
	quiet := func() (n int) {
		for _, c := range g.cores {
			if c.quiesced() {
				n++
			}
		}
		return n
	}
	for i := 0; i < 30 && quiet() < 3; i++ {
		for _, c := range g.cores {
			if !c.quiesced() {
				c.tick(10)
			}
		}
		g.deliver()
	}
	if quiet() != 3 {
		t.Fatalf("%d of 3 nodes quiesced after 30 idle ticks", quiet())
	}
	if err := g.cores[2].propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	g.deliver()
	if n := quiet(); n != 0 {
		t.Fatalf("%d nodes still quiesced after a proposal", n)
	}
}

// TestWakeFromDown: when a quiesced group's leader dies, its followers,
// woken by Liveness after an election timeout of silence, count that
// silence on their election clocks: a new leader is elected within one
// more election timeout (10 ticks), where followers that start counting
// only then take 10 to 20. Raft's election timeouts are random, so the
// group is quiesced and its leader killed five times.
func TestWakeFromDown(t *testing.T) {
	for round := range 5 {
		g := newMemGroup(t, 1, 2, 3)
		g.deliver()
		g.cores[1].campaign()
		g.deliver()
		for i := 0; i < 30; i++ {
			for _, c := range g.cores {
				if !c.quiesced() {
					c.tick(10)
				}
			}
			g.deliver()
		}
		for id, c := range g.cores {
			if !c.quiesced() {
				t.Fatalf("round %d: node %d not quiesced", round, id)
			}
		}
		g.cut[1] = true // the leader's process dies
		for _, id := range []uint64{2, 3} {
			g.cores[id].wakeFromDown(9)
		}
		g.deliver()
		ticks := 0
		leader := func() bool {
			for _, id := range []uint64{2, 3} {
				if g.cores[id].rn.BasicStatus().RaftState == raft.StateLeader {
					return true
				}
			}
			return false
		}
		for ; !leader() && ticks < 40; ticks++ {
			for _, id := range []uint64{2, 3} {
				g.cores[id].tick(10)
			}
			g.deliver()
		}
		if !leader() || ticks > 10 {
			t.Fatalf("round %d: new leader after %d ticks (leader: %v), want at most 10", round, ticks, leader())
		}
		t.Logf("round %d: new leader after %d ticks", round, ticks)
	}
}
