package raftnode

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/internal/beat"
	"github.com/raftproxy/raftproxy/snapshot"
)

// applier feeds committed entries, strictly in log order, to the state
// machine, and hands each reply to the client waiting on this node.
type applier struct {
	n *Node

	mu    sync.Mutex
	queue []queued
	wake  chan struct{}
	// snapping is set while a snapshot's RDB is being written and stored;
	// after a failure, none starts before snapRetry (unix ns), and
	// snapBackoff is the delay (snapFailed).
	snapping    atomic.Bool
	snapRetry   atomic.Int64
	snapBackoff atomic.Int64
	// snapStored is the index of a snapshot stored in raft storage whose
	// verdicts the applier has not pruned yet (see maybeSnapshot).
	snapStored atomic.Uint64
	// sinceSnap counts the bytes of entries applied since the last snapshot
	// started.
	sinceSnap uint64

	applied atomic.Uint64
	// gen is even while the state machine holds exactly the applied prefix of
	// the log and odd while it is being rebuilt; readers compare it before
	// and after a read (a seqlock) to know the read saw a complete state.
	gen    atomic.Uint64
	change chan struct{} // closed and replaced whenever applied or gen moves
	chMu   sync.Mutex

	// lastSeq is, per proposing node, the sequence of the last batch applied.
	// It is derived from the log alone, so every node skips the same batches.
	lastSeq map[uint64]uint64
	poke    chan struct{}
	// batch is applyBatch's buffer, reused (the applier goroutine's only).
	batch []fsm.Command
	// cmds is commands' buffer, reused likewise: what commands returned is
	// valid until it is called again.
	cmds []command
	// logTime is the effective time of the last entry turned into commands
	// (clock.go): the largest entry time so far. logTimeNow mirrors it, as
	// of the last apply, for other goroutines.
	logTime    int64
	logTimeNow atomic.Int64
	// clockOffset is this node's clock minus the stamp of the last entry
	// applied live, in milliseconds (Node.ClockOffset).
	clockOffset atomic.Int64

	// verdicts, gate and run are the killing of killable requests
	// (verdict.go, gate.go, apply_kill.go): what the log decided, the gate
	// that keeps reads away from undecided effects, and the killable
	// request running now.
	verdicts *verdicts
	gate     *readGate
	current  atomic.Pointer[running]

	// halt is set once the applier reached an entry this build cannot
	// decode (halt.go).
	halt atomic.Pointer[haltPoint]
}

func newApplier(n *Node) *applier {
	a := &applier{n: n, wake: make(chan struct{}, 1), change: make(chan struct{}), lastSeq: map[uint64]uint64{}, poke: make(chan struct{}, 1),
		verdicts: newVerdicts(), gate: newReadGate()}
	a.gen.Store(1) // not serving until the first Reset
	return a
}

// queued is committed work for the applier, in log order: entries, or a
// snapshot received from the leader that replaces everything before it.
type queued struct {
	ents []*raftpb.Entry
	snap *snapshot.Meta
}

func (a *applier) enqueue(ents []*raftpb.Entry) {
	a.verdicts.takeEntries(ents)
	a.push(queued{ents: ents})
}

func (a *applier) enqueueSnapshot(m snapshot.Meta) {
	a.verdicts.seenTo(m.Index)
	a.push(queued{snap: &m})
}

func (a *applier) push(q queued) {
	a.mu.Lock()
	a.queue = append(a.queue, q)
	a.mu.Unlock()
	signal(a.wake)
}

func (a *applier) dequeue() []queued {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.queue
	a.queue = nil
	return q
}

func (a *applier) broadcast() {
	a.chMu.Lock()
	close(a.change)
	a.change = make(chan struct{})
	a.chMu.Unlock()
}

func (a *applier) changed() <-chan struct{} {
	a.chMu.Lock()
	defer a.chMu.Unlock()
	return a.change
}

// waitApplied waits until idx is applied and the state machine is serving.
func (a *applier) waitApplied(idx uint64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ch := a.changed()
		if a.applied.Load() >= idx && a.gen.Load()%2 == 0 {
			return nil
		}
		if h := a.halt.Load(); h != nil && idx >= h.index {
			return h.err
		}
		if k := a.busy(); k != 0 {
			return &BusyError{Kind: k}
		}
		select {
		case <-ch:
		case <-t.C:
			if a.gen.Load()%2 == 1 {
				return ErrLoading
			}
			return ErrTimeout
		case <-a.n.stopc:
			return ErrStopped
		}
	}
}

