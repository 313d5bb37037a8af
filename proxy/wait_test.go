package proxy

import (
	"testing"

	"github.com/raftproxy/raftproxy/raftnode"
)

func TestReplicasAt(t *testing.T) {
	node := func(id, match uint64, voting bool) raftnode.NodeStatus {
		return raftnode.NodeStatus{MemberInfo: raftnode.MemberInfo{Member: raftnode.Member{ID: id}, Voting: voting}, Match: match}
	}
	five := []raftnode.NodeStatus{node(1, 10, true), node(2, 10, true), node(3, 9, true), node(4, 12, true), node(5, 3, false)}
	for _, tc := range []struct {
		name  string
		st    raftnode.Status
		index uint64
		want  int64
	}{
		{"leader counts others at or past the index", raftnode.Status{ID: 1, Role: "leader", Nodes: five}, 10, 2},
		{"leader counts learners too", raftnode.Status{ID: 1, Role: "leader", Nodes: five}, 3, 4},
		{"follower: majority of voters minus itself", raftnode.Status{ID: 2, Role: "follower", Nodes: five}, 10, 2},
		{"follower of three", raftnode.Status{ID: 2, Role: "follower", Nodes: five[:3]}, 10, 1},
		{"single node", raftnode.Status{ID: 1, Role: "leader", Nodes: five[:1]}, 10, 0},
	} {
		if got := replicasAt(tc.st, tc.index); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
