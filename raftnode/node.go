// Package raftnode runs one member of a Raft group: the etcd raft node and
// its Ready loop, the durable log, the peer transport, batching of proposals,
// linearizable reads with ReadIndex, and the applier that feeds committed
// entries, in log order, to a StateMachine (the local redis-server).
//
// One goroutine, the Ready loop, takes raft's Ready: it sends, persists,
// hands committed entries to the applier and advances, as the raft package
// documents. The goroutines that feed raft step its RawNode directly under
// a lock (core.go) rather than through another goroutine.
package raftnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	stats "go.etcd.io/etcd/server/v3/etcdserver/api/v2stats"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/snapshot"
	rwal "github.com/raftproxy/raftproxy/wal"
)

// Errors a client request can end with. Every one except ErrTimeout means
// the request did not and will not take effect.
var (
	ErrNoLeader  = errors.New("no raft leader")
	ErrTimeout   = errors.New("outcome unknown: not known to be committed before the deadline")
	ErrStopped   = errors.New("raft node stopped")
	ErrReordered = errors.New("request reached the log out of order and was not applied; retry")
	ErrLoading   = errors.New("node is rebuilding its redis from the log")
	ErrRemoved   = errors.New("this node was removed from the cluster")
	// ErrHalted: this node cannot apply a committed entry (a newer member
	// wrote it, or this node's copy is damaged), so it applies nothing past
	// it; the wrapping error says which, and what frees it.
	ErrHalted = errors.New("this node stopped applying the log")
	// ErrFormat: the request needs a newer log format than every member
	// decodes; it was not proposed.
	ErrFormat = errors.New("not every member's build can read this request")
)

func (n *Node) requestTimeout() time.Duration { return n.cfg.Tunables.Timeout() }

// Node is a running member of a raft group.
type Node struct {
	cfg       Config
	id        uint64
	clusterID uint64
	log       *slog.Logger
	zlog      *zap.Logger

	core    *core
	storage *raft.MemoryStorage
	wal     *rwal.Log
	disk    diskGuard
	// failure is why the Ready loop stopped the node, if it did.
	failure   atomic.Pointer[error]
	transport *rafthttp.Transport
	handler   http.Handler // the transport's; rafthttp builds a new one per call
	peers     peerSet
	members   *membership
	store     *snapshot.Store
	conf      confHistory
	snapIndex atomic.Uint64 // index of the newest snapshot in raft storage

	compactMu      sync.Mutex
	compactWaiters []compactWaiter
	confMu         sync.Mutex // one membership change proposed at a time

	quar     quarantine // see quarantine.go
	stepDown stepDowns  // requests from quarantined members, on the leader

	lead       atomic.Uint64
	leadChange notifier     // told after lead changes
	raftState  atomic.Int32 // raft.StateType
	term       atomic.Uint64
	commit     atomic.Uint64

	counters Counters
	metrics  *Metrics

	prop    *proposer
	reads   *readIndexer
	applier *applier

	// purge is signalled when WAL segments are released (releaseWAL).
	purge chan struct{}

	stopc    chan struct{}
	stopOnce sync.Once
	// hbAttached and streamsAttached: the node counts among the groups
	// of its process's Heartbeats and Streams (Config).
	hbAttached, streamsAttached bool
	runDone                     chan struct{} // the Ready loop has returned
	done                        sync.WaitGroup
}

func walDir(dataDir string) string { return filepath.Join(dataDir, "wal") }

