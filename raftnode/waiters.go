package raftnode

import (
	"cmp"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
)

// The proposer's waiters: the batches this node proposed whose replies are
// awaited, by seq, and what ends a wait other than the batch's own apply —
// a leader change (the batch is sent again to the new leader), a deadline,
// a snapshot that covers it, a skipped copy, the node's stop.

// forget removes a batch's waiters; the caller holds mu.
func (p *proposer) forget(seq uint64, pend *pending) {
	delete(p.waiting, seq)
	if pend.batch {
		p.inflight--
		signal(p.landed)
	}
}

// resend proposes again, to a leader this node has come to know since it
// last did, every batch with a seq below below that the applier has not
// reached, in seq order. A follower forwards its proposals to the leader,
// which drops them silently while it hands leadership over, and an old
// leader's uncommitted entries may be cut from the log: the batch's client
// would otherwise hear -TIMEOUT, outcome unknown. Sending the same entry
// twice is safe: every applier applies a batch only if its seq is above the
// last applied one of its node, so the first copy to commit is the one
// applied and any later copy is skipped. It runs on run's goroutine only,
// before each new batch is proposed (which it must precede, or that
// batch's seq would make the older one's copy skipped).
func (p *proposer) resend(below uint64) {
	leads := p.leads.Load()
	if leads == p.sent || p.n.lead.Load() == raft.None {
		return
	}
	p.sent = leads
	now := time.Now()
	minWait := now.Add(time.Duration(p.n.cfg.ElectionTicks) * p.n.cfg.TickInterval)
	type again struct {
		seq  uint64
		data []byte
	}
	var out []again
	p.mu.Lock()
	for seq, pend := range p.waiting {
		if pend.data == nil || pend.applying || seq >= below {
			continue
		}
		out = append(out, again{seq, pend.data})
		// The copy gets the batch's own deadline back (a leader change cut
		// it to one election timeout), and at least that long.
		pend.deadline = pend.start.Add(p.n.requestTimeout())
		if pend.deadline.Before(minWait) {
			pend.deadline = minWait
		}
	}
	p.mu.Unlock()
	if len(out) == 0 {
		return
	}
	slices.SortFunc(out, func(a, b again) int { return cmp.Compare(a.seq, b.seq) })
	p.n.counters.Resent.Add(uint64(len(out)))
	for _, a := range out {
		// A copy raft drops now is sent at the next leader change, or its
		// first copy commits, or it expires.
		p.n.core.propose(a.data)
	}
}

// PendingProposals counts the client requests this node proposed, or
// queued to propose, whose outcome is not known yet.
func (n *Node) PendingProposals() int {
	p := n.prop
	k := len(p.propc)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pend := range p.waiting {
		if pend.batch {
			k += len(pend.futs)
		}
	}
	return k
}

// take removes and returns the waiters of a batch.
func (p *proposer) take(seq uint64) *pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	pend := p.waiting[seq]
	if pend != nil {
		p.forget(seq, pend)
	}
	return pend
}

// coveredUpTo ends, with ErrTimeout (outcome unknown), the waits of
// batches not reached by the applier whose seq is at most seq, the last
// one of this node a snapshot being loaded covers: each was applied in it,
// or skipped, and which is not known here.
func (p *proposer) coveredUpTo(seq uint64) {
	var ended []*pending
	p.mu.Lock()
	for s, pend := range p.waiting {
		if s <= seq && !pend.applying && pend.batch {
			ended = append(ended, pend)
			p.forget(s, pend)
		}
	}
	p.mu.Unlock()
	for _, pend := range ended {
		p.n.metrics.proposalsFailed.Add(float64(len(pend.futs)))
		for _, f := range pend.futs {
			f.complete(nil, ErrTimeout)
		}
	}
}

// takeUnreached removes and returns the waiters of a batch the applier
// has not reached (nil if it has, or there are none).
func (p *proposer) takeUnreached(seq uint64) *pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	pend := p.waiting[seq]
	if pend == nil || pend.applying {
		return nil
	}
	p.forget(seq, pend)
	return pend
}

// lookup returns the waiters of a batch, keeping them registered: an apply
// that fails half way is replayed, and the replies come from the replay.
// The batch is being applied from then on.
func (p *proposer) lookup(seq uint64) *pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	pend := p.waiting[seq]
	if pend != nil && !pend.applying {
		pend.applying = true
		for _, f := range pend.futs {
			f.applying.Store(true)
		}
	}
	return pend
}

// leaderChanged shortens every pending wait to one election timeout: an
// entry the old leader had appended and the new one holds commits soon
// after the new leader's first entry; one that was lost (dropped while
// leadership moved) never will, and its client should hear so soon.
func (p *proposer) leaderChanged() {
	limit := time.Now().Add(time.Duration(p.n.cfg.ElectionTicks) * p.n.cfg.TickInterval)
	p.mu.Lock()
	for _, pend := range p.waiting {
		if pend.deadline.After(limit) {
			pend.deadline = limit
		}
	}
	p.mu.Unlock()
	if p.n.lead.Load() != raft.None {
		p.leads.Add(1)
		signal(p.relead)
	}
}

// expire ends waits whose entries never came back (dropped in transit or
// overwritten after a leader change): their outcome is unknown. It
// reports whether any proposal is left waiting.
func (p *proposer) expire(now time.Time) (waiting bool) {
	p.mu.Lock()
	var old []*pending
	for seq, pend := range p.waiting {
		if !pend.applying && now.After(pend.deadline) {
			old = append(old, pend)
			p.forget(seq, pend)
		}
	}
	waiting = len(p.waiting) > 0
	p.mu.Unlock()
	for _, pend := range old {
		p.n.metrics.proposalsFailed.Add(float64(len(pend.futs)))
		for _, f := range pend.futs {
			f.complete(nil, ErrTimeout)
		}
	}
	return waiting
}

func (p *proposer) failAll(err error) {
	p.mu.Lock()
	all := p.waiting
	p.waiting = map[uint64]*pending{}
	p.inflight = 0
	p.mu.Unlock()
	for _, pend := range all {
		p.n.metrics.proposalsFailed.Add(float64(len(pend.futs)))
		for _, f := range pend.futs {
			f.complete(nil, err)
		}
	}
}
