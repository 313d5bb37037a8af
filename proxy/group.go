package proxy

import (
	"context"
	"os"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/snapshot"
)

// The proxy serves one node of one Raft group, through these interfaces
// (*raftnode.Node implements Group); a process with several groups builds a
// proxy per group from each one's values.

// Proposer puts requests in the log. A Future completes with the request's
// reply once this node has applied it, or with an error.
type Proposer interface {
	ProposeRequest(ctx context.Context, req entry.Request) *raftnode.Future
	// ProposeTagged is ProposeRequest with a tag of the caller's, which the
	// apply layer's events carry (CLIENT TRACKING's NOLOOP).
	ProposeTagged(ctx context.Context, req entry.Request, tag uint64) *raftnode.Future
}

// Reader makes local reads linearizable: a ReadIndex round, then the local
// redis once it has applied that far and holds a whole state.
type Reader interface {
	// StartRead joins the next ReadIndex round.
	StartRead() raftnode.ReadWait
	// EnterRead admits a read to redis; the func ends it.
	EnterRead(ctx context.Context) (func(), error)
	// Generation is even while redis holds a whole applied prefix of the
	// log; a read that saw the same even value before and after it ran
	// saw a whole state.
	Generation() uint64
	Serving() bool
	// Now is the time this node would stamp an entry with as the leader.
	Now() int64
	CommitIndex() uint64
	// CheckStateMachine asks for redis to be checked now (it restarted).
	CheckStateMachine()
}

// ScriptRunner is the killable request (a script) the node runs.
type ScriptRunner interface {
	Busy() (kind uint8, busy bool)
	BusyAfter() time.Duration
	Kill(ctx context.Context, kind uint8) error
}

// Membership is the group's members and leadership, and its snapshots, for
// the RAFT.* and CLUSTER commands.
type Membership interface {
	ID() uint64
	ClusterID() uint64
	IsLeader() bool
	// LeaderChanged is closed at the next change of leader.
	LeaderChanged() <-chan struct{}
	// AppliedChanged is closed when the node next applies entries.
	AppliedChanged() <-chan struct{}
	Leader() (raftnode.Member, bool)
	Members() []raftnode.MemberInfo
	// LogFormat is the entry format the cluster writes: the newest every
	// member decodes.
	LogFormat() int
	Status() raftnode.Status
	Removed() bool
	// Done is closed when the node has stopped.
	Done() <-chan struct{}
	AddLearner(ctx context.Context, m raftnode.Member) ([]raftnode.MemberInfo, error)
	RemoveMember(ctx context.Context, id uint64) ([]raftnode.MemberInfo, error)
	TransferLeadership(ctx context.Context, target, avoid uint64) (uint64, error)
	Compact(ctx context.Context) error
	Backup(ctx context.Context) (snapshot.Meta, *os.File, error)
}

// Group is this process's node of a Raft group.
type Group interface {
	Proposer
	Reader
	ScriptRunner
	Membership
}

// Cluster makes, joins and holds this process's node of the group.
type Cluster interface {
	// Node returns the node; nil before the cluster is initialised or
	// joined, and after the node was removed.
	Node() Group
	// Init makes a new cluster of this node alone (RAFT.CLUSTER INIT).
	Init() (Group, error)
	// InitAs is Init with this node's id given: a node is the same member
	// in every shard's group.
	InitAs(id uint64) (Group, error)
	// Join makes this node the member id of cluster clusterID, whose
	// members are given (RAFT.CLUSTER JOIN).
	Join(clusterID, id uint64, members []raftnode.Member) (Group, error)
}
