package backend

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/fsm"
)

// watchdogGone returns a state machine on a real redis whose watchdog
// connection redis has closed (as when redis restarts or dies), once the
// watchdog has seen it end: every fence after that fails.
func watchdogGone(t *testing.T) *StateMachine {
	t.Helper()
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	if err := sm.Reset(context.Background(), nil, 0); err != nil {
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
	return sm
}

// TestFenceAfterWatchdogGone: once redis has closed the watchdog's
// connection (redis restarted or died), a batch's fence must fail at once,
// so the node rebuilds redis; waiting for a PONG that cannot come held the
// applier for ever.
func TestFenceAfterWatchdogGone(t *testing.T) {
	sm := watchdogGone(t)
	ctx := context.Background()
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

// TestDeadlineSetAndExpiredInOneBatch: a batch that gives a key a deadline
// in a database without deadlines, and later runs a command on that key
// past the deadline by its entry's time, deletes the key through the
// expiry script. The script window must cover it: it did not, the fence
// reported a foreign write, and a follower catching up after a partition
// (one big batch spanning seconds) rebuilt redis and failed the same batch
// again, for ever (chaos partitions scenario).
func TestDeadlineSetAndExpiredInOneBatch(t *testing.T) {
	sm, r := keyedMachine(t)
	now := time.Now().UnixMilli()
	reply := func([]byte) {}
	// Redis is asked which databases hold deadlines: none.
	if err := sm.Apply([]fsm.Command{{Args: fieldArgs("SET other 1"), TimeMs: now, Reply: reply}}); err != nil {
		t.Fatal(err)
	}
	sm.volAsk = true
	if err := sm.refreshVolatile(); err != nil {
		t.Fatal(err)
	}
	if sm.vol.may(0) {
		t.Fatal("database 0 still counts as holding deadlines")
	}
	err := sm.Apply([]fsm.Command{
		{Args: fieldArgs("SET k 1 PX 100"), TimeMs: now, Reply: reply},
		// Touches the key without writing it, so the script's deletion is
		// the last write redis reports.
		{Args: fieldArgs("PEXPIRE k 5000"), TimeMs: now + 1000, Reply: reply},
	})
	if err != nil {
		t.Fatalf("a batch that sets a deadline and expires it: %v", err)
	}
	if v := rdbDo(t, rdbConn(t, r.addr), "EXISTS", "k"); v.Int != 0 {
		t.Errorf("k after it expired: EXISTS %d, want 0", v.Int)
	}
}

// TestBlindWritesNeedNoFence: a batch whose replies are all blind writes'
// OK is answered without a fence (a round trip to redis per batch saved on
// the commonest write), while any reply that may depend on the data still
// waits for one. With the watchdog's connection gone every fence fails, so
// which batches fail shows which ones fenced.
func TestBlindWritesNeedNoFence(t *testing.T) {
	sm := watchdogGone(t)
	for _, tc := range []struct {
		cmds  []string
		fence bool
	}{
		{[]string{"SET a 2", "MSET b 1 c 2", "SETEX d 100 x", "SET e 1 EX 100"}, false},
		{[]string{"SET a 3", "INCR n"}, true},
		{[]string{"SET a 4 NX"}, true},
		{[]string{"SET a 5 GET"}, true},
		{[]string{"SET"}, true}, // an error reply
	} {
		var cmds []fsm.Command
		for _, c := range tc.cmds {
			cmds = append(cmds, fsm.Command{Args: fieldArgs(c), Reply: func([]byte) {}})
		}
		err := sm.Apply(cmds)
		if fenced := err != nil; fenced != tc.fence {
			t.Errorf("%q: fenced %v (err %v), want %v", tc.cmds, fenced, err, tc.fence)
		}
	}
}
