package raftnode

import (
	"bytes"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// Quiescence: a group with nothing to do stops ticking, so an idle group
// costs no timers, heartbeats or Readies (CockroachDB's quiesced ranges,
// TiKV's hibernate regions). Ticks only drive elections and heartbeats,
// never safety: a node that does not tick still takes every message and
// proposal as before.
//
//   - The leader of a group idle for an election timeout, with every
//     member's log matching its own and everything committed and applied,
//     sends each member a heartbeat marked quiesceCtx.
//   - A follower that gets it from its leader, in its term, and has
//     everything the leader commits stops ticking and answers quiescedCtx.
//     It then watches the leader's process (Liveness) instead of counting
//     ticks.
//   - The leader stops ticking once every member answered. A member that
//     cannot, or does not know how (an older build answers as to any
//     heartbeat), keeps the leader ticking, and the leader's next heartbeat
//     wakes the followers that stopped.
//
// Anything else wakes a node: a proposal, a read, a membership or
// leadership call, and every message but heartbeats. A follower that wakes
// for a reason its leader did not send tells the leader that quiesced it
// with wakeCtx, so the two tick together again and the follower's
// election timer never runs against a silent leader. A follower whose
// leader's process stops answering wakes and ticks, and so elects a new
// leader in about two election timeouts instead of one. A node quiesced
// for a while also lets go of its transport peers (peers.go).
//
// The marked messages are raftproxy's, not raft's: raft reads a heartbeat
// answer's context as its own read-index counter, so an answer marked by
// us never reaches raft (core.step), and a marked heartbeat reaches it
// unmarked.
var (
	quiesceCtx  = []byte("raftproxy/quiesce")  // leader → followers: stop ticking
	quiescedCtx = []byte("raftproxy/quiesced") // follower → leader: stopped
	wakeCtx     = []byte("raftproxy/wake")     // follower → leader: tick again
)

// quiet is a core's quiescence; its fields are guarded by core.mu.
type quiet struct {
	// allowed: the node may quiesce (it has a Liveness and is not in
	// quarantine); set by the node.
	allowed bool
	// on: the node does not tick.
	on bool
	// idle counts a leader's ticks since anything but ticks and heartbeats
	// happened.
	idle int
	// asked is the term of the leader's quiesce round in flight, 0 if none,
	// started at idle count askedAt; acks are the members that answered it.
	asked   uint64
	askedAt int
	acks    map[uint64]bool
	// by is the leader whose round quiesced this follower, in term byTerm:
	// the only leader it tells when it wakes, as only that leader's build
	// knows the marked answer.
	by, byTerm uint64
	// out are the marked messages to send, taken by the Ready loop.
	out []*raftpb.Message
}

// marked reports whether m is one of quiescence's own messages.
func marked(m *raftpb.Message, ctx []byte) bool { return bytes.Equal(m.GetContext(), ctx) }

// stepMarked takes quiescence's own messages in place of raft; it reports
// false for the others, which raft steps. c.mu is held.
func (c *core) stepMarked(m *raftpb.Message) bool {
	switch m.GetType() {
	case raftpb.MsgHeartbeat:
		if !marked(m, quiesceCtx) {
			return false
		}
		unmarked := proto.Clone(m).(*raftpb.Message)
		unmarked.Context = nil
		_ = c.rn.Step(unmarked)
		c.followerQuiesce(m)
		return true
	case raftpb.MsgHeartbeatResp:
		switch {
		case marked(m, quiescedCtx):
			c.leaderAck(m)
		case marked(m, wakeCtx):
			c.activity(m.GetFrom())
		case marked(m, quiesceCtx):
			// An older build's echo of the round: it does not stop, and
			// the leader keeps ticking.
		default:
			return false
		}
		return true
	}
	return false
}

// stepQuiet is core.step's part in quiescence once raft has stepped m:
// every message but heartbeats is activity. c.mu is held.
func (c *core) stepQuiet(m *raftpb.Message) {
	switch m.GetType() {
	case raftpb.MsgHeartbeat:
		// Not activity, but only a ticking leader sends it: a quiesced
		// follower ticks again.
		c.wakeUp(m.GetFrom())
	case raftpb.MsgHeartbeatResp:
		// Neither activity nor a reason to wake: a quiesced leader still
		// gets the answers to its last heartbeats.
	default:
		c.activity(m.GetFrom())
	}
}

// activity resets the leader's idle count and wakes a quiesced node; from
// is the sender of the message that woke it (0 for a local call), which a
// follower's leader need not be told about. c.mu is held.
func (c *core) activity(from uint64) {
	c.q.idle = 0
	c.q.asked, c.q.askedAt = 0, 0
	c.wakeUp(from)
}

// wakeUp makes a quiesced node tick again; a follower tells the leader
// that quiesced it unless from (the waking message's sender) is that
// leader. c.mu is held.
func (c *core) wakeUp(from uint64) {
	if !c.q.on {
		return
	}
	c.q.on = false
	st := c.rn.BasicStatus()
	if st.RaftState == raft.StateFollower && st.Lead == c.q.by && st.GetTerm() == c.q.byTerm && st.Lead != from {
		c.q.out = append(c.q.out, &raftpb.Message{Type: raftpb.MsgHeartbeatResp.Enum(), To: proto.Uint64(st.Lead),
			From: proto.Uint64(st.ID), Term: proto.Uint64(st.GetTerm()), Context: wakeCtx})
	}
}

// followerQuiesce stops a follower's ticks on its leader's quiesce round,
// if it follows that leader in that term and has all that it commits.
func (c *core) followerQuiesce(m *raftpb.Message) {
	st := c.rn.BasicStatus()
	if !c.q.allowed || st.RaftState != raft.StateFollower || st.Lead != m.GetFrom() ||
		st.GetTerm() != m.GetTerm() || st.GetCommit() != m.GetCommit() {
		c.wakeUp(m.GetFrom())
		return
	}
	c.q.on = true
	c.q.by, c.q.byTerm = st.Lead, st.GetTerm()
	c.q.out = append(c.q.out, &raftpb.Message{Type: raftpb.MsgHeartbeatResp.Enum(), To: proto.Uint64(st.Lead),
		From: proto.Uint64(st.ID), Term: proto.Uint64(st.GetTerm()), Context: quiescedCtx})
}

// leaderAck counts a follower's answer to the quiesce round; the leader
// stops ticking when every member has answered.
func (c *core) leaderAck(m *raftpb.Message) {
	st := c.rn.BasicStatus()
	if c.q.asked == 0 || st.RaftState != raft.StateLeader || m.GetTerm() != c.q.asked {
		return
	}
	c.q.acks[m.GetFrom()] = true
	all := true
	c.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id != st.ID && !c.q.acks[id] {
			all = false
		}
	})
	if all {
		c.q.on = true
		c.q.asked = 0
	}
}

