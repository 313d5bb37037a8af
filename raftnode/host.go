package raftnode

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/snapshot"
	rwal "github.com/raftproxy/raftproxy/wal"
)

// Host owns the raft group this process serves: it creates the node on
// RAFT.CLUSTER INIT or JOIN, or restarts it from its data directory, and
// routes peer HTTP traffic to it. (Later one Host will serve several groups.)
type Host struct {
	cfg  Config
	mu   sync.Mutex // serialises Init, Join and Restart
	node atomic.Pointer[Node]
	// cluster is the raft cluster id of the node, set before it starts
	// applying (Node is set only once it started).
	cluster atomic.Uint64
	// stopping is set by Stop: a failed node is not restarted then.
	stopping atomic.Bool

	refused PeerRefusals
}

// ErrAlreadyMember is returned by Init and Join on a node that has a cluster.
var ErrAlreadyMember = errors.New("already cluster member")

// NewHost prepares a host; cfg.Self must hold the advertised addresses.
func NewHost(cfg Config) *Host {
	cfg.setDefaults()
	return &Host{cfg: cfg}
}

// Node returns the running node, or nil before INIT/JOIN.
func (h *Host) Node() *Node { return h.node.Load() }

// ClusterID is the raft cluster id of the host's node, from before it
// applies its first entry; 0 while it has none.
func (h *Host) ClusterID() uint64 { return h.cluster.Load() }

// RandomID returns a random non-zero 64-bit id for a node or cluster.
func RandomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// Restart resumes the node stored in the data directory. It returns nil and
// no error when the directory holds no node yet.
func (h *Host) Restart() (*Node, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.restart()
}

// restart is Restart for a caller that holds h.mu.
func (h *Host) restart() (*Node, error) {
	dir := walDir(h.cfg.DataDir)
	if !rwal.Exist(dir) {
		return nil, nil
	}
	zl := zapToSlog(h.cfg.Logger)
	store, err := h.openStore()
	if err != nil {
		return nil, err
	}
	walSnap, rs, err := h.newestSnapshot(store, dir)
	if err != nil {
		return nil, err
	}
	w, st, err := rwal.Open(zl, dir, walSnap)
	if err != nil {
		return nil, err
	}
	w.ShareSync(h.cfg.WALSync)
	if h.cfg.ForceNewCluster {
		if st, err = forceNewCluster(w, st, rs, h.cfg); err != nil {
			w.Close()
			return nil, err
		}
	}
	n, err := newNode(h.cfg, st.Meta.NodeID, st.Meta.ClusterID, w, st, store, rs)
	if err != nil {
		w.Close()
		return nil, err
	}
	h.cluster.Store(st.Meta.ClusterID)
	// The transport needs every peer's address before raft replays the
	// membership changes, or this node could not vote until redis is back.
	known := membersInLog(st.Entries)
	for _, m := range n.members.list() {
		known = append(known, m.Member)
	}
	if err := n.start(nil, known); err != nil {
		w.Close()
		return nil, err
	}
	h.node.Store(n)
	go h.revive(n)
	go n.refreshOwnRecord(st.HardState.GetCommit())
	n.log.Info("restarted node from its data directory", "cluster", IDString(n.clusterID),
		"entries", len(st.Entries), "commit", st.HardState.GetCommit())
	return n, nil
}

// Init creates a new single-node cluster with this node as its member.
func (h *Host) Init() (*Node, error) { return h.InitAs(RandomID()) }

// InitAs is Init with the node's id chosen: a process that hosts several
// groups is the same member, by id, in each.
func (h *Host) InitAs(id uint64) (*Node, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.node.Load() != nil || rwal.Exist(walDir(h.cfg.DataDir)) {
		return nil, ErrAlreadyMember
	}
	if h.cfg.SeedRDB != "" {
		return h.initSeeded()
	}
	cid := RandomID()
	n, err := h.create(id, cid)
	if err != nil {
		return nil, err
	}
	self := h.cfg.Self
	self.ID = id
	cctx, err := encodeContext(confContext{Member: self})
	if err != nil {
		return nil, err
	}
	if err := n.start([]raft.Peer{{ID: id, Context: cctx}}, nil); err != nil {
		return nil, err
	}
	// A single voter elects itself at once instead of after a timeout.
	n.core.campaign()
	h.node.Store(n)
	go h.revive(n)
	n.log.Info("initialised new cluster", "cluster", IDString(cid))
	return n, nil
}

// Join starts this node as a member of an existing cluster that has already
// added it (with id) through RAFT.NODE ADD on one of members.
func (h *Host) Join(clusterID, id uint64, members []Member) (*Node, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.node.Load() != nil || rwal.Exist(walDir(h.cfg.DataDir)) {
		return nil, ErrAlreadyMember
	}
	n, err := h.create(id, clusterID)
	if err != nil {
		return nil, err
	}
	if err := n.start(nil, members); err != nil {
		return nil, err
	}
	h.node.Store(n)
	go h.revive(n)
	// A member from before advertised formats forwarded the join without
	// this node's format; it is recorded once the node is a member.
	go n.refreshOwnRecord(0)
	n.log.Info("joined cluster", "cluster", IDString(clusterID))
	return n, nil
}

