package backend

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/fsm"
)

// TestFenceAfterWatchdogGone: once redis has closed the watchdog's
// connection (redis restarted or died), a batch's fence must fail at once,
// so the node rebuilds redis; waiting for a PONG that cannot come held the
// applier for ever.
func TestFenceAfterWatchdogGone(t *testing.T) {
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := sm.Reset(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := sm.Apply([]fsm.Command{{Args: fieldArgs("SET a 1"), Reply: func([]byte) {}}}); err != nil {
		t.Fatal(err)
	}
	w := sm.wd.Load()
	if w == nil {
		t.Fatal("no watchdog after an apply")
	}
	ctl := rdbConn(t, r.addr)
	redir := rdbDo(t, sm.conn, "CLIENT", "GETREDIR").Int
	if redir <= 0 {
		t.Fatalf("the apply connection redirects tracking to %d", redir)
	}
	rdbDo(t, ctl, "CLIENT", "KILL", "ID", strconv.FormatInt(redir, 10))
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not see its connection end")
	}
	errc := make(chan error, 1)
	go func() { errc <- sm.Settle(ctx) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Settle after the watchdog's connection ended: nil, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Settle after the watchdog's connection ended waits for ever")
	}
}
