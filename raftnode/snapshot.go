package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/snapshot"
)

// nodeState is what a snapshot carries besides the RDB: the raft node's own
// state at the snapshot's index.
type nodeState struct {
	Members []MemberInfo      `json:"members"`
	Removed []uint64          `json:"removed,omitempty"`
	LastSeq map[uint64]uint64 `json:"last_seq"`
	// LogTimeMs is the log's time at the snapshot's index (clock.go).
	LogTimeMs int64 `json:"log_time_ms,omitempty"`
}

// encodeState makes a snapshot's state: one JSON object with the node's
// fields and, beside them, the state machine's (fsm.MachineState).
func encodeState(st nodeState, machine json.RawMessage) (json.RawMessage, error) {
	own, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if len(machine) == 0 {
		return own, nil
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(machine, &fields); err != nil {
		return nil, fmt.Errorf("the state machine's state is not a JSON object: %w", err)
	}
	var mine map[string]json.RawMessage
	if err := json.Unmarshal(own, &mine); err != nil {
		return nil, err
	}
	for k, v := range mine {
		fields[k] = v
	}
	return json.Marshal(fields)
}

func decodeMeta(data []byte) (snapshot.Meta, nodeState, error) {
	var m snapshot.Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return m, nodeState{}, fmt.Errorf("decode snapshot metadata: %w", err)
	}
	st, err := decodeState(m.State)
	return m, st, err
}

func decodeState(raw json.RawMessage) (nodeState, error) {
	var st nodeState
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return st, fmt.Errorf("decode snapshot node state: %w", err)
		}
	}
	if st.LastSeq == nil {
		st.LastSeq = map[uint64]uint64{}
	}
	return st, nil
}

// confPoint is the configuration in force from a log index on. Membership
// changes are applied when committed, ahead of the applier, so a snapshot
// at the applier's index looks its configuration up here.
type confPoint struct {
	index   uint64
	cs      *raftpb.ConfState
	members []MemberInfo
}

type confHistory struct {
	mu     sync.Mutex
	points []confPoint
}

func (h *confHistory) add(p confPoint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.points = append(h.points, p)
}

func (h *confHistory) reset(p confPoint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.points = []confPoint{p}
}

// at returns the configuration in force at index.
func (h *confHistory) at(index uint64) confPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	var p confPoint
	for _, q := range h.points {
		if q.index > index {
			break
		}
		p = q
	}
	if p.cs == nil {
		p.cs = &raftpb.ConfState{}
	}
	return p
}

// latest is the configuration in force now.
func (h *confHistory) latest() confPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.points) == 0 {
		return confPoint{cs: &raftpb.ConfState{}}
	}
	return h.points[len(h.points)-1]
}

// prune drops points superseded before index.
func (h *confHistory) prune(index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := 0
	for i, q := range h.points {
		if q.index <= index {
			keep = i
		}
	}
	h.points = h.points[keep:]
}

// Compact makes a snapshot of everything applied so far and compacts the
// log; it returns once the snapshot is stored (RAFT.DEBUG COMPACT).
func (n *Node) Compact(ctx context.Context) error {
	w := compactWaiter{min: n.applier.applied.Load(), done: make(chan error, 1)}
	if w.min <= n.snapIndex.Load() {
		return nil
	}
	n.compactMu.Lock()
	n.compactWaiters = append(n.compactWaiters, w)
	n.compactMu.Unlock()
	signal(n.applier.wake)
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("snapshot not stored yet: %w", ctx.Err())
	case <-n.stopc:
		return ErrStopped
	}
}

type compactWaiter struct {
	min  uint64
	done chan error
}

func (n *Node) compactRequested() bool {
	n.compactMu.Lock()
	defer n.compactMu.Unlock()
	return len(n.compactWaiters) > 0
}

// compactDone answers the waiters that a snapshot at index (or err) serves.
func (n *Node) compactDone(index uint64, err error) {
	n.compactMu.Lock()
	defer n.compactMu.Unlock()
	rest := n.compactWaiters[:0]
	for _, w := range n.compactWaiters {
		if err != nil || w.min <= index {
			w.done <- err
			continue
		}
		rest = append(rest, w)
	}
	n.compactWaiters = rest
}

