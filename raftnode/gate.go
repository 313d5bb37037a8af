package raftnode

import (
	"context"
	"sync"
	"time"
)

// readGate keeps reads of the local redis away from the effects of killable
// requests whose verdict is not known yet (verdict.go): such effects may
// still be undone, and a read that saw them would have seen a state the
// cluster never had. The applier shuts the gate before it sends a killable
// request to redis, once the reads already running there have finished,
// and opens it when the verdicts are known and redis holds their outcome.
type readGate struct {
	mu      sync.Mutex
	shut    bool
	readers int
	opened  chan struct{} // closed when the gate opens
	idle    chan struct{} // signalled when the last reader leaves a shut gate
	// busy is closed when the killable request behind the shut gate has run
	// past the busy threshold; waiting readers then get a BusyError.
	busy     chan struct{}
	busyKind uint8
}

func newReadGate() *readGate {
	g := &readGate{opened: make(chan struct{}), idle: make(chan struct{}, 1), busy: make(chan struct{})}
	close(g.opened)
	return g
}

// enter waits until the gate is open and counts a reader in.
func (g *readGate) enter(ctx context.Context, stop <-chan struct{}) error {
	for {
		g.mu.Lock()
		if !g.shut {
			g.readers++
			g.mu.Unlock()
			return nil
		}
		opened, busy, kind := g.opened, g.busy, g.busyKind
		g.mu.Unlock()
		select {
		case <-opened:
		case <-busy:
			return &BusyError{Kind: kind}
		case <-ctx.Done():
			return ErrTimeout
		case <-stop:
			return ErrStopped
		}
	}
}

func (g *readGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.readers--
	if g.shut && g.readers == 0 {
		signal(g.idle)
	}
}

// close shuts the gate and waits for the readers inside to leave. It
// reports false when the node stops first.
func (g *readGate) close(stop <-chan struct{}) bool {
	g.mu.Lock()
	g.shut = true
	g.opened = make(chan struct{})
	g.busy = make(chan struct{})
	g.busyKind = 0
	select {
	case <-g.idle:
	default:
	}
	n := g.readers
	g.mu.Unlock()
	for n > 0 {
		select {
		case <-g.idle:
		case <-time.After(100 * time.Millisecond):
		case <-stop:
			return false
		}
		g.mu.Lock()
		n = g.readers
		g.mu.Unlock()
	}
	return true
}

func (g *readGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.shut = false
		close(g.opened)
	}
}

// setBusy tells waiting readers that the request of kind behind the gate
// is busy.
func (g *readGate) setBusy(kind uint8) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut && g.busyKind == 0 {
		g.busyKind = kind
		close(g.busy)
	}
}

// EnterRead waits until this node's redis may be read, at most until ctx
// ends, and returns the function that ends the read. Reads of redis keep
// out while the applier runs a killable request whose verdict is not known
// (ErrTimeout if that lasts past ctx, a BusyError once it has run past the
// busy threshold).
func (n *Node) EnterRead(ctx context.Context) (func(), error) {
	if err := n.applier.gate.enter(ctx, n.stopc); err != nil {
		return nil, err
	}
	return n.applier.gate.leave, nil
}