// The state machine's health is checked every healthBusy while entries
// are applied, backing off to healthIdle while none are.
const (
	healthBusy = time.Second
	healthIdle = 64 * time.Second
)

func (a *applier) run() {
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		<-a.n.stopc
		cancel()
		// An applier idle or between commands returns at once; one
		// blocked in redis (a script that runs for ever) is cut off.
		select {
		case <-returned:
		case <-time.After(time.Second):
			if i, ok := a.n.cfg.StateMachine.(fsm.Interrupter); ok {
				a.n.log.Warn("the applier is blocked on redis; cutting its connection to stop")
				i.Interrupt()
			}
		}
	}()
	if !a.recover(ctx) {
		return
	}
	// The health check is a backstop: a redis that restarted is also
	// caught by the next apply (its connection broke), by each read
	// connection's dial (its run id) and, when raftproxy runs it, by the
	// supervisor that restarted it (CheckStateMachine); a tainted one by
	// the watchdog at once. So it slows down while nothing is applied: a
	// process with many idle groups would otherwise wake often for each.
	healthEvery := healthBusy
	health := time.NewTimer(healthEvery)
	defer health.Stop()
	checked := a.applied.Load()
	for {
		select {
		case <-a.wake:
		case <-health.C:
			if now := a.applied.Load(); now != checked {
				checked, healthEvery = now, healthBusy
			} else {
				healthEvery = min(2*healthEvery, healthIdle)
			}
			// On a beat (internal/beat): a process's idle groups check
			// together, with its other periodic signals.
			health.Reset(beat.OnAfter(healthEvery, healthBusy))
			if !a.n.cfg.StateMachine.Healthy(ctx) && !a.recover(ctx) {
				return
			}
			continue
		case <-a.poke:
			if !a.n.cfg.StateMachine.Healthy(ctx) && !a.recover(ctx) {
				return
			}
			continue
		case <-a.n.stopc:
			return
		}
		for _, q := range a.dequeue() {
			if q.snap != nil {
				if !a.loadSnapshot(ctx, *q.snap) {
					return
				}
				continue
			}
			if !a.applyEntries(ctx, q.ents) {
				return
			}
		}
		a.maybeSnapshot(ctx)
	}
}

// applyEntries applies committed entries in bounded pipelined rounds. It
// returns false only when the node stops.
func (a *applier) applyEntries(ctx context.Context, ents []*raftpb.Entry) bool {
	if a.halt.Load() != nil {
		// They wait in raft's storage for a build that can apply them all,
		// or a snapshot past the entry this one cannot.
		return true
	}
	// Entries a snapshot (loaded after they were queued) already covers.
	for len(ents) > 0 && ents[0].GetIndex() <= a.applied.Load() {
		ents = ents[1:]
	}
	ents, blocked := untilUnappliable(ents)
	if blocked != nil {
		defer a.haltAt(blocked)
	}
	for len(ents) > 0 {
		chunk := ents
		if len(chunk) > 1024 {
			chunk = chunk[:1024]
		}
		var cmds []command
		for {
			cmds = a.commands(chunk, true)
			a.n.counters.ApplyRounds.Add(1)
			a.n.counters.Applied.Add(uint64(len(cmds)))
			if hasKillable(cmds) {
				switch a.applyKillable(ctx, chunk, cmds) {
				case killStopped:
					return false
				case killRebuild:
					if !a.recover(ctx) {
						return false
					}
					continue
				}
				break
			}
			err := a.applyBatch(cmds)
			if err == nil {
				break
			}
			a.n.log.Error("applying to redis failed; rebuilding it from the log", "err", err)
			if !a.recover(ctx) {
				return false
			}
		}
		for _, e := range chunk {
			a.sinceSnap += uint64(len(e.GetData()))
		}
		a.applied.Store(chunk[len(chunk)-1].GetIndex())
		a.logTimeNow.Store(a.logTime)
		a.n.metrics.proposalsApplied.Add(float64(len(chunk)))
		a.broadcast()
		ents = ents[len(chunk):]
	}
	return true
}