// maybeSnapshot starts a snapshot when enough was applied since the last
// one, or one was asked for. It runs on the applier goroutine between two
// applies, so the RDB reflects exactly the applied index.
func (a *applier) maybeSnapshot(ctx context.Context) {
	n := a.n
	// The verdicts of requests a stored snapshot covers are forgotten
	// here, on the applier goroutine, and only once it is stored: a
	// rebuild (also on this goroutine) replays from the newest stored
	// snapshot, and a killed script it replayed without its verdict would
	// run again, for ever.
	if i := a.snapStored.Swap(0); i != 0 {
		a.verdicts.prune(i)
	}
	if a.snapping.Load() || time.Now().UnixNano() < a.snapRetry.Load() {
		return
	}
	applied := a.applied.Load()
	last := n.snapIndex.Load()
	if applied <= last {
		n.compactDone(last, nil)
		return
	}
	tu := n.cfg.Tunables
	if applied-last < tu.SnapshotEntries.Load() && a.sinceSnap < tu.SnapshotBytes.Load() && !n.compactRequested() {
		return
	}
	term, err := n.storage.Term(applied)
	if err != nil {
		n.log.Warn("cannot snapshot: term of applied index unknown", "index", applied, "err", err)
		return
	}
	start := time.Now()
	job, err := n.cfg.StateMachine.StartSnapshot(ctx)
	if err != nil {
		n.metrics.failMake.Inc()
		n.log.Warn("cannot start snapshot; will retry", "index", applied, "err", err, "in", a.snapFailed())
		n.compactDone(0, err)
		return
	}
	conf := n.conf.at(applied)
	seqs := make(map[uint64]uint64, len(a.lastSeq))
	for k, v := range a.lastSeq {
		seqs[k] = v
	}
	st := nodeState{Members: conf.members, Removed: n.members.removedIDs(), LastSeq: seqs, LogTimeMs: a.logTime}
	var machine json.RawMessage
	if ms, ok := n.cfg.StateMachine.(fsm.MachineState); ok {
		machine, err = ms.MachineState()
		if err != nil {
			n.log.Error("encode the state machine's state for a snapshot", "err", err)
			return
		}
	}
	state, err := encodeState(st, machine)
	if err != nil {
		n.log.Error("encode snapshot state", "err", err)
		return
	}
	a.snapping.Store(true)
	a.sinceSnap = 0
	meta := snapshot.Meta{Index: applied, Term: term, State: state}
	go func() {
		defer func() {
			a.snapping.Store(false)
			signal(a.wake)
		}()
		err := n.finishSnapshot(ctx, job, meta, conf.cs)
		if err != nil {
			n.metrics.failMake.Inc()
			n.log.Error("snapshot failed", "index", applied, "err", err, "retry_in", a.snapFailed())
		} else {
			a.snapStored.Store(applied)
			a.snapBackoff.Store(0)
			n.metrics.snapshotMake.Observe(since(start))
			n.log.Info("snapshot stored and log compacted", "index", applied, "took", time.Since(start).Round(time.Millisecond))
		}
		n.compactDone(applied, err)
	}()
}

// snapFailed puts off the next snapshot after a failure (a full disk makes
// every attempt fail, and each costs a BGSAVE): 5 s, doubling up to a
// minute. It returns the delay.
func (a *applier) snapFailed() time.Duration {
	d := time.Duration(a.snapBackoff.Load())
	d = min(max(2*d, 5*time.Second), time.Minute)
	a.snapBackoff.Store(int64(d))
	a.snapRetry.Store(time.Now().Add(d).UnixNano())
	return d
}

func (n *Node) finishSnapshot(ctx context.Context, job fsm.SnapshotJob, meta snapshot.Meta, cs *raftpb.ConfState) error {
	rc, err := job.Wait(ctx)
	if err != nil {
		return err
	}
	meta, err = n.store.Save(meta, rc)
	rc.Close()
	if err != nil {
		return err
	}
	n.metrics.snapshotBytes.Set(float64(meta.Size))
	data, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encode snapshot metadata: %w", err)
	}
	if _, err := n.storage.CreateSnapshot(meta.Index, cs, data); err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil // a newer snapshot arrived from the leader meanwhile
		}
		return fmt.Errorf("create raft snapshot at %d: %w", meta.Index, err)
	}
	// The WAL may point only at snapshots that are durable (Save fsynced).
	if err := n.wal.SaveSnapshot(&walpb.Snapshot{Index: proto.Uint64(meta.Index), Term: proto.Uint64(meta.Term), ConfState: cs}); err != nil {
		return err
	}
	if c := n.compactIndex(meta.Index); c > 0 {
		if err := n.storage.Compact(c); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("compact log to %d: %w", c, err)
		}
	}
	if err := n.releaseWAL(meta.Index); err != nil {
		return err
	}
	n.snapshotInstalled(meta.Index)
	return nil
}

// compactIndex is where to compact the in-memory log after a snapshot at
// index: keep a catch-up tail of at most SnapshotCatchUpEntries entries and
// SnapshotCatchUpBytes bytes (batched entries can be large). 0: nothing.
func (n *Node) compactIndex(index uint64) uint64 {
	first, err := n.storage.FirstIndex()
	if err != nil || index < first {
		return 0
	}
	lo := first
	if index > n.cfg.SnapshotCatchUpEntries && index-n.cfg.SnapshotCatchUpEntries > lo {
		lo = index - n.cfg.SnapshotCatchUpEntries
	}
	ents, err := n.storage.Entries(lo, index+1, math.MaxUint64)
	if err != nil {
		return 0
	}
	keepFrom := lo
	var total uint64
	for i := len(ents) - 1; i >= 0; i-- {
		total += uint64(len(ents[i].GetData()))
		if total > n.cfg.SnapshotCatchUpBytes {
			keepFrom = ents[i].GetIndex() + 1
			break
		}
	}
	// Compact(c) keeps the entries after c.
	if keepFrom <= first {
		return 0
	}
	return keepFrom - 1
}

