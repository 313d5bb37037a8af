package raftnode

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// Reasons a peer request is refused: the values of the reason label of
// raftproxy_peer_refused_total.
const (
	RefusedNoCert    = "no_cert"    // peer TLS: no client certificate
	RefusedBadCert   = "bad_cert"   // peer TLS: certificate not signed by the peer CA
	RefusedClusterID = "cluster_id" // X-Etcd-Cluster-ID (or cluster=) is not this cluster's
	RefusedNotMember = "not_member" // the sender is not a member of this cluster
)

// PeerRefusalReasons lists every reason, for exporting zero counts.
func PeerRefusalReasons() []string {
	return []string{RefusedNoCert, RefusedBadCert, RefusedClusterID, RefusedNotMember}
}

// PeerRefusals counts refused peer requests by reason.
type PeerRefusals struct {
	mu sync.Mutex
	n  map[string]uint64
}

// Add counts one refusal.
func (p *PeerRefusals) Add(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]uint64{}
	}
	p.n[reason]++
}

// Get returns the refusals counted for reason.
func (p *PeerRefusals) Get(reason string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[reason]
}

// PeerRefusals returns the host's count of refused peer requests; the peer
// listener's TLS layer adds its refusals to it too.
func (h *Host) PeerRefusals() *PeerRefusals { return &h.refused }

// peerURL is the URL peers reach addr at.
func (c *Config) peerURL(addr string) string {
	if c.PeerTLS.Empty() {
		return "http://" + addr
	}
	return "https://" + addr
}

// admitPeer checks a raft transport request (paths under /raft) before
// rafthttp sees it. rafthttp checks the cluster id itself but not that the
// sender of a pipeline message or snapshot is a member, and it answers a
// stream from an unknown sender by adding that sender as a remote to send
// to. So: the cluster id must be this cluster's, and the sender
// (X-Server-From, and for streams the id in the path) a peer the transport
// knows (a member, or one named when this node joined) that was not
// removed (a removed member is left to rafthttp, see below). These headers are not secret: against a stranger on the network
// they are a second line behind peer mTLS, which proves the sender holds a
// certificate the peer CA signed. Probes (/raft/probing) carry no sender
// and reveal nothing, so they pass.
func (n *Node) admitPeer(r *http.Request) (reason string, ok bool) {
	if strings.HasPrefix(r.URL.Path, rafthttp.ProbingPrefix) {
		return "", true
	}
	if r.Header.Get("X-Etcd-Cluster-ID") != types.ID(n.clusterID).String() {
		return RefusedClusterID, false
	}
	from, err := types.IDFromString(r.Header.Get("X-Server-From"))
	if err != nil {
		return RefusedNotMember, false
	}
	if n.members.isRemoved(uint64(from)) {
		// rafthttp answers a removed member's stream with 410 Gone, which
		// is how that member learns to stop.
		return "", true
	}
	if !n.knownPeer(uint64(from)) {
		return RefusedNotMember, false
	}
	if strings.HasPrefix(r.URL.Path, rafthttp.RaftStreamPrefix+"/") {
		if id, err := types.IDFromString(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]); err != nil || id != from {
			return RefusedNotMember, false
		}
	}
	return "", true
}

// knownPeer: id is another member of the cluster, as far as this node knows.
func (n *Node) knownPeer(id uint64) bool {
	if id == n.id || id == 0 || n.members.isRemoved(id) {
		return false
	}
	if _, ok := n.members.get(id); ok {
		return true
	}
	return n.transport.Get(types.ID(id)) != nil
}

// peerTransport returns an HTTP transport to peer processes that keeps one
// connection per peer alive for idle, over TLS with the peer certificate
// when tlsInfo names one (dialing for at most dialTimeout), and the URL
// scheme that goes with it.
func peerTransport(tlsInfo transport.TLSInfo, dialTimeout, idle time.Duration) (*http.Transport, string, error) {
	if tlsInfo.Empty() {
		return &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: idle}, "http", nil
	}
	t, err := transport.NewTransport(tlsInfo, dialTimeout)
	if err != nil {
		return nil, "", fmt.Errorf("peer TLS: %w", err)
	}
	t.MaxIdleConnsPerHost, t.IdleConnTimeout = 1, idle
	return t, "https", nil
}
