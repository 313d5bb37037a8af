package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
)

// Future is the pending reply of one proposed request.
type Future struct {
	done  chan struct{}
	once  sync.Once
	reply []byte
	err   error
	// applying is set once the request is committed and the applier has
	// reached it: its outcome is then certain to come, however long it
	// runs (a script).
	applying atomic.Bool
	// tag is the proposer's tag of the request (ProposeTagged), handed to
	// fsm.Command.Tag when the request is applied on this node.
	tag uint64
}

func newFuture() *Future { return &Future{done: make(chan struct{})} }

func (f *Future) complete(reply []byte, err error) {
	f.once.Do(func() {
		f.reply, f.err = reply, err
		close(f.done)
	})
}

// Done is closed when the result is known.
func (f *Future) Done() <-chan struct{} { return f.done }

// Applying reports whether the request is committed and being applied: it
// will complete, with its reply or ErrKilled, or ErrTimeout if the node
// stops.
func (f *Future) Applying() bool { return f.applying.Load() }

// Result returns the raw reply, or why there is none. Call it after Done.
func (f *Future) Result() ([]byte, error) { return f.reply, f.err }

// Wait waits for the result until ctx ends; then the outcome is unknown.
func (f *Future) Wait(ctx context.Context) ([]byte, error) {
	select {
	case <-f.done:
		return f.reply, f.err
	case <-ctx.Done():
		return nil, ErrTimeout
	}
}

type proposal struct {
	req entry.Request
	f   *Future
}

// pending is a proposed batch whose replies are awaited.
type pending struct {
	futs     []*Future
	deadline time.Time
	batch    bool      // a batch of client requests (not a membership change)
	start    time.Time // when a batch was proposed
	// applying: the batch is committed and the applier has reached it, so
	// its replies will come (see Future.Applying); it never expires.
	applying bool
	// data is a batch's entry as proposed, sent again after a leader
	// change (proposer.resend).
	data []byte
}

// proposer turns client requests into log entries. It batches requests that
// arrive together into one entry, so that under load one raft proposal, one
// WAL record and one apply round trip serve many clients.
type proposer struct {
	n     *Node
	propc chan proposal

	mu      sync.Mutex
	seq     uint64
	waiting map[uint64]*pending
	// inflight counts proposed batches not yet applied here (or given up
	// on); landed is signalled when one lands.
	inflight int
	landed   chan struct{}
	maxHold  time.Duration // longest hold of throttle

	// leads counts the leaders this node has known (leaderChanged); sent
	// is the count when run last sent the pending batches to the leader,
	// and relead wakes run to send them to a new one.
	leads  atomic.Uint64
	sent   uint64
	relead chan struct{}
	// swept asks run to sweep again: a waiter was added outside it.
	swept chan struct{}
}

func newProposer(n *Node, lastSeq uint64) *proposer {
	seq := uint64(time.Now().UnixNano())
	if seq <= lastSeq {
		seq = lastSeq + 1
	}
	return &proposer{n: n, propc: make(chan proposal, 4096), seq: seq, waiting: map[uint64]*pending{}, landed: make(chan struct{}, 1), relead: make(chan struct{}, 1), swept: make(chan struct{}, 1),
		// A batch round trip takes a few milliseconds under load.
		maxHold: 10 * time.Millisecond}
}

func (p *proposer) nextSeq() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	return p.seq
}

// waitLeader waits, at most one election timeout and until ctx ends, for
// this node to know a leader: a leader transfer or a quick election is then
// invisible to clients, while an outage still gets a prompt CLUSTERDOWN.
func (n *Node) waitLeader(ctx context.Context) bool {
	if n.lead.Load() != raft.None {
		return true
	}
	deadline := time.Now().Add(time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	for n.lead.Load() == raft.None {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return false
		case <-n.stopc:
			return false
		}
	}
	return true
}

// Propose queues a request for the log. The future completes with the
// redis reply, in RESP3 when resp3 is set, once the request is committed and
// applied on this node.
func (n *Node) Propose(ctx context.Context, db int, args [][]byte, resp3 bool) *Future {
	return n.propose(ctx, entry.Request{DB: db, Args: args, RESP3: resp3}, 0)
}

// ProposeRequest queues any request: a command, a transaction (which may
// name a watch), a watch or an unwatch (see entry.Op).
func (n *Node) ProposeRequest(ctx context.Context, req entry.Request) *Future {
	return n.propose(ctx, req, 0)
}