func (n *Node) snapshotInstalled(index uint64) {
	for {
		old := n.snapIndex.Load()
		if index <= old || n.snapIndex.CompareAndSwap(old, index) {
			break
		}
	}
	n.conf.prune(index)
	n.store.Purge()
}

// sendSnapshot streams the RDB a MsgSnap refers to, from disk, in its own
// goroutine of the transport: it never holds the file in memory and blocks
// neither the Ready loop nor replication to other followers.
func (n *Node) sendSnapshot(m *raftpb.Message) {
	meta, _, err := decodeMeta(m.GetSnapshot().GetData())
	var f *os.File
	if err == nil {
		f, err = os.Open(n.store.Path(meta))
	}
	if err != nil {
		n.metrics.failSend.Inc()
		n.log.Error("cannot send snapshot", "to", IDString(m.GetTo()), "err", err)
		n.core.reportSnapshot(m.GetTo(), raft.SnapshotFailure)
		return
	}
	// A snapshot made before a member was added does not name it, and raft
	// on the new member would ignore it. As etcd does, send the current
	// configuration: the membership changes after the snapshot's index
	// follow in the log and apply again harmlessly. The snapshot object is
	// shared with raft's storage, so patch a copy.
	m = proto.Clone(m).(*raftpb.Message)
	m.Snapshot.Metadata.ConfState = n.conf.latest().cs
	n.log.Info("sending snapshot", "to", IDString(m.GetTo()), "index", meta.Index, "bytes", meta.Size)
	pr := &progressReader{r: f, f: f, total: meta.Size, sent: n.metrics.transferSent, log: func(done int64) {
		n.log.Info("sending snapshot", "to", IDString(m.GetTo()), "index", meta.Index, "sent", done, "total", meta.Size)
	}}
	n.transport.SendSnapshot(snap.NewMessage(m, pr, meta.Size))
}

// progressReader logs every 64 MiB of a snapshot transfer.
type progressReader struct {
	r          io.Reader
	f          io.Closer
	total, n   int64
	lastLogged int64
	log        func(done int64)
	sent       prometheus.Counter // counts the bytes read, once, at Close
}

func (p *progressReader) Read(b []byte) (int, error) {
	k, err := p.r.Read(b)
	p.n += int64(k)
	if p.n-p.lastLogged >= 64<<20 {
		p.lastLogged = p.n
		p.log(p.n)
	}
	return k, err
}

func (p *progressReader) Close() error {
	p.sent.Add(float64(p.n))
	p.n = 0
	return p.f.Close()
}

// receiveSnapshot checks a snapshot the transport has written to disk
// before raft sees it: a corrupt or truncated transfer is refused (the
// sender reports the failure and raft retries), never loaded.
func (n *Node) receiveSnapshot(m *raftpb.Message) error {
	err := n.verifyReceived(m)
	if err != nil {
		n.metrics.failReceive.Inc()
	}
	return err
}

func (n *Node) verifyReceived(m *raftpb.Message) error {
	meta, _, err := decodeMeta(m.GetSnapshot().GetData())
	if err != nil {
		return err
	}
	path := filepath.Join(n.store.Dir(), fmt.Sprintf("%016x.snap.db", m.GetSnapshot().GetMetadata().GetIndex()))
	if err := snapshot.VerifyFile(path, meta); err != nil {
		os.Remove(path)
		return fmt.Errorf("received snapshot refused: %w", err)
	}
	if err := n.store.Adopt(path, meta); err != nil {
		return err
	}
	n.metrics.transferRecv.Add(float64(meta.Size))
	n.metrics.snapshotBytes.Set(float64(meta.Size))
	n.log.Info("received snapshot", "from", IDString(m.GetFrom()), "index", meta.Index, "bytes", meta.Size)
	return nil
}

// installReceived records a snapshot raft accepted from the leader: its
// members and configuration replace ours, and the applier will load it.
func (n *Node) installReceived(s *raftpb.Snapshot) error {
	meta, st, err := decodeMeta(s.GetData())
	if err != nil {
		return err
	}
	if err := n.storage.ApplySnapshot(s); err != nil {
		return fmt.Errorf("apply snapshot %d to raft storage: %w", meta.Index, err)
	}
	n.members.restore(st.Members, st.Removed)
	for _, m := range st.Members {
		n.addPeer(m.Member)
	}
	n.conf.reset(confPoint{index: meta.Index, cs: s.GetMetadata().GetConfState(), members: st.Members})
	if err := n.releaseWAL(meta.Index); err != nil {
		return err
	}
	n.snapshotInstalled(meta.Index)
	n.applier.enqueueSnapshot(meta)
	return nil
}

// raftSnapshot rebuilds the raft snapshot of a stored one.
func raftSnapshot(meta snapshot.Meta, cs *raftpb.ConfState) (*raftpb.Snapshot, error) {
	data, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot metadata: %w", err)
	}
	return &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(meta.Index), Term: proto.Uint64(meta.Term), ConfState: cs,
	}}, nil
}
