package raftnode

import (
	"context"
	"errors"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
)

// Killing killable requests: see verdict.go for the rule, apply_kill.go
// for how the applier runs them.

var (
	// ErrKilled ends a killable request that was killed: it did not run.
	ErrKilled = errors.New("killed")
	// ErrNotBusy: no killable request of that kind runs on this node.
	ErrNotBusy = errors.New("no killable request is running")
)

// BusyError says that a killable request of Kind has run on this node past
// the state machine's busy threshold: like a redis running a long script,
// the node refuses commands until it ends or is killed.
type BusyError struct{ Kind uint8 }

func (e *BusyError) Error() string { return "busy running a killable request" }

// running is the killable request the applier is running.
type running struct {
	t     target
	kind  uint8
	since time.Time
	done  chan struct{} // closed when it ends
}

const defaultBusyAfter = 5 * time.Second

func (a *applier) busyAfter() time.Duration {
	if k, ok := a.n.cfg.StateMachine.(fsm.Killer); ok {
		if d := k.BusyAfter(); d > 0 {
			return d
		}
	}
	return defaultBusyAfter
}

// busy returns the kind of the killable request running past the busy
// threshold, or 0.
func (a *applier) busy() uint8 {
	r := a.current.Load()
	if r == nil || time.Since(r.since) < a.busyAfter() {
		return 0
	}
	return r.kind
}

// Busy reports whether a killable request has run on this node past the
// busy threshold, and its kind.
func (n *Node) Busy() (uint8, bool) {
	k := n.applier.busy()
	return k, k != 0
}

// BusyAfter is how long a killable request runs before the node is busy.
func (n *Node) BusyAfter() time.Duration { return n.applier.busyAfter() }

// Kill kills the killable request of kind that this node is running, as
// SCRIPT KILL does: like redis, which reads SCRIPT KILL only once the script
// has run past the busy threshold, it waits for that; then an Abort goes
// through the log, and every node ends as if the request never ran. It
// returns ErrNotBusy when nothing runs here or the request ended (or was
// settled) first, and a BusyError naming the kind when another kind runs.
func (n *Node) Kill(ctx context.Context, kind uint8) error {
	r := n.applier.current.Load()
	if r == nil {
		return ErrNotBusy
	}
	if r.kind != kind {
		return &BusyError{Kind: r.kind}
	}
	if wait := time.Until(r.since.Add(n.applier.busyAfter())); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.done:
			return ErrNotBusy
		case <-ctx.Done():
			return ErrTimeout
		case <-n.stopc:
			return ErrStopped
		}
	}
	v := n.applier.verdicts
	abort := entry.Control{Op: entry.ControlAbort, Index: r.t.index, Req: r.t.req, Node: n.id}
	var proposed time.Time
	for {
		ch := v.changed()
		switch v.of(r.t) {
		case aborted:
			return nil
		case settled:
			return ErrNotBusy
		}
		// A proposal lost while leadership moves is proposed again.
		if time.Since(proposed) > n.electionTimeout() {
			n.proposeControl(abort)
			proposed = time.Now()
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ErrTimeout
		case <-n.stopc:
			return ErrStopped
		}
	}
}

func (n *Node) electionTimeout() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
}

// proposeControl proposes a control entry in the background; one lost in
// transit is proposed again by the caller's loop.
func (n *Node) proposeControl(c entry.Control) {
	c.Format = byte(n.members.logFormat())
	data := c.Marshal()
	go func() {
		if err := n.proposeRetrying(data, nil); err != nil {
			n.log.Debug("proposing a control entry failed; it is proposed again", "op", c.Op, "index", c.Index, "err", err)
		}
	}()
}
