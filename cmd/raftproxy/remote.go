package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/migrate"
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

// Shards placed on other nodes (RAFT.SHARD ADD <node-id>...): a node
// reaches one through a member's peer listener (raftnode's peer calls) —
// the movers log in it and list its keys there, and -MOVED and CLUSTER
// SLOTS name its leader as a member last said.

// The peer calls of a mover on a node that does not hold a shard, served by
// the members of the shard (raftnode.PeerMux.Handle admits the caller).
const (
	// proposePath logs a move's change or step (the body) in the shard
	// cluster= and answers the applier's reply (migrate.Log).
	proposePath = "/raftproxy/propose"
	// keysPath lists the keys of a range of slots of the shard cluster=,
	// as a linearizable read of it (migrate.Node.Keys).
	keysPath = "/raftproxy/keys"
)

// keysTimeout bounds a listing of keys through a member: a scan of tens
// of millions of keys.
const keysTimeout = 5 * time.Minute

// hintAge is how long a shard's leader, as a member said, is named in
// -MOVED and CLUSTER SLOTS before a member is asked again; a client sent
// to a follower meanwhile is served there, through the raft log.
const hintAge = time.Second

// remotes is the node's view of the shards it does not hold.
type remotes struct {
	ss *stacks

	mu     sync.Mutex
	client *raftnode.PeerClient // for the primary's member id clientOf
	of     uint64
	hints  map[string]leaderHint // by shard id
}

// leaderHint is a shard's leader as a member said, and when.
type leaderHint struct {
	id     uint64
	addr   string
	at     time.Time
	asking bool
}

// peerClient is a client for peer calls sent as this node's member id.
func (r *remotes) peerClient() (*raftnode.PeerClient, error) {
	p := r.ss.primary()
	if p == nil || p.host.Node() == nil {
		return nil, errors.New("this node has no cluster yet")
	}
	id := p.host.Node().ID()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil || r.of != id {
		c, err := raftnode.NewPeerClient(r.ss.peerTLS, id)
		if err != nil {
			return nil, err
		}
		r.client, r.of = c, id
	}
	return r.client, nil
}

// self is this node's member id, 0 before it has one.
func (r *remotes) self() uint64 {
	if p := r.ss.primary(); p != nil {
		if n := p.host.Node(); n != nil {
			return n.ID()
		}
	}
	return 0
}

// members are the members of shard sh as the primary group knows them,
// at the shard's client port, for a shard this node does not hold.
func (r *remotes) members(sh slotmap.Shard) []raftnode.MemberInfo {
	p := r.ss.primary()
	if p == nil || p.host.Node() == nil {
		return nil
	}
	var out []raftnode.MemberInfo
	for _, m := range p.host.Node().Members() {
		if sh.Holds(m.ID) {
			m.Addr = proxy.ShardAddr(m.Addr, sh.Index)
			out = append(out, m)
		}
	}
	return out
}

// shard is the record of shard id in the routing data.
func (r *remotes) shard(id string) (slotmap.Shard, uint64, bool) {
	rt := r.ss.Routing()
	if rt == nil {
		return slotmap.Shard{}, 0, false
	}
	sh, ok := rt.Shard(id)
	cid, err := raftnode.ParseID(id)
	return sh, cid, ok && err == nil
}

// order is the peer addresses of shard sh's members to try, the leader
// last heard of first.
func (r *remotes) order(sh slotmap.Shard) []string {
	ms := r.members(sh)
	r.mu.Lock()
	lead := r.hints[sh.ID].id
	r.mu.Unlock()
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if m.ID == lead {
			out = append([]string{m.PeerAddr}, out...)
		} else if m.PeerAddr != "" {
			out = append(out, m.PeerAddr)
		}
	}
	return out
}

