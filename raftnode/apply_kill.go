package raftnode

import (
	"context"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
)

// How the applier runs a chunk of entries that holds killable requests
// (verdict.go has the rule):
//
//  1. It shuts the read gate (gate.go) once the reads running on redis end.
//  2. It applies the chunk's commands in order, each killable one alone, so
//     that while it runs it is the only script redis runs and a kill hits
//     it and nothing else; one aborted before its turn is skipped. While one
//     runs, a watcher kills it if its Abort is committed, and marks the node
//     busy past the threshold. Replies are held.
//  3. It waits until every killable request of the chunk has its verdict
//     in the committed log: the leader proposes Settle up to the chunk's
//     last entry once it has run them all; a follower that waited two
//     election timeouts does too.
//  4. If a request was aborted after it had run to its end here (or, being a
//     transaction, after it had started: redis runs the rest of a
//     transaction whose script was killed), redis holds effects the cluster
//     does not have: the node rebuilds redis from the log and applies the
//     chunk again, skipping it. Otherwise it hands the held replies out
//     (ErrKilled for the killed requests) and opens the gate.

type killOutcome uint8

const (
	killApplied killOutcome = iota // the chunk is applied
	killRebuild                    // redis must be rebuilt, the chunk applied again
	killStopped                    // the node stops
)

// ran is what happened to one killable request on this node.
type ran uint8

const (
	ranToEnd   ran = iota // it ran to its end
	ranSkipped            // aborted before its turn: never sent to redis
	ranKilled             // killed cleanly while it ran
	ranUnclean            // killed by stopping redis
)

func hasKillable(cmds []command) bool {
	for i := range cmds {
		if cmds[i].Killable != 0 {
			return true
		}
	}
	return false
}

func (a *applier) applyKillable(ctx context.Context, chunk []*raftpb.Entry, cmds []command) killOutcome {
	if !a.gate.close(a.n.stopc) {
		return killStopped
	}
	defer a.gate.open()
	if late(cmds) && !a.learnVerdicts(ctx) {
		return killStopped
	}
	held := make([][]byte, len(cmds))
	replies := make([]func([]byte), len(cmds))
	for i := range cmds {
		if r := cmds[i].Reply; r != nil {
			replies[i] = r
			cmds[i].Reply = func(raw []byte) { held[i] = raw }
		}
	}
	outcome := make([]ran, len(cmds))
	start := 0
	for i := range cmds {
		c := &cmds[i]
		if c.Killable == 0 {
			continue
		}
		if err := a.applyBatch(cmds[start:i]); err != nil {
			return a.failed(ctx, err)
		}
		start = i + 1
		if a.verdicts.of(c.target()) == aborted {
			outcome[i] = ranSkipped
			continue
		}
		var err error
		if outcome[i], err = a.runKillable(ctx, c); err != nil {
			return a.failed(ctx, err)
		}
	}
	if err := a.applyBatch(cmds[start:]); err != nil {
		return a.failed(ctx, err)
	}
	if !a.awaitVerdicts(ctx, chunk[len(chunk)-1].GetIndex(), cmds) {
		return killStopped
	}
	for i := range cmds {
		c := &cmds[i]
		if c.Killable == 0 || a.verdicts.of(c.target()) != aborted {
			continue
		}
		tx := len(c.Tx) > 0
		if outcome[i] == ranToEnd || outcome[i] == ranUnclean || (outcome[i] == ranKilled && tx) {
			a.n.log.Warn("a killed request had run here; rebuilding redis without it", "index", c.Index, "request", c.Req)
			a.n.counters.Rebuilt.Add(1)
			return killRebuild
		}
	}
	for i := range cmds {
		c := &cmds[i]
		switch {
		case c.Killable != 0 && a.verdicts.of(c.target()) == aborted:
			if c.finish != nil {
				c.finish(nil, ErrKilled)
			}
		case replies[i] != nil && held[i] != nil:
			replies[i](held[i])
		}
	}
	return killApplied
}

// lateAfter is how long ago a killable request must have been proposed for
// this node to count as catching up when it reaches it.
const lateAfter = time.Second

// late reports whether a killable request of cmds was proposed a while ago
// (lateAfter): this node is catching up (after a restart,
// a partition, a snapshot, or as a new member), and the request's verdict
// may be in entries it has not received yet.
func late(cmds []command) bool {
	old := time.Now().Add(-lateAfter).UnixMilli()
	for i := range cmds {
		if cmds[i].Killable != 0 && cmds[i].TimeMs > 0 && cmds[i].TimeMs < old {
			return true
		}
	}
	return false
}