// loadSnapshot replaces redis's content with a snapshot received from the
// leader. Reads are refused meanwhile (the generation is odd).
func (a *applier) loadSnapshot(ctx context.Context, m snapshot.Meta) bool {
	if m.Index <= a.applied.Load() {
		return true
	}
	a.gen.Add(1)
	a.broadcast()
	start := time.Now()
	if err := a.resetTo(ctx, &m); err != nil {
		a.n.metrics.failLoad.Inc()
		a.n.log.Error("loading snapshot into redis failed; rebuilding it", "index", m.Index, "err", err)
		// recover loads the newest snapshot (this one) and replays from it.
		return a.recover(ctx)
	}
	a.applied.Store(m.Index)
	a.unhaltPast(m.Index)
	a.logTimeNow.Store(a.logTime)
	a.n.metrics.snapshotLoad.Observe(since(start))
	a.gen.Add(1)
	a.broadcast()
	a.n.log.Info("loaded snapshot into redis", "index", m.Index, "bytes", m.Size, "took", time.Since(start).Round(time.Millisecond))
	return true
}

// resetTo replaces the state machine's content with snapshot m, or empties
// it when m is nil, and restores the applier's bookkeeping to match.
func (a *applier) resetTo(ctx context.Context, m *snapshot.Meta) error {
	// A snapshot being written must finish first (see StartSnapshot).
	for a.snapping.Load() {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m == nil {
		a.lastSeq = map[uint64]uint64{}
		a.logTime = 0
		if err := a.n.cfg.StateMachine.Reset(ctx, nil, 0); err != nil {
			return err
		}
		return a.restoreMachine(ctx, nil)
	}
	st, err := decodeState(m.State)
	if err != nil {
		return err
	}
	f, err := os.Open(a.n.store.Path(*m))
	if err != nil {
		return fmt.Errorf("open snapshot %d: %w", m.Index, err)
	}
	defer f.Close()
	if err := a.n.cfg.StateMachine.Reset(ctx, f, m.Size); err != nil {
		return fmt.Errorf("load snapshot %d into redis: %w", m.Index, err)
	}
	a.lastSeq = st.LastSeq
	a.logTime = st.LogTimeMs
	// A batch of this node's the snapshot covers may have been applied
	// there, out of this applier's sight: a later copy of it
	// (proposer.resend) must not tell its clients it did not happen.
	a.n.prop.coveredUpTo(a.lastSeq[a.n.id])
	if err := a.restoreMachine(ctx, m.State); err != nil {
		return fmt.Errorf("restore the state machine's state of snapshot %d: %w", m.Index, err)
	}
	return nil
}

func (a *applier) restoreMachine(ctx context.Context, raw json.RawMessage) error {
	if ms, ok := a.n.cfg.StateMachine.(fsm.MachineState); ok {
		return ms.RestoreMachineState(ctx, raw)
	}
	return nil
}

// CheckStateMachine asks the applier to check its state machine now, e.g. after a client
// connection saw the local redis restart.
func (n *Node) CheckStateMachine() {
	signal(n.applier.poke)
}

// recover empties the state machine and replays the applied prefix of the
// log into it. It returns false only when the node stops.
func (a *applier) recover(ctx context.Context) bool {
	if a.gen.Load()%2 == 0 {
		a.gen.Add(1)
		a.broadcast()
		a.n.metrics.redisRebuilds.Inc()
	}
	for {
		err := a.replay(ctx)
		if err == nil {
			a.logTimeNow.Store(a.logTime)
			a.gen.Add(1)
			a.broadcast()
			a.n.log.Info("redis holds the applied log", "applied_index", a.applied.Load())
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.n.log.Error("rebuilding redis from the log failed; retrying", "err", err)
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
}

// replay rebuilds the state machine: the newest snapshot in raft storage
// (or nothing), then the applied entries after it.
func (a *applier) replay(ctx context.Context) error {
	var base *snapshot.Meta
	if rs, err := a.n.storage.Snapshot(); err == nil && !raft.IsEmptySnap(rs) {
		m, _, err := decodeMeta(rs.GetData())
		if err != nil {
			return err
		}
		base = &m
	}
	if err := a.resetTo(ctx, base); err != nil {
		return fmt.Errorf("reset state machine: %w", err)
	}
	lo := uint64(1)
	if base != nil {
		lo = base.Index + 1
		if a.applied.Load() < base.Index {
			a.applied.Store(base.Index)
		}
	}
	applied := a.applied.Load()
	for lo <= applied {
		ents, err := a.n.storage.Entries(lo, applied+1, 4<<20)
		if err != nil {
			return fmt.Errorf("read log entries [%d, %d]: %w", lo, applied, err)
		}
		if err := a.applyBatch(a.commands(ents, false)); err != nil {
			return fmt.Errorf("replay entries [%d, %d]: %w", lo, ents[len(ents)-1].GetIndex(), err)
		}
		lo = ents[len(ents)-1].GetIndex() + 1
	}
	return nil
}

// commands turns entries into state machine commands. With replies, each
// command whose batch was proposed here completes its client's future. The
// slice it returns is valid until its next call.
func (a *applier) commands(ents []*raftpb.Entry, replies bool) []command {
	clear(a.cmds)
	cmds := a.cmds[:0]
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		if entry.IsControl(e.GetData()) {
			continue // taken in by the verdicts when committed
		}
		b, err := entry.Unmarshal(e.GetData())
		if err != nil {
			// Every node holds the same bytes, so every node skips it alike.
			a.n.log.Error("skipping undecodable log entry", "index", e.GetIndex(), "err", err)
			continue
		}
		// Every decodable batch moves the log's time, skipped or not, so
		// every node's time is the same at every index.
		a.logTime = max(a.logTime, b.TimeMs)
		now := a.logTime
		if replies {
			a.clockOffset.Store(a.n.nowMs() - b.TimeMs)
		}
		// A batch whose sequence is not above the last applied one from the
		// same node was overtaken in transit, or is a second copy of one
		// applied (proposer.resend); applying it would reorder that node's
		// clients' writes, or run them twice, so no node applies it. Its
		// clients hear it did not happen only if no copy was applied: a
		// copy's waiters, still registered while its replies come, must
		// get those replies.
		if b.Seq <= a.lastSeq[b.Node] {
			if replies && b.Node == a.n.id {
				if pend := a.n.prop.takeUnreached(b.Seq); pend != nil {
					for _, f := range pend.futs {
						f.complete(nil, ErrReordered)
					}
				}
			}
			continue
		}
		a.lastSeq[b.Node] = b.Seq
		var pend *pending
		if replies && b.Node == a.n.id {
			pend = a.n.prop.lookup(b.Seq)
		}
		if pend != nil && len(pend.futs) != len(b.Reqs) {
			pend = nil
		}

		for i, r := range b.Reqs {
			c := command{Command: fsm.Command{Index: e.GetIndex(), Req: i, DB: r.DB, Args: r.Args, Tx: r.Tx,
				Op: r.Op, Watch: r.Watch, RESP3: r.RESP3, TimeMs: now, Live: replies, Killable: r.Killable, Asking: r.Asking, Format: b.Format}}
			if pend != nil {
				c.finish = finisher(a.n.prop, b.Seq, pend, i)
				c.Reply = replier(c.finish)
				c.Tag = pend.futs[i].tag
			}
			if r.Killable != 0 && a.verdicts.of(c.target()) == aborted {
				// Killed before it ran here: it never runs, anywhere.
				if c.finish != nil {
					c.finish(nil, ErrKilled)
				}
				continue
			}
			cmds = append(cmds, c)
		}
	}
	a.cmds = cmds
	return cmds
}

// finisher completes one request's future; the last one of a batch
// unregisters the batch.
func finisher(p *proposer, seq uint64, pend *pending, i int) func([]byte, error) {
	return func(raw []byte, err error) {
		pend.futs[i].complete(raw, err)
		if i == len(pend.futs)-1 {
			p.n.metrics.proposalDuration.Observe(since(pend.start))
			p.take(seq)
		}
	}
}

// replier completes a future with a reply.
func replier(finish func([]byte, error)) func([]byte) {
	return func(raw []byte) { finish(raw, nil) }
}

// command is a state machine command with what the applier keeps beside it:
// finish completes its future with a reply or an error (nil when no client
// of this node waits).
type command struct {
	fsm.Command
	finish func([]byte, error)
}

func (c *command) target() target { return target{c.Index, uint64(c.Req)} }

// applyBatch sends commands to the state machine.
func (a *applier) applyBatch(cmds []command) error {
	if len(cmds) == 0 {
		return nil
	}
	batch := a.batch[:0]
	for i := range cmds {
		batch = append(batch, cmds[i].Command)
	}
	start := time.Now()
	err := a.n.cfg.StateMachine.Apply(batch)
	clear(batch)
	a.batch = batch[:0]
	a.n.metrics.redisApply.Observe(since(start))
	return err
}
