package raftnode

import (
	"context"
	"time"
)

// Holding the state machine (Holder). The applier holds it whenever this
// node may be applying entries later than the nodes that applied them live:
// after every Reset (a restart, a rebuild, a snapshot), when the node has no
// leader (cut off, it may miss entries it will apply late), and when it
// applies an entry proposed more than lateAfter ago (it lags). It releases
// it once a ReadIndex round started while holding has been reached: then the
// node has applied everything committed before that round, and the entries
// still to come are being proposed now.

// lateAfter is how old an entry must be for applying it to count as late.
// Node clocks must agree far better than this (streams already need NTP).
const lateAfter = time.Second

type holdState struct {
	h Holder // nil: the state machine cannot be held
	// proof is the ReadIndex round whose completion releases the hold.
	proof    *ReadWait
	proofErr time.Time // when the last round failed
}

// resetHeld notes that the state machine was just reset (and so holds).
func (a *applier) resetHeld() {
	if a.hold.h == nil {
		return
	}
	a.hold.proof = nil
	a.heldNow.Store(a.hold.h.Held())
}

// holdIfLate holds the state machine before cmds when they are late.
func (a *applier) holdIfLate(ctx context.Context, cmds []Command) error {
	if a.hold.h == nil || a.hold.h.Held() || len(cmds) == 0 {
		return nil
	}
	late := time.Now().Add(-lateAfter).UnixMilli()
	for _, c := range cmds {
		if c.TimeMs > 0 && c.TimeMs < late && c.Reply == nil {
			return a.setHold(ctx, true, "applying entries proposed more than "+lateAfter.String()+" ago")
		}
	}
	return nil
}

// checkHold, on the applier's tick and after each round, holds a node that
// has no leader and releases one that has caught up.
func (a *applier) checkHold(ctx context.Context) error {
	h := a.hold.h
	if h == nil {
		return nil
	}
	lead := a.n.lead.Load() != 0
	if !h.Held() {
		a.hold.proof = nil
		if !lead {
			return a.setHold(ctx, true, "no leader")
		}
		return nil
	}
	if p := a.hold.proof; p != nil {
		select {
		case <-p.Ready():
			a.hold.proof = nil
			if p.Err() == nil {
				return a.setHold(ctx, false, "caught up")
			}
			a.hold.proofErr = time.Now()
		default:
			return nil
		}
	}
	if lead && time.Since(a.hold.proofErr) > 200*time.Millisecond {
		w := a.n.startRead(false)
		a.hold.proof = &w
	}
	return nil
}

// proofReady is closed when the pending ReadIndex round ends (nil: none).
func (a *applier) proofReady() <-chan struct{} {
	if a.hold.proof == nil {
		return nil
	}
	return a.hold.proof.Ready()
}

func (a *applier) setHold(ctx context.Context, on bool, why string) error {
	var err error
	if on {
		err = a.hold.h.Hold(ctx)
	} else {
		err = a.hold.h.Release(ctx)
	}
	a.heldNow.Store(a.hold.h.Held())
	if err != nil {
		return err
	}
	if on {
		a.n.log.Info("holding the local redis: keys expire by the log's time until this node has caught up", "why", why)
	} else {
		a.n.log.Info("released the local redis: keys expire by its clock again", "why", why)
	}
	return nil
}

// releaseOnStop leaves redis a master when the node stops, as an operator
// expects to find it; the next start rebuilds it anyway.
func (a *applier) releaseOnStop() {
	if a.hold.h == nil || !a.hold.h.Held() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.hold.h.Release(ctx); err != nil {
		a.n.log.Warn("could not release the local redis on stop; the next start rebuilds it", "err", err)
	}
}

// RedisHeld reports whether the local redis is held (a replica of this
// node's applier, expiring keys by the log's time while the node catches up).
func (n *Node) RedisHeld() bool { return n.applier.heldNow.Load() }
