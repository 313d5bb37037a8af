package raftnode

import (
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"
)

// TestCampaignAfterBootstrap: a new single-voter cluster elects itself at
// once. Raft refuses a campaign while the bootstrap configuration is
// committed but not applied, so the core holds the campaign until the
// Ready loop has applied it, instead of losing it to an election timeout.
func TestCampaignAfterBootstrap(t *testing.T) {
	st := raft.NewMemoryStorage()
	c, err := newCore(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: st, MaxSizePerMsg: 1 << 20,
		MaxInflightMsgs: 256, Logger: raftLogger{slog.New(slog.DiscardHandler)}}, []raft.Peer{{ID: 1}})
	if err != nil {
		t.Fatal(err)
	}
	c.campaign() // at once, as RAFT.CLUSTER INIT does
	// The Ready loop, without a single tick.
	for range 10 {
		rd, ok := c.ready()
		if !ok {
			break
		}
		st.Append(rd.Entries)
		c.advance(rd)
	}
	if s := c.status(); s.RaftState != raft.StateLeader {
		t.Fatalf("state %v after the Readys, want leader without waiting for an election timeout", s.RaftState)
	}
}
