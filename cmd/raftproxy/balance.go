package main

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
)

// balanceLeaders spreads the leadership of a sharded cluster's groups over
// the nodes, so that writes (which every shard's leader orders) are spread
// too: INIT SHARDS makes the first node lead every shard, and a node that
// was down finds the others leading its share. Every few seconds a node
// that leads more groups than its share, ceil(groups/nodes), hands one to
// the voter of that group that leads the fewest. Each node decides only
// for the groups it leads, from what all of them hold (every node holds
// every shard), so the moves converge without a coordinator.
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

// balanceOnce makes at most one leadership transfer.
func (ss *stacks) balanceOnce(ctx context.Context) {
	type group struct {
		n      *raftnode.Node
		leader uint64
		voters []uint64
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
		self = s.ID
		g := group{n: n, leader: s.Leader}
		for _, m := range s.Nodes {
			if m.Voting {
				g.voters = append(g.voters, m.ID)
				led[m.ID] += 0 // every voter counts, leading nothing or not
			}
		}
		if s.Leader != 0 {
			led[s.Leader]++
		}
		groups = append(groups, g)
	}
	if len(led) < 2 || len(groups) < 2 {
		return
	}
	share := (len(groups) + len(led) - 1) / len(led)
	if led[self] <= share {
		return
	}
	for _, g := range slices.Backward(groups) { // the primary group last
		if g.leader != self {
			continue
		}
		var to uint64
		for _, v := range g.voters {
			if v != self && led[v] < share && (to == 0 || led[v] < led[to] || (led[v] == led[to] && v < to)) {
				to = v
			}
		}
		if to == 0 {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := g.n.TransferLeadership(tctx, to, 0)
		cancel()
		if err != nil {
			ss.log.Warn("moving a shard's leadership to spread the leaders failed", "cluster", raftnode.IDString(g.n.ClusterID()), "to", raftnode.IDString(to), "err", err)
		} else {
			ss.log.Info("moved a shard's leadership to spread the leaders", "cluster", raftnode.IDString(g.n.ClusterID()), "to", raftnode.IDString(to),
				"leading_here", led[self]-1, "share", share)
		}
		return
	}
}