// ProposeTagged is ProposeRequest with a tag of the caller's (not in the
// log): the state machine gets it with the request (fsm.Command.Tag) when
// it is applied here, so the caller can tell its own writes (CLIENT
// TRACKING's NOLOOP).
func (n *Node) ProposeTagged(ctx context.Context, req entry.Request, tag uint64) *Future {
	return n.propose(ctx, req, tag)
}

func (n *Node) propose(ctx context.Context, req entry.Request, tag uint64) *Future {
	f := newFuture()
	f.tag = tag
	if full, err := n.DiskFull(); full {
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, err)
		return f
	}
	// A request the cluster's format cannot carry would make its whole
	// batch corrupt on every node.
	if req.Op == entry.OpRoute && n.members.logFormat() < entry.RouteFormat {
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, fmt.Errorf("%w: a routing change needs format %d, the cluster writes %d", ErrFormat, entry.RouteFormat, n.members.logFormat()))
		return f
	}
	if req.Asking && n.members.logFormat() < entry.MoveFormat {
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, fmt.Errorf("%w: ASKING needs format %d, the cluster writes %d", ErrFormat, entry.MoveFormat, n.members.logFormat()))
		return f
	}
	// A node that cannot apply the log would never answer: the write is
	// refused before it is proposed, so it certainly does not happen.
	if halted, err := n.Halted(); halted {
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, err)
		return f
	}
	if !n.waitLeader(ctx) {
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, ErrNoLeader)
		return f
	}
	select {
	case n.prop.propc <- proposal{req: req, f: f}:
		return f
	default:
	}
	// The queue is full: wait, at most one request timeout, for room. The
	// request was never proposed, so giving up is a definite refusal.
	t := time.NewTimer(n.requestTimeout())
	defer t.Stop()
	select {
	case n.prop.propc <- proposal{req: req, f: f}:
	case <-ctx.Done():
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, ErrNoLeader)
	case <-t.C:
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, ErrNoLeader)
	case <-n.stopc:
		n.metrics.proposalsFailed.Inc()
		f.complete(nil, ErrStopped)
	}
	return f
}

// Proposals are swept for expiry every sweepEvery while any wait; with
// none waiting there is no sweep, so an idle group's proposer never wakes
// (quiesce.go). A waiter added outside run (a membership change's) is
// announced on swept.
const sweepEvery = 100 * time.Millisecond

func (p *proposer) run() {
	sweep := time.NewTicker(sweepEvery)
	sweep.Stop()
	defer sweep.Stop()
	fast := false
	batch := make([]proposal, 0, p.n.cfg.MaxBatch)
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		select {
		case pr := <-p.propc:
			batch = append(batch[:0], pr)
		drain:
			for len(batch) < cap(batch) {
				select {
				case pr := <-p.propc:
					batch = append(batch, pr)
				default:
					break drain
				}
			}
			p.propose(batch)
			if !fast {
				fast = true
				sweep.Reset(sweepEvery)
			}
			p.throttle(hold)
		case <-p.relead:
			p.resend(math.MaxUint64)
		case <-p.swept:
			if !fast {
				fast = true
				sweep.Reset(sweepEvery)
			}
		case <-sweep.C:
			if waiting := p.expire(time.Now()); waiting != fast {
				fast = waiting
				if !fast {
					sweep.Stop()
				}
			}
		case <-p.n.stopc:
			// Proposed entries may still commit (on the other nodes): their
			// outcome is unknown. Queued ones were never proposed.
			p.failAll(ErrTimeout)
			for {
				select {
				case pr := <-p.propc:
					pr.f.complete(nil, ErrStopped)
				default:
					return
				}
			}
		}
	}
}

// throttle holds the next proposal while MaxInflight batches of this node
// are on their way through the log, so that the requests arriving meanwhile
// form one larger batch: one entry, one fsync and one message per node, and
// one apply round trip, shared by more clients. Under load this is what
// keeps the cost per request low; when idle nothing is in flight and a
// request is proposed at once. A batch lost in transit is only given up on
// at its deadline, so the hold lasts at most maxHold.
func (p *proposer) throttle(hold *time.Timer) {
	held := false
	for {
		p.mu.Lock()
		n := p.inflight
		p.mu.Unlock()
		if n < p.n.cfg.MaxInflight {
			break
		}
		if !held {
			hold.Reset(p.maxHold)
			held = true
		}
		select {
		case <-p.landed:
		case <-hold.C:
			return
		case <-p.n.stopc:
			hold.Stop()
			return
		}
	}
	if held {
		hold.Stop()
	}
}