func (h *Host) create(id, clusterID uint64) (*Node, error) {
	if err := os.MkdirAll(h.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	w, err := rwal.Create(zapToSlog(h.cfg.Logger), walDir(h.cfg.DataDir), rwal.Metadata{NodeID: id, ClusterID: clusterID})
	if err != nil {
		return nil, err
	}
	w.ShareSync(h.cfg.WALSync)
	store, err := h.openStore()
	if err != nil {
		w.Close()
		return nil, err
	}
	h.cluster.Store(clusterID)
	n, err := newNode(h.cfg, id, clusterID, w, rwal.State{}, store, nil)
	if err != nil {
		w.Close()
		return nil, err
	}
	return n, nil
}

func (h *Host) openStore() (*snapshot.Store, error) {
	return snapshot.Open(filepath.Join(h.cfg.DataDir, "snap"), h.cfg.SnapshotKeep, h.cfg.Logger)
}

// newestSnapshot picks the snapshot to restart from: the newest one that the
// WAL records and whose file verifies. A corrupt one is skipped for an older
// one; if the WAL no longer holds the entries after that older one, opening
// it fails and says so.
func (h *Host) newestSnapshot(store *snapshot.Store, dir string) (*walpb.Snapshot, *raftpb.Snapshot, error) {
	zl := zapToSlog(h.cfg.Logger)
	walSnaps, err := rwal.ValidSnapshots(zl, dir)
	if err != nil {
		return nil, nil, err
	}
	recorded := map[[2]uint64]*walpb.Snapshot{}
	for _, ws := range walSnaps {
		recorded[[2]uint64{ws.GetIndex(), ws.GetTerm()}] = ws
	}
	meta, err := store.Newest(func(m snapshot.Meta) bool { return recorded[[2]uint64{m.Index, m.Term}] != nil })
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		if len(walSnaps) > 1 {
			h.cfg.Logger.Warn("the wal records snapshots but none is usable; trying to restart from the start of the log")
		}
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	ws := recorded[[2]uint64{meta.Index, meta.Term}]
	rs, err := raftSnapshot(meta, ws.GetConfState())
	if err != nil {
		return nil, nil, err
	}
	h.cfg.Logger.Info("restarting from snapshot", "index", meta.Index, "term", meta.Term, "bytes", meta.Size)
	return ws, rs, nil
}

// ServeHTTP routes raft peer traffic to the node.
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.node.Load()
	if n == nil {
		http.Error(w, "raftproxy: this node has no cluster yet", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == stepDownPath {
		q := r.URL.Query()
		if q.Get("cluster") != IDString(n.clusterID) {
			h.refused.Add(RefusedClusterID)
			http.Error(w, "cluster id mismatch", http.StatusPreconditionFailed)
			return
		}
		if from, err := ParseID(q.Get("from")); err != nil || !n.knownPeer(from) {
			h.refused.Add(RefusedNotMember)
			http.Error(w, "not a member", http.StatusForbidden)
			return
		}
		n.serveStepDown(w, r)
		return
	}
	if reason, ok := n.admitPeer(r); !ok {
		h.refused.Add(reason)
		n.log.Debug("refused peer request", "reason", reason, "remote", r.RemoteAddr, "path", r.URL.Path,
			"from", r.Header.Get("X-Server-From"))
		// The answers rafthttp gives itself, which its senders treat as
		// passing trouble. Never 403: to a rafthttp sender that means "you
		// were removed" and it would stop, and a member that joined a
		// moment ago may not be known here yet.
		if reason == RefusedClusterID {
			http.Error(w, rafthttp.ErrClusterIDMismatch.Error(), http.StatusPreconditionFailed)
		} else {
			http.Error(w, "error sender not found", http.StatusNotFound)
		}
		return
	}
	n.Handler().ServeHTTP(w, r)
}

// Stop stops the node, if any.
func (h *Host) Stop() {
	h.stopping.Store(true)
	if n := h.node.Load(); n != nil {
		n.Stop()
	}
}

// revive restarts n from the data directory if it stops because its Ready
// loop failed (a disk error: the WAL it had open is unusable, the one on
// disk is whole up to a torn tail at worst). It retries, less and less
// often, until it succeeds or the host stops.
func (h *Host) revive(n *Node) {
	<-n.Done()
	n.Stop() // waits until it has stopped
	if n.failure.Load() == nil {
		return
	}
	delay := time.Second
	for !h.stopping.Load() {
		time.Sleep(delay)
		h.mu.Lock()
		if h.node.Load() != n || h.stopping.Load() {
			h.mu.Unlock()
			return
		}
		nn, err := h.restart()
		h.mu.Unlock()
		if err == nil && nn != nil {
			nn.log.Info("restarted the node after its Ready loop failed", "was", *n.failure.Load())
			return
		}
		h.cfg.Logger.Error("restarting the node after its Ready loop failed", "err", err)
		delay = min(2*delay, 30*time.Second)
	}
}

func encodeContext(c confContext) ([]byte, error) {
	b, err := jsonMarshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode conf change context: %w", err)
	}
	return b, nil
}

// confChanges yields the membership changes among ents.
func confChanges(ents []*raftpb.Entry) iter.Seq[*raftpb.ConfChange] {
	return func(yield func(*raftpb.ConfChange) bool) {
		for _, e := range ents {
			if e.GetType() != raftpb.EntryConfChange {
				continue
			}
			cc := &raftpb.ConfChange{}
			if proto.Unmarshal(e.GetData(), cc) != nil {
				continue
			}
			if !yield(cc) {
				return
			}
		}
	}
}

// membersInLog collects the members named by membership changes in ents.
func membersInLog(ents []*raftpb.Entry) []Member {
	seen := map[uint64]Member{}
	for cc := range confChanges(ents) {
		c, err := decodeConfContext(cc)
		if err != nil {
			continue
		}
		switch cc.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
			m := c.Member
			m.ID = cc.GetNodeId()
			if m.PeerAddr != "" {
				seen[m.ID] = m
			}
		case raftpb.ConfChangeRemoveNode:
			delete(seen, cc.GetNodeId())
		}
	}
	out := make([]Member, 0, len(seen))
	for _, m := range seen {
		out = append(out, m)
	}
	return out
}

