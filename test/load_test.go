package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/raftproxy/raftproxy/test/lincheck"
)

// writeLoad runs clients that SET unique keys through every node and keep
// track of which writes were acknowledged, which certainly failed and which
// have an unknown outcome.
type writeLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	acked   map[string]string
	unknown map[string]string
	failed  int
	errs    map[string]int // error texts seen, for the log
}

func startWriteLoad(ctx context.Context, nodes []*Node, perNode int, prefix string) *writeLoad {
	l := &writeLoad{
		stop:    make(chan struct{}),
		acked:   map[string]string{},
		unknown: map[string]string{},
		errs:    map[string]int{},
	}
	w := 0
	for _, n := range nodes {
		for i := 0; i < perNode; i++ {
			l.wg.Add(1)
			go l.writer(ctx, n, w, prefix)
			w++
		}
	}
	return l
}

func (l *writeLoad) writer(ctx context.Context, n *Node, w int, prefix string) {
	defer l.wg.Done()
	// One connection per writer so writes of one writer are never in flight
	// at the same time.
	cl := newClient(n.Addr, 1)
	defer cl.Close()
	for seq := 0; ; seq++ {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		key := fmt.Sprintf("%s:%d:%d", prefix, w, seq)
		val := fmt.Sprintf("v%d-%d-%x", w, seq, rand.Uint32())
		opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Set(opCtx, key, val, 0).Err()
		cancel()
		l.mu.Lock()
		switch lincheck.Classify(err) {
		case lincheck.OK:
			l.acked[key] = val
		case lincheck.Unknown:
			l.unknown[key] = val
		case lincheck.Failed:
			l.failed++
		}
		if err != nil {
			msg := err.Error()
			if len(msg) > 60 {
				msg = msg[:60]
			}
			l.errs[fmt.Sprintf("node%d: %s", n.Index, msg)]++
		}
		l.mu.Unlock()
		if err != nil {
			// A dead node refuses connections at once; do not spin on it.
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Stop ends the load and waits for the writers.
func (l *writeLoad) Stop() {
	close(l.stop)
	l.wg.Wait()
}

func (l *writeLoad) Acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *writeLoad) Summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d acknowledged, %d unknown outcome, %d failed; errors: %v", len(l.acked), len(l.unknown), l.failed, l.errs)
}

// AckedCopy returns the acknowledged writes; call after Stop.
func (l *writeLoad) AckedCopy() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.acked))
	for k, v := range l.acked {
		out[k] = v
	}
	return out
}