// tickQuiet is core.tick's part: a leader idle for an election timeout,
// whose members all match its log, starts a quiesce round. c.mu is held.
func (c *core) tickQuiet(electionTicks int) {
	c.q.idle++
	if c.q.asked != 0 && c.q.idle-c.q.askedAt >= roundTicks(electionTicks) {
		// An answer was lost, or a member does not quiesce: the round
		// ends, late answers count for nothing, and raft's heartbeats go
		// again (roundHeartbeats).
		c.q.asked = 0
	}
	if !c.q.allowed || c.q.on || c.q.asked != 0 || c.q.idle < electionTicks {
		return
	}
	if c.q.askedAt != 0 && c.q.idle-c.q.askedAt < electionTicks {
		return // one round per election timeout
	}
	st := c.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None || st.Applied != st.GetCommit() {
		return
	}
	commit := st.GetCommit()
	synced, others := true, 0
	c.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if pr.Match != commit || (id != st.ID && pr.State != tracker.StateReplicate) {
			synced = false
		}
		if id != st.ID {
			others++
		}
	})
	switch {
	case !synced:
		return
	case others == 0:
		c.q.on = true // a group of one: no one to tell
		return
	}
	c.q.asked, c.q.askedAt = st.GetTerm(), c.q.idle
	c.q.acks = map[uint64]bool{}
	c.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id != st.ID {
			c.q.out = append(c.q.out, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: proto.Uint64(id),
				From: proto.Uint64(st.ID), Term: proto.Uint64(st.GetTerm()), Commit: proto.Uint64(commit), Context: quiesceCtx})
		}
	})
}

