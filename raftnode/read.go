package raftnode

import (
	"context"
	"time"

	"go.etcd.io/raft/v3"
)

// readBatch is every read that arrived while the previous ReadIndex round
// was in flight; one round serves them all.
type readBatch struct {
	done chan struct{}
	err  error
	// index is the round's read index, set before indexed is closed (once
	// the leader answered; done closes later, once it is applied).
	index   uint64
	indexed chan struct{}
	// timeMs is the log's time of the round (clock.go), set with index.
	timeMs int64
}

func newReadBatch() *readBatch {
	return &readBatch{done: make(chan struct{}), indexed: make(chan struct{})}
}

// readIndexer confirms leadership with a quorum (raft's ReadOnlySafe
// ReadIndex) for batches of reads, then waits for the applier to reach the
// read index: a read that runs after that sees every write that completed
// before it started. No log entry is written for reads.
type readIndexer struct {
	n       *Node
	kick    chan struct{}
	states  chan raft.ReadState
	leaderc chan struct{}

	next chan *readBatch // holds the batch being collected
	rid  uint64
}

func newReadIndexer(n *Node) *readIndexer {
	r := &readIndexer{
		n:       n,
		kick:    make(chan struct{}, 1),
		states:  make(chan raft.ReadState, 64),
		leaderc: make(chan struct{}, 1),
		next:    make(chan *readBatch, 1),
	}
	r.next <- newReadBatch()
	return r
}

// ReadWait is a linearizable read in progress; see Node.StartRead.
type ReadWait struct{ b *readBatch }

// StartRead begins a linearizable read without blocking: reads started
// together share one ReadIndex round. Wait returns once this node has
// applied everything that was committed when StartRead was called, as
// confirmed by the current leader.
func (n *Node) StartRead() ReadWait { return n.startRead(true) }

// startRead is StartRead; count says whether a client's read (counted in
// the reads metric) or the node's own.
func (n *Node) startRead(count bool) ReadWait {
	r := n.reads
	if count {
		n.counters.Reads.Add(1)
	}
	b := <-r.next
	r.next <- b
	signal(r.kick)
	return ReadWait{b: b}
}

// Ready is closed once the read may run or has failed (see Err); it always
// closes, at the latest when the request timeout passes or the node stops.
func (w ReadWait) Ready() <-chan struct{} { return w.b.done }

// Err is why the read may not run, once Ready is closed.
func (w ReadWait) Err() error { return w.b.err }

// TimeMs is the time the read runs at, once Ready is closed without error:
// the leader's clock when it confirmed the read index, never before the
// log's time (clock.go). Keys expire for the read by it.
func (w ReadWait) TimeMs() int64 { return w.b.timeMs }

// deliver hands the read states of a Ready to the round waiting for them;
// a leader's own (not stamped by anyone) get its clock.
func (r *readIndexer) deliver(rs []raft.ReadState, leader bool) {
	var now int64
	for _, s := range rs {
		if _, ms, ok := readCtxTime(s.RequestCtx); ok && ms == 0 && leader {
			if now == 0 {
				now = r.n.leaderTime()
			}
			s.RequestCtx = stampedCtx(s.RequestCtx, now)
		}
		select {
		case r.states <- s:
		default: // the requester retries
		}
	}
}

func (r *readIndexer) leaderChanged() {
	signal(r.leaderc)
}

func (r *readIndexer) run() {
	for {
		select {
		case <-r.kick:
		case <-r.n.stopc:
			b := <-r.next
			b.err = ErrStopped
			close(b.done)
			return
		}
		// Swap in a fresh batch: reads arriving from now on need a new round,
		// because this round's index may predate their writes' completion.
		b := <-r.next
		r.next <- newReadBatch()
		start := time.Now()
		idx, ms, err := r.roundTrip()
		if err != nil {
			b.err = err
			close(b.done)
			continue
		}
		b.index = idx
		b.timeMs = ms
		close(b.indexed)
		go func() {
			b.err = r.n.applier.waitApplied(idx, r.n.requestTimeout())
			if b.err == nil {
				r.n.metrics.readIndexDuration.Observe(since(start))
			}
			close(b.done)
		}()
	}
}

// roundTrip runs ReadIndex until the leader answers. A request or its answer
// can be lost (leader change, dropped message), so it is retried with a new
// request id; answers to old ids are ignored. It returns the read index and
// the leader's time (or, from a leader that does not stamp, this node's
// reading of the log's time).
func (r *readIndexer) roundTrip() (uint64, int64, error) {
	deadline := time.Now().Add(r.n.requestTimeout())
	for time.Now().Before(deadline) {
		// A node waiting for disk space applies nothing: it cannot serve.
		if full, err := r.n.DiskFull(); full {
			return 0, 0, err
		}
		wctx, cancel := context.WithDeadline(context.Background(), deadline)
		ok := r.n.waitLeader(wctx)
		cancel()
		if !ok {
			return 0, 0, ErrNoLeader
		}
		r.rid++
		r.n.counters.ReadRounds.Add(1)
		r.n.core.readIndex(readCtx(r.rid))
		retry := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case s := <-r.states:
				if rid, ms, ok := readCtxTime(s.RequestCtx); ok && rid == r.rid {
					retry.Stop()
					if ms == 0 {
						ms = max(r.n.nowMs(), r.n.LogTime())
					}
					return s.Index, ms, nil
				}
			case <-r.leaderc:
				// An answer may still come from the old leader, but a new
				// request to the new one is the certain way forward.
				break wait
			case <-retry.C:
				break wait
			case <-r.n.stopc:
				retry.Stop()
				return 0, 0, ErrStopped
			}
		}
		retry.Stop()
	}
	return 0, 0, ErrTimeout
}

// CommitIndex returns the highest log index this node knows to be
// committed. A subscription made now receives only messages of entries
// after it: what was published before it, it must not see (e.g. entries a
// restarted node applies again).
func (n *Node) CommitIndex() uint64 {
	c := n.commit.Load()
	if a := n.applier.applied.Load(); a > c {
		c = a
	}
	if hs, _, err := n.storage.InitialState(); err == nil && hs.GetCommit() > c {
		c = hs.GetCommit()
	}
	return c
}