// newNode builds a node around an open WAL and, when snap is not nil, the
// snapshot the WAL was opened at; start launches its goroutines.
func newNode(cfg Config, id, clusterID uint64, w *rwal.Log, st rwal.State, store *snapshot.Store, snap *raftpb.Snapshot) (*Node, error) {
	cfg.setDefaults()
	cfg.Self.ID = id
	n := &Node{
		cfg:       cfg,
		id:        id,
		clusterID: clusterID,
		log:       cfg.Logger.With("node", IDString(id)),
		storage:   raft.NewMemoryStorage(),
		wal:       w,
		members:   newMembership(),
		store:     store,
		stopc:     make(chan struct{}),
		purge:     make(chan struct{}, 1),
		runDone:   make(chan struct{}),
		metrics:   cfg.metrics,
	}
	n.zlog = zapToSlog(n.log)
	n.prop = newProposer(n, lastOwnSeq(id, st.Entries))
	n.reads = newReadIndexer(n)
	n.applier = newApplier(n)
	if snap != nil {
		meta, ns, err := decodeMeta(snap.GetData())
		if err != nil {
			return nil, err
		}
		if err := n.storage.ApplySnapshot(snap); err != nil {
			return nil, fmt.Errorf("restore snapshot %d: %w", meta.Index, err)
		}
		n.members.restore(ns.Members, ns.Removed)
		n.conf.reset(confPoint{index: meta.Index, cs: snap.GetMetadata().GetConfState(), members: ns.Members})
		n.snapIndex.Store(meta.Index)
		n.applier.applied.Store(meta.Index)
		n.metrics.snapshotBytes.Set(float64(meta.Size))
		n.applier.lastSeq = ns.LastSeq
		if own := ns.LastSeq[id]; own >= n.prop.seq {
			n.prop.seq = own + 1
		}
	}
	if st.HardState != nil {
		if err := n.storage.SetHardState(st.HardState); err != nil {
			return nil, fmt.Errorf("restore hard state: %w", err)
		}
	}
	if err := n.storage.Append(st.Entries); err != nil {
		return nil, fmt.Errorf("restore %d log entries: %w", len(st.Entries), err)
	}
	// The verdicts on killable requests committed before the restart: a
	// request killed then must not run again while its entry is replayed.
	commit := st.HardState.GetCommit()
	if snap != nil {
		n.applier.verdicts.seenTo(snap.GetMetadata().GetIndex())
	}
	for _, e := range st.Entries {
		if e.GetIndex() <= commit {
			n.applier.verdicts.takeEntries([]*raftpb.Entry{e})
		}
	}
	if st.Repaired {
		n.enterQuarantine()
	}
	return n, nil
}

func (n *Node) raftConfig() *raft.Config {
	return &raft.Config{
		ID:                        n.id,
		Applied:                   n.applier.applied.Load(),
		ElectionTick:              n.cfg.ElectionTicks,
		HeartbeatTick:             n.cfg.HeartbeatTicks,
		Storage:                   n.storage,
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{n.log.With("component", "raft")},
	}
}

// start launches the transport, the raft node (fresh with peers, or
// restarted from storage when peers is nil) and the node's goroutines.
func (n *Node) start(peers []raft.Peer, known []Member) error {
	// The raft node exists before the transport: AddPeer opens streams at
	// once, and a peer's message may arrive before start returns.
	c, err := newCore(n.raftConfig(), peers)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.core = c
	n.transport = &rafthttp.Transport{
		Logger:      zapToSlogCalm(n.log, n.calm),
		ID:          types.ID(n.id),
		URLs:        types.MustNewURLs([]string{n.cfg.peerURL(n.cfg.Self.PeerAddr)}),
		TLSInfo:     n.cfg.PeerTLS,
		ClusterID:   types.ID(n.clusterID),
		Raft:        (*transportHooks)(n),
		Snapshotter: snap.New(n.zlog, n.store.Dir()),
		ServerStats: stats.NewServerStats("", ""),
		LeaderStats: stats.NewLeaderStats(n.zlog, types.ID(n.id).String()),
		ErrorC:      make(chan error, 1),
	}
	if err := n.transport.Start(); err != nil {
		return fmt.Errorf("start raft transport: %w", err)
	}
	n.handler = n.transport.Handler()
	if n.cfg.Heartbeats != nil {
		n.cfg.Heartbeats.attach()
		n.hbAttached = true
	}
	if n.cfg.Streams != nil {
		n.cfg.Streams.attach()
		n.streamsAttached = true
	}
	for _, m := range known {
		n.addPeer(m)
	}
	n.done.Add(7)
	go func() { defer n.done.Done(); n.promoteLearners() }()
	go func() { defer n.done.Done(); n.purgeWAL() }()
	go func() { defer n.done.Done(); defer close(n.runDone); n.run() }()
	go func() { defer n.done.Done(); n.prop.run() }()
	go func() { defer n.done.Done(); n.reads.run() }()
	go func() { defer n.done.Done(); n.applier.run() }()
	go func() { defer n.done.Done(); n.watchTransport() }()
	if n.quar.on.Load() {
		n.done.Add(1)
		go func() { defer n.done.Done(); n.askToStepDown() }()
	}
	return nil
}