func (p *proposer) propose(batch []proposal) {
	p.n.counters.Batches.Add(1)
	p.n.counters.Requests.Add(uint64(len(batch)))
	// Written in the format every member decodes, as far as this node has
	// applied: a member never receives an entry it cannot read.
	e := entry.Entry{Node: p.n.id, Seq: p.nextSeq(), TimeMs: p.n.leaderTime(), Reqs: make([]entry.Request, len(batch)),
		Format: byte(p.n.members.logFormat())}
	now := time.Now()
	pend := &pending{futs: make([]*Future, len(batch)), deadline: now.Add(p.n.requestTimeout()), batch: true, start: now}
	for i, pr := range batch {
		e.Reqs[i] = pr.req
		pend.futs[i] = pr.f
	}
	// raft keeps the slice it is given, so each entry gets its own buffer.
	data := e.Marshal(make([]byte, 0, e.Size()))
	p.mu.Lock()
	pend.data = data
	p.waiting[e.Seq] = pend
	p.inflight++
	p.mu.Unlock()

	err := p.n.proposeRetrying(data, func() { p.resend(e.Seq) })
	if err != nil {
		p.take(e.Seq)
		// A proposal raft refused was never appended anywhere. Any other
		// error (deadline, stop) may come after raft took the proposal, so
		// the client must hear that the outcome is unknown: an error that
		// claims failure for a write that then commits is a lost update
		// for a client that retries elsewhere.
		if errors.Is(err, raft.ErrProposalDropped) {
			err = ErrNoLeader
		} else {
			err = fmt.Errorf("%w: propose: %v", ErrTimeout, err)
		}
		p.n.metrics.proposalsFailed.Add(float64(len(pend.futs)))
		for _, f := range pend.futs {
			f.complete(nil, err)
		}
	}
}

// proposeRetrying proposes data, retrying while raft drops it for want of
// a leader, at most one request timeout. Raft drops a proposal, without
// appending it anywhere, while leadership moves or no leader is known:
// retrying it is safe, and it makes a leader transfer invisible to
// clients. The deadline exists only once a proposal was dropped: the
// common case costs no timer.
func (n *Node) proposeRetrying(data []byte, before func()) error {
	if before == nil {
		before = func() {}
	}
	before()
	err := n.core.propose(data)
	if !errors.Is(err, raft.ErrProposalDropped) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.requestTimeout())
	defer cancel()
	for errors.Is(err, raft.ErrProposalDropped) && n.waitLeader(ctx) {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
		before()
		err = n.core.propose(data)
	}
	return err
}

func (p *proposer) completeConf(seq uint64, members []MemberInfo) {
	pend := p.take(seq)
	if pend == nil {
		return
	}
	b, _ := json.Marshal(members)
	for _, f := range pend.futs {
		f.complete(b, nil)
	}
}

// await adds a waiter from outside run, and has run sweep for it.
func (p *proposer) await(seq uint64, pend *pending) {
	p.mu.Lock()
	p.waiting[seq] = pend
	p.mu.Unlock()
	signal(p.swept)
}

// proposeConf proposes one membership change and waits until it is applied
// on this node; it returns the members after the change. Raft accepts one
// pending change at a time (it silently turns a second one into an empty
// entry), so this node proposes them one by one and a change that loses a
// race with another node's ends in ErrTimeout.
func (n *Node) proposeConf(ctx context.Context, typ raftpb.ConfChangeType, m Member) ([]MemberInfo, error) {
	if !n.waitLeader(ctx) {
		return nil, ErrNoLeader
	}
	n.confMu.Lock()
	defer n.confMu.Unlock()
	seq := n.prop.nextSeq()
	cctx, err := json.Marshal(confContext{Member: m, ReqNode: n.id, ReqSeq: seq})
	if err != nil {
		return nil, fmt.Errorf("encode member %+v: %w", m, err)
	}
	f := newFuture()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(n.requestTimeout())
	}
	n.prop.await(seq, &pending{futs: []*Future{f}, deadline: deadline})
	cc := &raftpb.ConfChange{Type: typ.Enum(), NodeId: proto.Uint64(m.ID), Context: cctx}
	if err := n.core.proposeConfChange(cc); err != nil {
		n.prop.take(seq)
		return nil, fmt.Errorf("propose %s for %s: %w", typ, IDString(m.ID), err)
	}
	raw, err := f.Wait(ctx)
	if err != nil {
		return nil, err
	}
	var out []MemberInfo
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode members: %w", err)
	}
	return out, nil
}