// learnVerdicts waits until this node's committed log reaches the leader's
// commit index as of now (a ReadIndex round), so that a kill decided by then
// is known before the requests it may concern run: a killed request must
// never run again, not even for a moment on a node catching up. Without a
// leader it gives up after two election timeouts and runs them; a kill
// decided meanwhile stops them. It reports false when the node stops.
func (a *applier) learnVerdicts(ctx context.Context) bool {
	give := time.Now().Add(2 * a.n.electionTimeout())
	w := a.n.startRead(false)
	select {
	case <-w.b.indexed:
	case <-w.Ready():
	case <-time.After(time.Until(give)):
	case <-ctx.Done():
		return false
	}
	select {
	case <-w.b.indexed:
	default:
		a.n.log.Warn("could not learn the leader's commit index before running a killable request proposed a while ago", "err", w.b.err)
		return true
	}
	for a.verdicts.seen.Load() < w.b.index && time.Now().Before(give) {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (a *applier) failed(ctx context.Context, err error) killOutcome {
	if ctx.Err() != nil {
		return killStopped
	}
	a.n.log.Error("applying to redis failed; rebuilding it from the log", "err", err)
	return killRebuild
}

// runKillable applies one killable request, killing it if its Abort comes
// while it runs.
func (a *applier) runKillable(ctx context.Context, c *command) (ran, error) {
	r := &running{t: c.target(), kind: c.Killable, since: time.Now(), done: make(chan struct{})}
	a.current.Store(r)
	ended := make(chan struct{})
	result := make(chan ran, 1)
	go a.watchKillable(ctx, r, ended, result)
	err := a.applyBatch([]command{*c})
	close(ended)
	out := <-result
	a.current.Store(nil)
	close(r.done)
	a.broadcast()
	if err != nil && out != ranUnclean {
		return out, err
	}
	return out, nil
}

// watchKillable runs beside the apply of request r: it kills r when r's
// Abort is committed, and marks the node busy once r has run past the busy
// threshold. It sends what became of r once the apply has ended.
func (a *applier) watchKillable(ctx context.Context, r *running, ended <-chan struct{}, result chan<- ran) {
	out := ranToEnd
	defer func() { result <- out }()
	busy := time.NewTimer(a.busyAfter())
	defer busy.Stop()
	for {
		ch := a.verdicts.changed()
		if a.verdicts.of(r.t) == aborted {
			out = a.kill(ctx, r, ended)
			<-ended
			return
		}
		select {
		case <-ch:
		case <-busy.C:
			a.gate.setBusy(r.kind)
			a.broadcast() // reads waiting for the applied index are busy too
			a.n.log.Warn("a killable request has run past the busy threshold; clients get -BUSY until it ends or is killed",
				"index", r.t.index, "request", r.t.req, "threshold", a.busyAfter())
		case <-ended:
			return
		case <-ctx.Done():
			<-ended
			return
		}
	}
}

// kill stops r on the state machine. Redis takes a kill only while a script
// runs (and reads it only once the script has run past its busy threshold),
// so it is tried again until r ends.
func (a *applier) kill(ctx context.Context, r *running, ended <-chan struct{}) ran {
	k, ok := a.n.cfg.StateMachine.(fsm.Killer)
	if !ok {
		return ranToEnd
	}
	for {
		res, err := k.Kill(ctx, r.kind)
		switch {
		case err != nil:
			a.n.log.Warn("killing a request failed; trying again", "index", r.t.index, "request", r.t.req, "err", err)
		case res == fsm.KillClean:
			a.n.counters.Killed.Add(1)
			a.n.log.Info("killed a request whose abort was committed", "index", r.t.index, "request", r.t.req)
			return ranKilled
		case res == fsm.KillUnclean:
			a.n.counters.Killed.Add(1)
			a.n.log.Warn("killed a request that had written by stopping the local redis; it is rebuilt without it", "index", r.t.index, "request", r.t.req)
			return ranUnclean
		}
		select {
		case <-ended:
			return ranToEnd
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ranToEnd
		}
	}
}

// awaitVerdicts waits until every killable request of cmds has its verdict.
// The leader settles the chunk once it ran it (all up to last); a follower
// settles it itself after waiting two election timeouts (the leader may be
// slower, or gone). It reports false when the node stops.
func (a *applier) awaitVerdicts(ctx context.Context, last uint64, cmds []command) bool {
	n := a.n
	et := n.electionTimeout()
	began := time.Now()
	var proposed time.Time
	var proposedTerm uint64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := a.verdicts.changed()
		decided := true
		for i := range cmds {
			if cmds[i].Killable != 0 && a.verdicts.of(cmds[i].target()) == undecided {
				decided = false
				break
			}
		}
		if decided {
			return true
		}
		term := n.term.Load()
		leader := n.IsLeader()
		if (leader && (term != proposedTerm || time.Since(proposed) > et)) ||
			(!leader && time.Since(began) > 2*et && time.Since(proposed) > et) {
			n.proposeControl(entry.Control{Op: entry.ControlSettle, Index: last, Node: n.id})
			proposed, proposedTerm = time.Now(), term
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
}
