package raftnode

import (
	"math"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
)

// peerSet is the transport's peers as this node added them. rafthttp keeps
// two streams and two probers per peer, which an idle group pays for even
// when it sends nothing; a node quiesced for a while lets go of its peers
// (detach) and takes them back (attach) before it sends again. Meanwhile a
// peer's message reaches it over rafthttp's pipeline, which needs no peer
// on the receiving side, and wakes it. The Ready loop owns the set (start
// fills it before the loop runs).
type peerSet struct {
	urls map[uint64]string
	// detached: the transport has none of urls. Only the Ready loop
	// changes it; status reads it too.
	detached atomic.Bool
	// calmUntil (unix nanoseconds) is when the transport's churn warnings
	// are trouble again: while a node is quiesced or detached, and for two
	// election timeouts after it attaches, while its peers attach too.
	calmUntil atomic.Int64
}

// calm reports whether the transport's churn warnings are expected now.
func (n *Node) calm() bool { return time.Now().UnixNano() < n.peers.calmUntil.Load() }

// setCalm marks the transport's churn as expected (on) or expected for two
// more election timeouts (off).
func (n *Node) setCalm(on bool) {
	if on {
		n.peers.calmUntil.Store(math.MaxInt64)
	} else {
		n.peers.calmUntil.Store(time.Now().Add(2 * n.electionTimeout()).UnixNano())
	}
}

func (n *Node) addPeer(m Member) {
	if m.ID == n.id || m.PeerAddr == "" {
		return
	}
	url := n.cfg.peerURL(m.PeerAddr)
	if old, ok := n.peers.urls[m.ID]; ok {
		if old != url {
			n.updatePeer(m.ID, m.PeerAddr)
		}
		return
	}
	if n.peers.urls == nil {
		n.peers.urls = map[uint64]string{}
	}
	n.peers.urls[m.ID] = url
	if !n.peers.detached.Load() {
		n.transport.AddPeer(types.ID(m.ID), []string{url})
	}
}

func (n *Node) updatePeer(id uint64, addr string) {
	url := n.cfg.peerURL(addr)
	n.peers.urls[id] = url
	if !n.peers.detached.Load() {
		n.transport.UpdatePeer(types.ID(id), []string{url})
	}
}

func (n *Node) removePeer(id uint64) {
	delete(n.peers.urls, id)
	if !n.peers.detached.Load() {
		n.transport.RemovePeer(types.ID(id))
	}
}

// detachPeers stops the transport's streams and probers to every peer.
func (n *Node) detachPeers() {
	if n.peers.detached.Load() {
		return
	}
	n.peers.detached.Store(true)
	for id := range n.peers.urls {
		n.transport.RemovePeer(types.ID(id))
	}
}

// attachPeers gives the transport its peers back, before anything is sent.
func (n *Node) attachPeers() {
	if !n.peers.detached.Load() {
		return
	}
	n.peers.detached.Store(false)
	for id, url := range n.peers.urls {
		n.transport.AddPeer(types.ID(id), []string{url})
	}
}

// reachable reports whether member m's transport streams are up or, while
// this node has let go of its peers, whether m's process answers probes.
func (n *Node) reachable(m MemberInfo) bool {
	if n.peers.detached.Load() && n.cfg.Liveness != nil && m.PeerAddr != "" {
		return n.cfg.Liveness.Up(m.PeerAddr)
	}
	return !n.transport.ActiveSince(types.ID(m.ID)).IsZero()
}
