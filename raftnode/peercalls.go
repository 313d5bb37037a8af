package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Peer calls are raftproxy's own requests between the processes of one
// cluster, on the peer listener beside rafthttp's traffic. A process of a
// sharded cluster holds only some of the shards (RAFT.SHARD ADD
// <node-id>...), and reaches a shard it does not hold through a process
// that does: the slot movers log their steps there (their calls are
// served by cmd/raftproxy, through Handle), and -MOVED and CLUSTER SLOTS
// ask it who leads (LeaderPath).
//
// Every process holds the primary group, so the sender of a peer call is
// admitted as a member of any group the receiving process hosts (named by
// from=), the same second line behind peer mTLS that admitPeer draws for
// rafthttp's requests.
const (
	// LeaderPath answers "<leader id> <leader client address>" of the
	// group cluster= as the receiving process knows it, or 503.
	LeaderPath = "/raftproxy/leader"
	// MaxPeerCallBody bounds a call's body and answer: a move step carries
	// one batch (at most 8 MiB of dumps, as JSON).
	MaxPeerCallBody = 64 << 20
)

// Handle serves path, which must be under /raftproxy/, on the peer
// listener, after the admission every peer call passes (see above). The
// callers' own calls (the slot movers') are handled where their meaning is.
func (m *PeerMux) Handle(path string, h http.Handler) {
	if !strings.HasPrefix(path, "/raftproxy/") {
		panic("raftnode: a peer call's path is under /raftproxy/: " + path)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls == nil {
		m.calls = map[string]http.Handler{}
	}
	m.calls[path] = h
}

// call returns the handler of a peer call path, nil for any other request.
func (m *PeerMux) call(path string) http.Handler {
	if path == LeaderPath {
		return http.HandlerFunc(m.serveLeader)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.calls[path]
}

// admitCall admits a peer call whose sender (from=) is a member of a group
// this process hosts.
func (m *PeerMux) admitCall(r *http.Request) bool {
	from, err := ParseID(r.URL.Query().Get("from"))
	if err != nil {
		return false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, h := range m.hosts {
		if n := h.Node(); n != nil && n.knownPeer(from) {
			return true
		}
	}
	return false
}

// Node returns this process's node of the group whose cluster id is cid,
// nil when it hosts none.
func (m *PeerMux) Node(cid uint64) *Node {
	if h := m.lookup(cid); h != nil {
		return h.Node()
	}
	return nil
}

// CallNode is the node of the group a peer call names (cluster=), or nil
// after answering 400 or 404.
func (m *PeerMux) CallNode(w http.ResponseWriter, r *http.Request) *Node {
	cid, err := ParseID(r.URL.Query().Get("cluster"))
	if err != nil {
		http.Error(w, "want cluster=<id>", http.StatusBadRequest)
		return nil
	}
	n := m.Node(cid)
	if n == nil {
		http.Error(w, "this process does not hold that group", http.StatusNotFound)
	}
	return n
}

func (m *PeerMux) serveLeader(w http.ResponseWriter, r *http.Request) {
	n := m.CallNode(w, r)
	if n == nil {
		return
	}
	l, ok := n.Leader()
	if !ok || l.ID == 0 {
		http.Error(w, "no leader known", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "%s %s", IDString(l.ID), l.Addr)
}

// peerDialTimeout bounds a peer call's connection.
const peerDialTimeout = time.Second

// PeerClient makes peer calls as member from.
type PeerClient struct {
	client *http.Client
	scheme string
	from   uint64
}

// NewPeerClient returns a client for peer calls sent as member from, over
// TLS when tlsInfo names a certificate.
//
// A call's context bounds it; a peer that cannot be reached within
// peerDialTimeout fails at once, so that the caller tries another.
func NewPeerClient(tlsInfo transport.TLSInfo, from uint64) (*PeerClient, error) {
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: peerDialTimeout}).DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}
	c := &PeerClient{client: &http.Client{Transport: tr}, scheme: "http", from: from}
	if !tlsInfo.Empty() {
		tr, err := transport.NewTransport(tlsInfo, peerDialTimeout)
		if err != nil {
			return nil, fmt.Errorf("peer calls: peer TLS: %w", err)
		}
		c.client.Transport, c.scheme = tr, "https"
	}
	return c, nil
}

// ErrPeerCall wraps a peer call the receiving process refused or could not
// answer: the caller may try another member.
var ErrPeerCall = errors.New("peer call failed")

// Do sends a peer call for the group cid to the process at peer address
// addr, with the query q and (when not nil) the body, and returns the
// answer's body; ctx bounds it.
func (c *PeerClient) Do(ctx context.Context, addr, path string, cid uint64, q url.Values, body []byte) ([]byte, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("cluster", IDString(cid))
	q.Set("from", IDString(c.from))
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, rd = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.scheme+"://"+addr+path+"?"+q.Encode(), rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPeerCall, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, MaxPeerCallBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPeerCall, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %d %s", ErrPeerCall, addr, resp.StatusCode, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Leader asks the process at peer address addr who leads group cid: the
// leader's id and client address.
func (c *PeerClient) Leader(ctx context.Context, addr string, cid uint64) (uint64, string, error) {
	b, err := c.Do(ctx, addr, LeaderPath, cid, nil, nil)
	if err != nil {
		return 0, "", err
	}
	id, client, ok := strings.Cut(string(b), " ")
	lid, err := ParseID(id)
	if !ok || err != nil || lid == 0 {
		return 0, "", fmt.Errorf("%w: %s answered %q", ErrPeerCall, addr, b)
	}
	return lid, client, nil
}

// refuseCall counts a refused peer call on the primary group's host, as
// a request for an unknown cluster is.
func (m *PeerMux) refuseCall() {
	if h := m.first(); h != nil {
		h.refused.Add(RefusedNotMember)
	}
}