// forceNewCluster turns this node's log into that of a one-member cluster
// (quorum-loss recovery, as etcd's --force-new-cluster): membership changes
// removing every other member (and making this node a voter) are appended
// and the whole log is committed locally.
//
// Unlike etcd, entries past this node's known commit index are kept and
// committed: that index lags (a commit-only update waits in the WAL's buffer
// for the next fsync), so an entry past it may well have been acknowledged
// to a client. Committing one that was not can only apply a write whose
// client was told -TIMEOUT (outcome unknown), never one it was told failed.
func forceNewCluster(w *rwal.Log, st rwal.State, snap *raftpb.Snapshot, cfg Config) (rwal.State, error) {
	commit := st.HardState.GetCommit()
	ents := st.Entries
	last := commit
	if len(ents) > 0 {
		last = max(last, ents[len(ents)-1].GetIndex())
	}
	voters, learners := map[uint64]bool{}, map[uint64]bool{}
	if snap != nil {
		for _, id := range snap.GetMetadata().GetConfState().GetVoters() {
			voters[id] = true
		}
		for _, id := range snap.GetMetadata().GetConfState().GetLearners() {
			learners[id] = true
		}
	}
	for cc := range confChanges(ents) {
		id := cc.GetNodeId()
		switch cc.GetType() {
		case raftpb.ConfChangeAddNode:
			voters[id], learners[id] = true, false
		case raftpb.ConfChangeAddLearnerNode:
			voters[id], learners[id] = false, true
		case raftpb.ConfChangeRemoveNode:
			voters[id], learners[id] = false, false
		}
	}
	self := st.Meta.NodeID
	next := last + 1
	term := st.HardState.GetTerm()
	var add []*raftpb.Entry
	appendCC := func(typ raftpb.ConfChangeType, id uint64, m Member) error {
		ctx, err := encodeContext(confContext{Member: m})
		if err != nil {
			return err
		}
		data, err := proto.Marshal(&raftpb.ConfChange{Type: typ.Enum(), NodeId: proto.Uint64(id), Context: ctx})
		if err != nil {
			return fmt.Errorf("encode forced membership change: %w", err)
		}
		add = append(add, &raftpb.Entry{Type: raftpb.EntryConfChange.Enum(), Term: proto.Uint64(term), Index: proto.Uint64(next), Data: data})
		next++
		return nil
	}
	if !voters[self] {
		me := cfg.Self
		me.ID = self
		if err := appendCC(raftpb.ConfChangeAddNode, self, me); err != nil {
			return st, err
		}
	}
	for id := range voters {
		if id != self && voters[id] {
			if err := appendCC(raftpb.ConfChangeRemoveNode, id, Member{ID: id}); err != nil {
				return st, err
			}
		}
	}
	for id := range learners {
		if id != self && learners[id] {
			if err := appendCC(raftpb.ConfChangeRemoveNode, id, Member{ID: id}); err != nil {
				return st, err
			}
		}
	}
	hs := &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(st.HardState.GetVote()), Commit: proto.Uint64(next - 1)}
	if _, err := w.Save(hs, add); err != nil {
		return st, fmt.Errorf("force new cluster: %w", err)
	}
	cfg.Logger.Warn("forced a new one-member cluster from this node's data", "known_commit_index", commit,
		"committed_through", next-1, "membership_changes", len(add))
	st.Entries = append(ents, add...)
	st.HardState = hs
	return st, nil
}

// Tunables returns the settings that can change while the host runs.
func (h *Host) Tunables() *Tunables { return h.cfg.Tunables }