// roundTicks is how long a quiesce round lasts: its answers come back well
// within it (one tick's wait in a coalesced batch each way), and the
// followers that do not quiesce hear no heartbeat of raft's own meanwhile
// (roundHeartbeats), which is well within an election timeout.
func roundTicks(electionTicks int) int { return max(electionTicks/2, 2) }

// roundHeartbeats drops from a leader's outgoing messages raft's plain
// heartbeats while a quiesce round is out. One sent after the round's
// marked heartbeat, arriving after it, wakes a follower that just
// quiesced, which does not tell its leader (the sender plainly ticks); the
// leader then stops ticking once every answer is in, and the follower,
// ticking alone, campaigns. The round's marked heartbeat is a heartbeat to
// raft too, and the round ends in roundTicks.
func (c *core) roundHeartbeats(msgs []*raftpb.Message) []*raftpb.Message {
	c.mu.Lock()
	asked := c.q.asked != 0
	c.mu.Unlock()
	if !asked {
		return msgs
	}
	return slices.DeleteFunc(msgs, func(m *raftpb.Message) bool {
		return m.GetType() == raftpb.MsgHeartbeat && len(m.GetContext()) == 0
	})
}

// takeQuietMessages returns the marked messages to send, once.
func (c *core) takeQuietMessages() []*raftpb.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.q.out
	c.q.out = nil
	return out
}

// quiesced reports whether the node does not tick.
func (c *core) quiesced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.on
}

// setQuiesceAllowed says whether the node may quiesce; a node that may not
// wakes.
func (c *core) setQuiesceAllowed(ok bool) {
	c.mu.Lock()
	c.q.allowed = ok
	if !ok {
		c.activity(0)
	}
	c.mu.Unlock()
	c.signal()
}

// poke wakes the node from quiescence, as any local call does.
func (c *core) poke() {
	c.mu.Lock()
	c.activity(0)
	c.mu.Unlock()
	c.signal()
}

// wakeFromDown wakes a quiesced follower whose leader's process stopped
// answering: it ticks, and elects a new leader if that one is gone. silent
// is how many ticks the leader has been silent for: Liveness waits an
// election timeout before it calls a process down, and the follower's
// election clock, stopped while it was quiesced, counts that silence too.
// It then campaigns within one more election timeout, as a ticking
// follower would, not two; and its vote for another follower that woke so
// is not held back by a lease on a leader it has not heard from meanwhile.
func (c *core) wakeFromDown(silent int) {
	c.mu.Lock()
	c.wakeUp(0)
	if c.rn.BasicStatus().RaftState == raft.StateFollower {
		for range silent {
			c.rn.Tick()
		}
	}
	c.mu.Unlock()
	c.signal()
}

// leaderDown is closed when the process of the leader this quiesced
// follower follows stops answering; nil when the node leads or knows no
// address to watch, and then it does not stay quiesced.
func (n *Node) leaderDown() (<-chan struct{}, bool) {
	lead := n.lead.Load()
	if lead == n.id {
		return nil, true
	}
	m, ok := n.members.get(lead)
	if lead == raft.None || !ok || m.PeerAddr == "" || n.cfg.Liveness == nil {
		return nil, false
	}
	return n.cfg.Liveness.Down(m.PeerAddr), true
}

// quiesceAllowed: the node has a Liveness to watch its leader with, and is
// not quarantined (its log needs a ticking leader's repair).
func (n *Node) quiesceAllowed() bool {
	return n.cfg.Liveness != nil && !n.quar.on.Load()
}

func (n *Node) quiescedGauge(on bool) {
	if on {
		n.metrics.quiesced.Set(1)
	} else {
		n.metrics.quiesced.Set(0)
	}
}