// call sends a peer call about shard id to its members in turn until one
// answers.
func (r *remotes) call(ctx context.Context, id, path string, q url.Values, body []byte) ([]byte, error) {
	sh, cid, ok := r.shard(id)
	if !ok {
		return nil, fmt.Errorf("shard %s is not in the routing data", id)
	}
	c, err := r.peerClient()
	if err != nil {
		return nil, err
	}
	err = fmt.Errorf("no member of shard %s is known", id)
	for _, addr := range r.order(sh) {
		var out []byte
		if out, err = c.Do(ctx, addr, path, cid, q, body); err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// remoteLog is the log of a shard this node does not hold.
type remoteLog struct {
	r  *remotes
	id string
}

func (l remoteLog) Append(ctx context.Context, change []byte) ([]byte, error) {
	return l.r.call(ctx, l.id, proposePath, nil, change)
}

// keys lists the keys of slots rg of shard id through a member.
func (r *remotes) keys(ctx context.Context, id string, rg slotmap.Range) ([]apply.MovedKey, error) {
	q := url.Values{"first": {strconv.Itoa(rg.First)}, "last": {strconv.Itoa(rg.Last)}}
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	b, err := r.call(ctx, id, keysPath, q, []byte{})
	if err != nil {
		return nil, err
	}
	var out []apply.MovedKey
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("keys of shard %s: %w", id, err)
	}
	return out, nil
}

// serveProposal is the member's side of remoteLog. It takes only what a
// mover logs in a shard — a move step, a sync-move or an end-move, each
// refused by the shard's applier unless it comes from the move's current
// mover (its epoch) — and never in the primary group, whose log only the
// mover of the node leading it writes.
func (r *remotes) serveProposal(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	n := r.ss.mux.CallNode(w, req)
	if n == nil {
		return
	}
	if p := r.ss.primary(); p != nil && p.host.Node() == n {
		http.Error(w, "the primary group takes no proposals from peers", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, raftnode.MaxPeerCallBody+1))
	if err != nil || len(body) > raftnode.MaxPeerCallBody {
		http.Error(w, "body unreadable or too large", http.StatusBadRequest)
		return
	}
	var what struct {
		Op   slotmap.Op      `json:"op"`
		Step json.RawMessage `json:"step"`
	}
	if err := json.Unmarshal(body, &what); err != nil || (what.Step == nil && what.Op != slotmap.OpSyncMove && what.Op != slotmap.OpEndMove) {
		http.Error(w, "a peer proposes only a move's step, sync-move or end-move", http.StatusBadRequest)
		return
	}
	reply, err := migrate.GroupLog(n).Append(req.Context(), body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(reply)
}

// serveKeys is the member's side of keys.
func (r *remotes) serveKeys(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	cid, err1 := raftnode.ParseID(q.Get("cluster"))
	first, err2 := strconv.Atoi(q.Get("first"))
	last, err3 := strconv.Atoi(q.Get("last"))
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || first > last || last >= slotmap.NumSlots {
		http.Error(w, "want cluster, first and last", http.StatusBadRequest)
		return
	}
	keys, err := moverNode{r.ss}.localKeys(req.Context(), raftnode.IDString(cid), slotmap.Range{First: first, Last: last})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	b, err := json.Marshal(keys)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// Elsewhere implements proxy.Sharding: a shard this node does not hold, as
// the routing data and its members say. A leader older than hintAge is
// asked for again in the background.
func (r *remotes) Elsewhere(id string) (proxy.RemoteShard, bool) {
	sh, cid, ok := r.shard(id)
	if !ok || r.ss.Group(id) != nil || sh.Holds(r.self()) {
		// Held here, or to be: this node joins it (or restarts it) in a
		// moment, and has no one else to name meanwhile.
		return proxy.RemoteShard{}, false
	}
	out := proxy.RemoteShard{Members: r.members(sh)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hints == nil {
		r.hints = map[string]leaderHint{}
	}
	h := r.hints[id]
	if !h.at.IsZero() {
		out.Leader, out.LeaderAddr = h.id, h.addr
	}
	if time.Since(h.at) > hintAge && !h.asking {
		h.asking = true
		r.hints[id] = h
		go r.askLeader(sh, cid)
	}
	return out, true
}

// askLeader asks shard sh's members who leads it, and keeps the answer.
func (r *remotes) askLeader(sh slotmap.Shard, cid uint64) {
	h := leaderHint{}
	defer func() {
		r.mu.Lock()
		if h.at.IsZero() {
			h = r.hints[sh.ID] // no answer: the last one stays, asked again later
			h.asking = false
			h.at = time.Now().Add(-hintAge / 2)
		}
		r.hints[sh.ID] = h
		r.mu.Unlock()
	}()
	c, err := r.peerClient()
	if err != nil {
		return
	}
	for _, addr := range r.order(sh) {
		ctx, cancel := context.WithTimeout(r.ss.ctx, 500*time.Millisecond)
		id, laddr, err := c.Leader(ctx, addr, cid)
		cancel()
		if err == nil {
			h = leaderHint{id: id, addr: laddr, at: time.Now()}
			return
		}
	}
}
