package raftnode

import (
	"context"
	"net/http"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// The node's side of the transport: what its Ready loop sends where
// (rafthttp, the process's coalesced heartbeats, snapshots with their
// files), and the node as rafthttp calls it.

// send hands msgs to the transport: the plain heartbeats to the process's
// coalescer while it coalesces (heartbeats.go), the rest to the process's
// stream to their peer while it shares one (streams.go), and what neither
// takes to rafthttp.
func (n *Node) send(msgs []*raftpb.Message) {
	if n.cfg.Heartbeats.coalescing() {
		msgs = n.cfg.Heartbeats.take(n.clusterID, msgs, n.coalescedPeer)
	}
	if n.cfg.Streams.sharing() {
		msgs = n.cfg.Streams.take(n.clusterID, msgs, n.peerAddr)
	}
	n.transport.Send(msgs)
}

// peerAddr is member id's peer address, "" when not known. A build that
// does not serve streams refuses one, and its messages stay on rafthttp.
func (n *Node) peerAddr(id uint64) string {
	m, _ := n.members.get(id)
	return m.PeerAddr
}

// coalescedPeer is the peer address to send member id's coalesced
// heartbeats to: "" when not known, or when its build does not serve them
// (a rolling upgrade; builds that do decode entry.PlacedFormat).
func (n *Node) coalescedPeer(id uint64) string {
	m, _ := n.members.get(id)
	if m.Format < entry.PlacedFormat {
		return ""
	}
	return m.PeerAddr
}

// Handler serves the raft transport's peer endpoints.
func (n *Node) Handler() http.Handler { return n.handler }

// transportHooks is the node as the rafthttp transport sees it.
type transportHooks Node

func (t *transportHooks) Process(ctx context.Context, m *raftpb.Message) error {
	if (*Node)(t).filterIncoming(m) {
		return nil
	}
	if m.GetType() == raftpb.MsgProp && raft.StateType(t.raftState.Load()) == raft.StateLeader {
		if !(*Node)(t).restamp(m) {
			return nil // every entry was damaged on its way: raft refuses an empty proposal
		}
	}
	if m.GetType() == raftpb.MsgSnap {
		if err := (*Node)(t).receiveSnapshot(m); err != nil {
			t.log.Error("refusing snapshot", "from", IDString(m.GetFrom()), "err", err)
			return err
		}
	}
	t.core.step(m)
	return nil
}

// splitSnapshots sends the MsgSnap messages of msgs with their RDB files and
// returns the others.
func (n *Node) splitSnapshots(msgs []*raftpb.Message) []*raftpb.Message {
	out := msgs[:0:0]
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgSnap {
			n.sendSnapshot(m)
			continue
		}
		out = append(out, m)
	}
	return out
}
func (t *transportHooks) IsIDRemoved(id uint64) bool { return t.members.isRemoved(id) }
func (t *transportHooks) ReportUnreachable(id uint64) {
	t.core.reportUnreachable(id)
}
func (t *transportHooks) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	if status == raft.SnapshotFailure {
		t.metrics.failSend.Inc()
	}
	t.core.reportSnapshot(id, status)
}
