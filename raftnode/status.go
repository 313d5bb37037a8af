package raftnode

import (
	"context"
	"encoding/json"
	"sync"

	"go.etcd.io/raft/v3"
)

var jsonMarshal = json.Marshal

func nodeCtx(n *Node) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-n.stopc; cancel() }()
	return ctx
}

// ID returns this node's id.
func (n *Node) ID() uint64 { return n.id }

// ClusterID returns the id of this node's cluster.
func (n *Node) ClusterID() uint64 { return n.clusterID }

// Leader returns the current leader, if one is known.
func (n *Node) Leader() (Member, bool) {
	id := n.lead.Load()
	if id == raft.None {
		return Member{}, false
	}
	m, ok := n.members.get(id)
	if !ok {
		m = Member{ID: id}
	}
	return m, true
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.lead.Load() == n.id }

// LeaderChanged returns a channel closed at the next change of leader, so
// work done only while this node leads can sleep until it does instead of
// polling IsLeader (take the channel before checking IsLeader).
func (n *Node) LeaderChanged() <-chan struct{} { return n.leadChange.wait() }

// AppliedChanged returns a channel closed when this node next applies
// entries (or its redis is rebuilt), so work that depends only on what was
// applied can sleep until then.
func (n *Node) AppliedChanged() <-chan struct{} { return n.applier.changed() }

// notifier is a broadcast: every wait returns the channel the next notify
// closes (etcd's pkg/notify).
type notifier struct {
	mu sync.Mutex
	c  chan struct{}
}

func (nt *notifier) wait() <-chan struct{} {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.c == nil {
		nt.c = make(chan struct{})
	}
	return nt.c
}

func (nt *notifier) notify() {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.c != nil {
		close(nt.c)
		nt.c = nil
	}
}

// Generation is even while this node's redis holds a complete applied
// prefix of the log, odd while it is rebuilt. A read that saw the same even
// generation before and after it ran saw a complete state.
func (n *Node) Generation() uint64 { return n.applier.gen.Load() }

// Removed reports whether this node has been removed from the cluster.
func (n *Node) Removed() bool { return n.members.isRemoved(n.id) }

// Members returns the current members.
func (n *Node) Members() []MemberInfo { return n.members.list() }

// LogFormat is the entry format this node writes: the newest every member
// decodes (see membership.logFormat).
func (n *Node) LogFormat() int { return n.members.logFormat() }

// Decodes is the newest entry format member m decodes.
func (m Member) Decodes() int { return m.decodes() }

// NodeStatus is one member as RAFT.INFO shows it.
type NodeStatus struct {
	MemberInfo
	// State is "self", "connected" or "unreachable": whether the
	// transport's streams to the member are up or, while this node has let
	// go of its peers (quiesced, peers.go), whether its process answers.
	State string
	Match uint64 // replicated index, known on the leader only
}

// Status is a snapshot of this node's raft state.
type Status struct {
	ID, ClusterID, Leader uint64
	Role                  string
	Term, Commit, Applied uint64
	FirstIndex, LastIndex uint64
	SnapshotIndex         uint64
	// Quarantined: the WAL lost a tail at restart and the node neither votes
	// nor campaigns until its log holds an entry of a term above T0.
	Quarantined bool
	T0          uint64
	Nodes       []NodeStatus
}

// Status reports this node's view of the cluster.
func (n *Node) Status() Status {
	rs := n.core.status()
	last, _ := n.storage.LastIndex()
	first, _ := n.storage.FirstIndex()
	st := Status{
		ID: n.id, ClusterID: n.clusterID, Leader: rs.Lead,
		Term: rs.GetTerm(), Commit: rs.GetCommit(), Applied: n.applier.applied.Load(),
		FirstIndex: first, LastIndex: last, SnapshotIndex: n.snapIndex.Load(),
		Quarantined: n.Quarantined(), T0: n.quar.term,
	}
	switch rs.RaftState {
	case raft.StateLeader:
		st.Role = "leader"
	case raft.StateFollower:
		st.Role = "follower"
	default:
		st.Role = "candidate"
	}
	for _, m := range n.members.list() {
		if m.ID == n.id && !m.Voting {
			st.Role = "learner"
		}
		ns := NodeStatus{MemberInfo: m, State: "connected"}
		switch {
		case m.ID == n.id:
			ns.State = "self"
		case !n.reachable(m):
			ns.State = "unreachable"
		}
		if pr, ok := rs.Progress[m.ID]; ok {
			ns.Match = pr.Match
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

// Serving reports whether this node's redis holds the applied log.
func (n *Node) Serving() bool { return n.applier.gen.Load()%2 == 0 }

// Quiesced reports whether the node's group is idle and quiesced: it does
// not tick until a request or message wakes it (quiesce.go).
func (n *Node) Quiesced() bool { return n.core.quiesced() }