// run is the Ready loop: it alone takes raft's Ready and advances it. It
// sleeps until a tick is due or something stepped raft (core.wake), then
// handles every Ready raft has, one at a time, in etcd's order.
func (n *Node) run() {
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	n.core.setQuiesceAllowed(n.quiesceAllowed())
	ticking := true
	var leaderDown <-chan struct{} // a quiesced follower's leader's process stopped answering
	var downOf uint64              // the leader leaderDown watches
	var woke time.Time             // when the node last stopped being quiesced
	// A node quiesced for detachAfter lets go of its transport peers.
	detachAfter := 3 * n.electionTimeout()
	detach := time.NewTimer(detachAfter)
	detach.Stop()
	defer detach.Stop()
	for {
		select {
		case <-ticker.C:
			n.core.tick(n.cfg.ElectionTicks)
		case <-n.core.wake:
		case <-leaderDown:
			leaderDown = nil
			// Quiesced, or woken less than an election timeout ago (by
			// another follower's campaign, which its lease on the silent
			// leader would refuse): the leader has been silent for an
			// election timeout already.
			if !ticking || (time.Since(woke) < n.electionTimeout() && n.lead.Load() == downOf) {
				n.core.wakeFromDown(n.cfg.ElectionTicks - 1)
			}
		case <-detach.C:
			if n.core.quiesced() {
				n.detachPeers()
			}
		case <-n.stopc:
			return
		}
		for {
			rd, ok := n.core.ready()
			if !ok {
				break
			}
			if err := n.handleReady(rd); err != nil {
				if !errors.Is(err, ErrStopped) {
					n.log.Error("raft ready loop failed; stopping the node (the host restarts it from its data directory)", "err", err)
					n.failure.Store(&err)
				}
				go n.Stop()
				return
			}
			n.core.advance(rd)
		}
		// A quiesced node stops its ticker (quiesce.go), and a follower
		// watches its leader's process instead; every change of that is
		// signalled on core.wake, so it is seen here.
		if q := n.core.quiesced(); q == ticking {
			ticking = !q
			n.setCalm(q)
			if q {
				ticker.Stop()
				down, ok := n.leaderDown()
				downOf = n.lead.Load()
				if !ok {
					n.core.wakeFromDown(0) // nothing to watch: tick as ever
				}
				leaderDown = down
				detach.Reset(detachAfter)
			} else {
				// leaderDown stays watched for an election timeout
				// (above).
				ticker.Reset(n.cfg.TickInterval)
				detach.Stop()
				woke = time.Now()
			}
			n.quiescedGauge(q)
		} else if !ticking && !n.peers.detached.Load() {
			// Still quiesced, but a Ready (one raft makes without waking,
			// as an append to a member it probes) took the peers back.
			detach.Reset(detachAfter)
		}
		if msgs := n.core.takeQuietMessages(); len(msgs) > 0 {
			n.attachPeers()
			n.send(msgs)
		}
	}
}

