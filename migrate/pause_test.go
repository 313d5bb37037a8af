package migrate

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A mover pauses Pause percent of a batch's time after it, not at all
// without a Pause or at 0, and no longer than its context lasts.
func TestPause(t *testing.T) {
	m := New(nil, nil)
	ctx := context.Background()
	timed := func() time.Duration {
		start := time.Now()
		if err := m.pause(ctx, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	if d := timed(); d > 20*time.Millisecond {
		t.Fatalf("no Pause: waited %v", d)
	}
	m.Pause = new(atomic.Uint64)
	if d := timed(); d > 20*time.Millisecond {
		t.Fatalf("Pause 0: waited %v", d)
	}
	m.Pause.Store(200)
	if d := timed(); d < 200*time.Millisecond {
		t.Fatalf("Pause 200%% of 100ms: waited %v", d)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := m.pause(cctx, time.Hour); err == nil {
		t.Fatal("a pause outlived its context")
	}
}
