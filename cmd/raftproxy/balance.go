package main

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
)

// balanceLeaders spreads the leadership of a sharded cluster's groups over
// the nodes, so that writes (which every shard's leader orders) are spread
// too: INIT SHARDS makes the first node lead every shard, and a node that
// was down finds the others leading its share. A node takes leadership
// rather than being given it: every few seconds, a node that serves every
// group it holds and leads at least two fewer groups than another asks
// for the leadership of one of that node's groups, so the counts end
// within one of each other.
// So leadership only ever goes to a node that is up and has applied its
// log, never to one that is down or still loading. Each node decides from
// what the groups it holds say (all of them, or those placed on it, and
// the primary), without a coordinator.
func (ss *stacks) balanceLeaders(ctx context.Context) {
	for {
		select {
		case <-time.After(2*time.Second + rand.N(time.Second)):
		case <-ctx.Done():
			return
		}
		if ss.Routing() == nil {
			continue
		}
		ss.balanceOnce(ctx)
	}
}

// balanceOnce asks for at most one group's leadership.
func (ss *stacks) balanceOnce(ctx context.Context) {
	type group struct {
		n      *raftnode.Node
		leader uint64
	}
	var groups []group
	led := map[uint64]int{}
	var self uint64
	for _, st := range ss.list() {
		n := st.host.Node()
		if n == nil {
			continue
		}
		s := n.Status()
		if !n.Serving() || s.Applied < s.Commit || s.Quarantined {
			return // this node is not ready to lead everything it holds
		}
		self = s.ID
		for _, m := range s.Nodes {
			if m.Voting {
				led[m.ID] += 0 // every voter counts, leading nothing or not
			}
			if m.ID == self && !m.Voting {
				return
			}
		}
		if s.Leader != 0 {
			led[s.Leader]++
		}
		groups = append(groups, group{n: n, leader: s.Leader})
	}
	if len(led) < 2 || len(groups) < 2 {
		return
	}
	// A node leading at least two fewer groups than another takes one of
	// that node's: the counts end within one of each other.
	var from *group
	for i := range groups {
		g := &groups[i]
		if g.leader != 0 && g.leader != self && led[g.leader] > led[self]+1 && (from == nil || led[g.leader] > led[from.leader]) {
			from = g
		}
	}
	if from == nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := from.n.TransferLeadership(tctx, self, 0)
	cancel()
	if err != nil {
		ss.log.Warn("taking a shard's leadership to spread the leaders failed", "cluster", raftnode.IDString(from.n.ClusterID()),
			"from", raftnode.IDString(from.leader), "err", err)
		return
	}
	ss.log.Info("took a shard's leadership to spread the leaders", "cluster", raftnode.IDString(from.n.ClusterID()),
		"from", raftnode.IDString(from.leader), "leading_here", led[self]+1, "leading_there", led[from.leader]-1)
}