func (n *Node) handleReady(rd raft.Ready) error {
	n.counters.Readies.Add(1)
	n.attachPeers() // anything a Ready holds may need sending
	if len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState) {
		n.counters.PersistRounds.Add(1)
		n.counters.Entries.Add(uint64(len(rd.Entries)))
	}
	if rd.SoftState != nil {
		old := n.lead.Swap(rd.SoftState.Lead)
		n.raftState.Store(int32(rd.SoftState.RaftState))
		if old != rd.SoftState.Lead {
			if rd.SoftState.Lead != raft.None {
				n.metrics.leaderChanges.Inc()
			}
			n.log.Info("leader changed", "leader", IDString(rd.SoftState.Lead), "state", rd.SoftState.RaftState.String())
			n.reads.leaderChanged()
			n.prop.leaderChanged()
			n.leadChange.notify()
		}
	}
	if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
		n.term.Store(rd.HardState.GetTerm())
		n.commit.Store(rd.HardState.GetCommit())
	}
	// A leader may send its appends before its own fsync (Raft thesis
	// 10.2.1): it counts itself toward the commit quorum only after Advance,
	// which follows the fsync. Followers must persist before they answer.
	leader := raft.StateType(n.raftState.Load()) == raft.StateLeader
	msgs := n.core.roundHeartbeats(n.filterOutgoing(n.splitSnapshots(rd.Messages)))
	if leader {
		n.stampReadIndex(msgs)
		n.send(msgs)
	}
	// Nothing is written without room for it: a full disk makes the node
	// wait here, with nothing half-written (disk.go).
	if len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState) || !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.waitDisk(); err != nil {
			return err
		}
	}
	// The WAL records a snapshot before the state that follows it, as etcd
	// does; the snapshot file itself was made durable when it was received.
	if !raft.IsEmptySnap(rd.Snapshot) {
		md := rd.Snapshot.GetMetadata()
		if err := n.wal.SaveSnapshot(&walpb.Snapshot{Index: proto.Uint64(md.GetIndex()), Term: proto.Uint64(md.GetTerm()), ConfState: md.GetConfState()}); err != nil {
			return err
		}
	}
	if err := n.saveWAL(rd.HardState, rd.Entries); err != nil {
		return err
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		// The hard state just saved commits the snapshot, but raft counts
		// a commit alone as needing no fsync, and a restart lists only the
		// snapshots at or below the durable commit: without this, a node
		// killed now restarts before the snapshot it acknowledged, and the
		// leader's next heartbeat commits past its log (etcd issue 10219).
		if err := n.wal.Sync(); err != nil {
			return err
		}
		if err := n.installReceived(rd.Snapshot); err != nil {
			return err
		}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		return fmt.Errorf("append %d entries to raft storage: %w", len(rd.Entries), err)
	}
	if n.quar.on.Load() && (len(rd.Entries) > 0 || !raft.IsEmptySnap(rd.Snapshot)) {
		n.maybeLeaveQuarantine()
	}
	if !leader {
		n.send(msgs)
	}
	if len(rd.ReadStates) > 0 {
		n.reads.deliver(rd.ReadStates, leader)
	}
	if len(rd.CommittedEntries) > 0 {
		n.metrics.proposalsCommitted.Add(float64(len(rd.CommittedEntries)))
		// Membership changes are applied here, in log order, before Advance,
		// so raft never counts votes with a stale configuration. Redis
		// commands go to the applier, which does not stall this loop.
		for _, e := range rd.CommittedEntries {
			if e.GetType() == raftpb.EntryConfChange {
				if err := n.applyConfChange(e); err != nil {
					return err
				}
			}
		}
		n.applier.enqueue(rd.CommittedEntries)
	}
	return nil
}

// saveWAL saves to the WAL, timing the saves that fsync.
func (n *Node) saveWAL(hs *raftpb.HardState, ents []*raftpb.Entry) error {
	start := time.Now()
	durable, err := n.wal.Save(hs, ents)
	if durable && err == nil {
		n.metrics.walFsyncDuration.Observe(since(start))
	}
	return err
}

