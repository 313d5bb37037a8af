package raftnode

import (
	"net/http"
	"slices"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// PeerMux serves the raft peer traffic of many groups hosted by one process
// on one listener. Every group is a raft cluster of its own, with its own
// cluster id, and every peer request names it: rafthttp's in the
// X-Etcd-Cluster-ID header, raftproxy's own (the quarantine's step-down) in
// the cluster query parameter. So a request goes to the Host whose node
// belongs to that cluster, and each Host then admits it as it does alone.
// Probes name no cluster and reveal nothing: any group answers them. A
// request for a cluster no group here belongs to goes to the first Host
// (the primary group's), which refuses it and counts the refusal, as a
// node of one group does.
type PeerMux struct {
	mu    sync.RWMutex
	hosts []*Host
	// byID caches the hosts by cluster id; a Host gets its id at INIT or
	// JOIN, so a miss rebuilds it.
	byID map[uint64]*Host
	// calls are the peer calls served besides the built-in ones
	// (peercalls.go), by path.
	calls map[string]http.Handler
}

// NewPeerMux returns a mux over hosts; Add adds more.
func NewPeerMux(hosts ...*Host) *PeerMux {
	return &PeerMux{hosts: hosts, byID: map[uint64]*Host{}}
}

// Add routes the traffic of h's group here too.
func (m *PeerMux) Add(h *Host) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hosts = append(m.hosts, h)
}

// Remove stops routing h's group here.
func (m *PeerMux) Remove(h *Host) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hosts = slices.DeleteFunc(m.hosts, func(x *Host) bool { return x == h })
	clear(m.byID)
}

// ServeHTTP routes a peer request to its group's Host, and serves the
// peer calls (peercalls.go) itself.
func (m *PeerMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == heartbeatsPath {
		m.serveHeartbeats(w, r) // each message is admitted by its own group
		return
	}
	if r.URL.Path == alivePath {
		// It reveals nothing, as a probe; and as to a probe, a process
		// with no group yet answers that it is not there.
		if m.any() == nil {
			http.Error(w, "raftproxy: this node has no cluster yet", http.StatusServiceUnavailable)
			return
		}
		serveAlive(w, r)
		return
	}
	if r.URL.Path == streamPath {
		m.serveStream(w, r) // so is each message of a stream
		return
	}
	if h := m.call(r.URL.Path); h != nil {
		if !m.admitCall(r) {
			m.refuseCall()
			http.Error(w, "not a member", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
		return
	}
	id := r.Header.Get("X-Etcd-Cluster-ID")
	if id == "" {
		id = r.URL.Query().Get("cluster")
	}
	if id == "" {
		if h := m.any(); h != nil {
			h.ServeHTTP(w, r)
			return
		}
		http.Error(w, "raftproxy: this node has no cluster yet", http.StatusServiceUnavailable)
		return
	}
	cid, err := types.IDFromString(id)
	h := m.lookup(uint64(cid))
	if err != nil || h == nil {
		h = m.first()
	}
	if h == nil {
		// rafthttp's own answer to another cluster: a sender treats it as
		// passing trouble, never as removal.
		http.Error(w, rafthttp.ErrClusterIDMismatch.Error(), http.StatusPreconditionFailed)
		return
	}
	h.ServeHTTP(w, r)
}

func (m *PeerMux) first() *Host {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.hosts) == 0 {
		return nil
	}
	return m.hosts[0]
}

func (m *PeerMux) lookup(cid uint64) *Host {
	m.mu.RLock()
	h := m.byID[cid]
	m.mu.RUnlock()
	if h != nil {
		return h
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.byID)
	for _, h := range m.hosts {
		if n := h.Node(); n != nil {
			m.byID[n.ClusterID()] = h
		}
	}
	return m.byID[cid]
}

// any returns a host with a node, for requests that name no cluster.
func (m *PeerMux) any() *Host {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, h := range m.hosts {
		if h.Node() != nil {
			return h
		}
	}
	return nil
}
