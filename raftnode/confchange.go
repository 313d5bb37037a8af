package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Errors of membership operations.
var (
	ErrNoSuchMember    = errors.New("node id does not exist")
	ErrTransferTimeout = errors.New("transfer timed out")
	ErrOtherLeader     = errors.New("different node elected leader")
	ErrNoTransferee    = errors.New("no other voting member to hand leadership to")
)

// AddLearner adds a member as a learner: it replicates but does not vote,
// so it never counts in a quorum before it holds the log. The leader
// promotes it once it has caught up (see promoteLearners).
//
// Adding a member that is already there with the same addresses succeeds
// without a change: a joining node whose first request timed out retries
// with the same id, and the add it is retrying may have committed since.
func (n *Node) AddLearner(ctx context.Context, m Member) ([]MemberInfo, error) {
	if cur, ok := n.members.get(m.ID); ok && cur == m {
		return n.members.list(), nil
	}
	return n.proposeConf(ctx, raftpb.ConfChangeAddLearnerNode, m)
}

// RemoveMember removes a member. When it is the leader, leadership moves
// first, so the cluster never waits out an election timeout.
func (n *Node) RemoveMember(ctx context.Context, id uint64) ([]MemberInfo, error) {
	if _, ok := n.members.get(id); !ok {
		return nil, ErrNoSuchMember
	}
	if n.lead.Load() == id {
		if _, err := n.TransferLeadership(ctx, 0, id); err != nil {
			return nil, fmt.Errorf("move leadership off %s before removing it: %w", IDString(id), err)
		}
	}
	return n.proposeConf(ctx, raftpb.ConfChangeRemoveNode, Member{ID: id})
}

// UpdateMember records new addresses for a member.
func (n *Node) UpdateMember(ctx context.Context, m Member) ([]MemberInfo, error) {
	return n.proposeConf(ctx, raftpb.ConfChangeUpdateNode, m)
}

// TransferLeadership hands leadership from the current leader to target, or
// (target 0) to the most up-to-date other voter, and waits for the outcome.
// avoid (when not 0) is never chosen. It returns the new leader.
func (n *Node) TransferLeadership(ctx context.Context, target, avoid uint64) (uint64, error) {
	lead := n.lead.Load()
	if lead == raft.None {
		return 0, ErrNoLeader
	}
	if target == 0 && lead != n.id {
		// Only the leader knows which follower is most up to date; a
		// follower offers itself.
		if mi, ok := n.memberInfo(n.id); !ok || !mi.Voting || n.id == avoid {
			return 0, fmt.Errorf("only the leader knows which follower is most up to date; ask the leader or name a node")
		}
		target = n.id
	}
	if target == 0 {
		target = n.mostUpToDate(avoid)
		if target == 0 {
			return 0, ErrNoTransferee
		}
	}
	if target == lead {
		return lead, nil
	}
	if target == n.id && n.Quarantined() {
		return 0, ErrQuarantined
	}
	if mi, ok := n.memberInfo(target); !ok || !mi.Voting {
		return 0, fmt.Errorf("invalid target node id %s: not a voting member", IDString(target))
	}
	deadline := time.Now().Add(time.Duration(3*n.cfg.ElectionTicks) * n.cfg.TickInterval)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for time.Now().Before(deadline) {
		n.core.transferLeader(target)
		wait := time.Now().Add(time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
		for time.Now().Before(wait) && time.Now().Before(deadline) {
			switch l := n.lead.Load(); {
			case l == target:
				return target, nil
			case l != raft.None && l != lead:
				return l, ErrOtherLeader
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return 0, ErrTransferTimeout
			case <-n.stopc:
				return 0, ErrStopped
			}
		}
	}
	return 0, ErrTransferTimeout
}

func (n *Node) memberInfo(id uint64) (MemberInfo, bool) {
	for _, m := range n.members.list() {
		if m.ID == id {
			return m, true
		}
	}
	return MemberInfo{}, false
}

// mostUpToDate returns the voter (other than the leader and avoid) whose
// log matches the leader's furthest; 0 if none.
func (n *Node) mostUpToDate(avoid uint64) uint64 {
	st := n.core.status()
	var best, match uint64
	for id, pr := range st.Progress {
		if id == n.id || id == avoid || pr.IsLearner {
			continue
		}
		if best == 0 || pr.Match > match {
			best, match = id, pr.Match
		}
	}
	return best
}

// promoteLearners runs on every node and acts on the leader: a learner whose
// log is within promoteLag entries of the leader's is made a voter.
func (n *Node) promoteLearners() {
	const promoteLag = 64
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		// With no learner there is nothing to do until the members
		// change: an idle group's node then has no timer here.
		if ch := n.members.changed(); !n.members.hasLearners() {
			t.Stop()
			select {
			case <-ch:
				t.Reset(200 * time.Millisecond)
				continue
			case <-n.stopc:
				return
			}
		}
		select {
		case <-t.C:
		case <-n.stopc:
			return
		}
		if !n.IsLeader() {
			continue
		}
		st := n.core.status()
		last, _ := n.storage.LastIndex()
		for id, pr := range st.Progress {
			// RecentActive starts true for a new member, and with a short log
			// Match 0 is within the lag: only a learner that has answered
			// (the leader replicates to it) has shown it runs. Promoting one
			// that never did made a voter out of a join that had given up.
			if !pr.IsLearner || pr.State != tracker.StateReplicate || pr.Match == 0 ||
				pr.Match+promoteLag < last || !pr.RecentActive {
				continue
			}
			m, _ := n.members.get(id)
			ctx, cancel := context.WithTimeout(context.Background(), n.requestTimeout())
			_, err := n.proposeConf(ctx, raftpb.ConfChangeAddNode, m)
			cancel()
			if err != nil {
				n.log.Warn("promoting caught-up learner failed; will retry", "member", IDString(id), "err", err)
			} else {
				n.log.Info("promoted learner to voter", "member", IDString(id), "match", pr.Match, "last_index", last)
			}
			break // one membership change at a time
		}
	}
}

// refreshOwnRecord records this node's addresses and entry format in the
// cluster when they differ from its record: it restarted with different
// --advertise-addr or --advertise-peer-addr, or with a build that decodes a
// different entry format (an upgrade, or a rollback). Once it has applied
// the log it had (commit), it proposes an update. The cluster's format
// follows the members' records, so an upgrade raises it only through this
// update, once the upgraded node runs.
func (n *Node) refreshOwnRecord(commit uint64) {
	for {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-n.stopc:
			return
		}
		if n.applier.applied.Load() < commit || n.lead.Load() == raft.None {
			continue
		}
		if n.Removed() {
			return
		}
		old, ok := n.members.get(n.id)
		if !ok {
			continue // not a member yet: a joining node sent its record in JOIN
		}
		want := n.cfg.Self
		want.ID = n.id
		if old == want {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.requestTimeout())
		_, err := n.UpdateMember(ctx, want)
		cancel()
		if err == nil {
			n.log.Info("updated this node's record in the cluster", "addr", want.Addr, "peer_addr", want.PeerAddr, "format", want.Format,
				"old_addr", old.Addr, "old_peer_addr", old.PeerAddr, "old_format", old.decodes())
			return
		}
		n.log.Warn("updating this node's record in the cluster failed; retrying", "err", err)
	}
}