func (n *Node) applyConfChange(e *raftpb.Entry) error {
	cc := &raftpb.ConfChange{}
	if err := proto.Unmarshal(e.GetData(), cc); err != nil {
		return fmt.Errorf("decode conf change at index %d: %w", e.GetIndex(), err)
	}
	ctx, err := decodeConfContext(cc)
	if err != nil {
		n.log.Error("ignoring conf change with bad context", "index", e.GetIndex(), "err", err)
		cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(0)}
	}
	cs := n.core.applyConfChange(cc)
	id := cc.GetNodeId()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
		if id != 0 {
			mem := ctx.Member
			mem.ID = id
			if old, ok := n.members.get(id); ok && mem.Addr == "" {
				mem = old
			} else if ok && mem.Format == 0 && cc.GetType() == raftpb.ConfChangeAddNode {
				// A promotion proposed by a leader whose build does not
				// know formats: the learner's advertised one still holds.
				mem.Format = old.Format
			}
			learner := cc.GetType() == raftpb.ConfChangeAddLearnerNode
			if cc.GetType() == raftpb.ConfChangeUpdateNode {
				learner = slices.Contains(cs.GetLearners(), id)
				if mem.PeerAddr != "" && id != n.id {
					n.updatePeer(id, mem.PeerAddr)
				}
			}
			n.members.add(mem, learner)
			n.addPeer(mem)
		}
	case raftpb.ConfChangeRemoveNode:
		n.members.remove(id)
		if id == n.id {
			n.log.Warn("this node was removed from the cluster")
		} else {
			n.removePeer(id)
		}
	}
	n.conf.add(confPoint{index: e.GetIndex(), cs: cs, members: n.members.list()})
	n.log.Info("applied membership change", "index", e.GetIndex(), "type", cc.GetType().String(),
		"member", IDString(id), "voters", len(cs.GetVoters()), "learners", len(cs.GetLearners()))
	if ctx.ReqNode == n.id && ctx.ReqSeq != 0 {
		n.prop.completeConf(ctx.ReqSeq, n.members.list())
	}
	return nil
}

// releaseWAL lets the WAL's segments wholly before index go, and has them
// deleted in the background.
func (n *Node) releaseWAL(index uint64) error {
	if err := n.wal.ReleaseLockTo(index); err != nil {
		return err
	}
	signal(n.purge)
	return nil
}

// purgeWAL deletes the segments the WAL has released, but the newest few,
// when the node starts and after each release: segments are released only
// then, so unlike etcd's timed purge it costs nothing while the group is
// idle. A failure is logged and tried again at the next release.
func (n *Node) purgeWAL() {
	for {
		if _, err := rwal.Purge(n.wal.Dir, rwal.KeepSegments); err != nil {
			n.log.Error("purging old wal segments failed", "err", err)
		}
		select {
		case <-n.purge:
		case <-n.stopc:
			return
		}
	}
}

// watchTransport stops the node when the transport reports that this
// member was removed from the cluster.
func (n *Node) watchTransport() {
	select {
	case err := <-n.transport.ErrorC:
		// rafthttp reports this when peers answer that this member was
		// removed (possibly while this node was down and never saw it).
		if strings.Contains(err.Error(), "removed") {
			n.members.remove(n.id)
		}
		n.log.Error("raft transport reported a critical error; stopping node", "err", err)
		go n.Stop()
	case <-n.stopc:
	}
}

// Stop stops the node's goroutines and closes the WAL.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		close(n.stopc)
		// The Ready loop uses the transport and the raft node; both stop
		// only once it has returned.
		<-n.runDone
		if n.hbAttached {
			n.cfg.Heartbeats.detach()
		}
		if n.streamsAttached {
			n.cfg.Streams.detach()
		}
		n.transport.Stop()
		n.done.Wait()
		if err := n.wal.Close(); err != nil {
			n.log.Warn("close wal", "err", err)
		}
	})
}

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.stopc }

// lastOwnSeq finds the highest batch sequence this node put in its log, so
// that a restarted node keeps proposing strictly increasing sequences even
// if its clock went back.
func lastOwnSeq(id uint64, ents []*raftpb.Entry) uint64 {
	var last uint64
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		b, err := entry.Unmarshal(e.GetData())
		if err == nil && b.Node == id && b.Seq > last {
			last = b.Seq
		}
	}
	return last
}
