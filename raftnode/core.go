package raftnode

import (
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// core is the node's raft state machine: a raft.RawNode behind a lock.
//
// The goroutines that feed raft (the transport's receivers, the proposer,
// the reads, the membership calls) step it themselves under the lock and
// then wake the Ready loop, which alone takes Ready and calls Advance. This
// is raft.Node's model without its goroutine: raft.Node hands every
// proposal, message, Ready and Advance to one more goroutine and back,
// which costs a scheduler round trip per hop, several per log entry; the
// lock is held only for raft's own in-memory work, never across I/O.
//
// As with raft.Node, raft may be stepped between Ready and Advance.
type core struct {
	mu sync.Mutex
	rn *raft.RawNode
	// wake holds one token when raft may have a Ready the loop has not
	// taken: every call that can create work leaves one.
	wake chan struct{}
	// campaignPending: a campaign asked for before every committed entry
	// was applied, which raft would refuse (a new cluster's bootstrap
	// configuration is such an entry); advance starts it once they are.
	campaignPending bool
	// q is the node's quiescence (quiesce.go).
	q quiet
}

// newCore starts a raft state machine; peers bootstrap a new group's
// first configuration, nil restarts from storage.
func newCore(cfg *raft.Config, peers []raft.Peer) (*core, error) {
	rn, err := raft.NewRawNode(cfg)
	if err != nil {
		return nil, err
	}
	if len(peers) > 0 {
		if err := rn.Bootstrap(peers); err != nil {
			return nil, err
		}
	}
	c := &core{rn: rn, wake: make(chan struct{}, 1)}
	c.signal()
	return c, nil
}

func (c *core) signal() {
	signal(c.wake)
}

// do runs f on the raft state machine and wakes the Ready loop; it is
// activity, which wakes a quiesced node.
func (c *core) do(f func(rn *raft.RawNode) error) error {
	c.mu.Lock()
	c.activity(0)
	err := f(c.rn)
	c.mu.Unlock()
	c.signal()
	return err
}

// tick advances raft's clock; electionTicks is how long a leader must be
// idle before it quiesces the group.
func (c *core) tick(electionTicks int) {
	c.mu.Lock()
	c.rn.Tick()
	c.tickQuiet(electionTicks)
	c.mu.Unlock()
	c.signal()
}

// propose appends data to the log if this node leads, forwards it if it
// follows, and returns raft.ErrProposalDropped when no leader is known.
func (c *core) propose(data []byte) error {
	c.mu.Lock()
	c.activity(0)
	err := c.rn.Propose(data)
	c.mu.Unlock()
	c.signal()
	return err
}

func (c *core) proposeConfChange(cc *raftpb.ConfChange) error {
	return c.do(func(rn *raft.RawNode) error { return rn.ProposeConfChange(cc) })
}

// step takes a message from a peer. Like raft.Node, it drops a message
// raft reports it cannot take (a local kind from the network, a response
// from a member it does not know): the sender's retry or a later message
// covers it.
func (c *core) step(m *raftpb.Message) {
	c.mu.Lock()
	if !c.stepMarked(m) {
		_ = c.rn.Step(m)
		c.stepQuiet(m)
	}
	c.mu.Unlock()
	c.signal()
}

func (c *core) readIndex(rctx []byte) {
	_ = c.do(func(rn *raft.RawNode) error { rn.ReadIndex(rctx); return nil })
}

// campaign starts an election now, or as soon as this node has applied
// what it knows committed (raft refuses to campaign with configuration
// changes unapplied).
func (c *core) campaign() {
	_ = c.do(func(rn *raft.RawNode) error {
		if st := rn.BasicStatus(); st.Applied < st.GetCommit() {
			c.campaignPending = true
			return nil
		}
		return rn.Campaign()
	})
}

func (c *core) transferLeader(to uint64) {
	_ = c.do(func(rn *raft.RawNode) error { rn.TransferLeader(to); return nil })
}

// reportUnreachable is not activity: a quiesced leader has nothing to send
// to the member it cannot reach.
func (c *core) reportUnreachable(id uint64) {
	c.mu.Lock()
	c.rn.ReportUnreachable(id)
	c.mu.Unlock()
	c.signal()
}

func (c *core) reportSnapshot(id uint64, status raft.SnapshotStatus) {
	_ = c.do(func(rn *raft.RawNode) error { rn.ReportSnapshot(id, status); return nil })
}

func (c *core) applyConfChange(cc *raftpb.ConfChange) *raftpb.ConfState {
	var cs *raftpb.ConfState
	_ = c.do(func(rn *raft.RawNode) error { cs = rn.ApplyConfChange(cc); return nil })
	return cs
}

func (c *core) status() raft.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rn.Status()
}

// ready returns raft's outstanding work, if it has any. The caller handles
// it and calls advance before it calls ready again.
func (c *core) ready() (raft.Ready, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.rn.HasReady() {
		return raft.Ready{}, false
	}
	return c.rn.Ready(), true
}

// advance tells raft that rd is persisted, sent and handed to the applier.
func (c *core) advance(rd raft.Ready) {
	c.mu.Lock()
	c.rn.Advance(rd)
	if c.campaignPending {
		if st := c.rn.BasicStatus(); st.Applied >= st.GetCommit() {
			c.campaignPending = false
			_ = c.rn.Campaign()
		}
	}
	c.mu.Unlock()
}
