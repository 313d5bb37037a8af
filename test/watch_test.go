package test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// watchStep is one command of a two-connection script: conn 0 or 1.
type watchStep struct {
	conn int
	cmd  []string
}

func ws(conn int, cmd ...string) watchStep { return watchStep{conn, cmd} }

// watchScripts are WATCH scenarios whose replies raftproxy must give
// exactly as a stock redis-server does, with the two connections on
// different nodes.
var watchScripts = []struct {
	name  string
	steps []watchStep
}{
	{"untouched key: EXEC runs", []watchStep{
		ws(0, "SET", "%s:k", "1"), ws(0, "WATCH", "%s:k"), ws(0, "MULTI"), ws(0, "INCR", "%s:k"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"another connection's write aborts EXEC", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "theirs"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"a write while queueing aborts EXEC", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(1, "INCR", "%s:n"), ws(1, "APPEND", "%s:k", "x"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"a write to another key does not abort", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:other", "1"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"one of several watched keys written", []watchStep{
		ws(0, "WATCH", "%s:a", "%s:b"), ws(0, "WATCH", "%s:c"), ws(1, "RPUSH", "%s:c", "x"), ws(0, "MULTI"), ws(0, "SET", "%s:a", "1"), ws(0, "EXEC"), ws(0, "EXISTS", "%s:a")}},
	{"multi-key write aborts", []watchStep{
		ws(0, "WATCH", "%s:m2"), ws(1, "MSET", "%s:m1", "1", "%s:m2", "2"), ws(0, "MULTI"), ws(0, "GET", "%s:m2"), ws(0, "EXEC")}},
	{"the connection's own write aborts", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(0, "SET", "%s:k", "own"), ws(0, "MULTI"), ws(0, "GET", "%s:k"), ws(0, "EXEC")}},
	{"UNWATCH forgets the keys", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "theirs"), ws(0, "UNWATCH"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"DISCARD forgets the keys", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(0, "MULTI"), ws(0, "DISCARD"), ws(1, "SET", "%s:k", "theirs"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC")}},
	{"EXEC ends the watch", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(0, "MULTI"), ws(0, "EXEC"), ws(1, "SET", "%s:k", "theirs"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC")}},
	{"an aborted EXEC ends the watch too", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "1"), ws(0, "MULTI"), ws(0, "EXEC"), ws(1, "SET", "%s:k", "2"), ws(0, "MULTI"), ws(0, "GET", "%s:k"), ws(0, "EXEC")}},
	{"empty transaction with a written key", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "theirs"), ws(0, "MULTI"), ws(0, "EXEC")}},
	{"EXECABORT ends the watch", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(0, "MULTI"), ws(0, "SET", "%s:k"), ws(0, "EXEC"), ws(1, "SET", "%s:k", "x"), ws(0, "MULTI"), ws(0, "GET", "%s:k"), ws(0, "EXEC")}},
	{"the same key in another database", []watchStep{
		ws(0, "SELECT", "1"), ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "db0"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "db1"), ws(0, "EXEC"), ws(0, "GET", "%s:k"), ws(0, "DEL", "%s:k")}},
	{"a write in the watched database", []watchStep{
		ws(0, "SELECT", "1"), ws(1, "SELECT", "1"), ws(0, "WATCH", "%s:k"), ws(1, "SET", "%s:k", "db1"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:k"), ws(0, "DEL", "%s:k")}},
	{"expiry set by another connection aborts", []watchStep{
		ws(0, "SET", "%s:e", "v"), ws(0, "WATCH", "%s:e"), ws(1, "EXPIRE", "%s:e", "1000"), ws(0, "MULTI"), ws(0, "SET", "%s:e", "mine"), ws(0, "EXEC")}},
	{"a transaction's write aborts another's watch", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "MULTI"), ws(1, "SET", "%s:k", "tx"), ws(1, "EXEC"), ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:k")}},
	{"WATCH inside MULTI", []watchStep{
		ws(0, "MULTI"), ws(0, "WATCH", "%s:k"), ws(0, "EXEC")}},
	{"WATCH without keys", []watchStep{ws(0, "WATCH")}},
	// Writes that change nothing do not abort (redis marks a key only when
	// a command changed it).
	{"DEL of a missing watched key does not abort", []watchStep{
		ws(0, "WATCH", "%s:absent"), ws(1, "DEL", "%s:absent"), ws(0, "MULTI"), ws(0, "SET", "%s:absent", "mine"), ws(0, "EXEC")}},
	{"SETNX on an existing watched key does not abort", []watchStep{
		ws(0, "SET", "%s:k", "v"), ws(0, "WATCH", "%s:k"), ws(1, "SETNX", "%s:k", "theirs"), ws(0, "MULTI"), ws(0, "GET", "%s:k"), ws(0, "EXEC")}},
	{"no-op removals and a refused write do not abort", []watchStep{
		ws(0, "SADD", "%s:s", "a"), ws(0, "SET", "%s:str", "x"), ws(0, "WATCH", "%s:s", "%s:str"),
		ws(1, "SREM", "%s:s", "zz"), ws(1, "EXPIRE", "%s:nokey", "10"), ws(1, "INCR", "%s:str"), ws(1, "SET", "%s:str", "y", "NX"),
		ws(0, "MULTI"), ws(0, "SCARD", "%s:s"), ws(0, "EXEC")}},
	{"a no-op write inside a transaction does not abort", []watchStep{
		ws(0, "WATCH", "%s:k"), ws(1, "MULTI"), ws(1, "DEL", "%s:k"), ws(1, "SET", "%s:other", "1"), ws(1, "EXEC"),
		ws(0, "MULTI"), ws(0, "SET", "%s:k", "mine"), ws(0, "EXEC")}},
	{"a real change among no-ops aborts", []watchStep{
		ws(0, "SET", "%s:k", "v"), ws(0, "WATCH", "%s:k"), ws(1, "SETNX", "%s:k", "x"), ws(1, "APPEND", "%s:k", "w"),
		ws(0, "MULTI"), ws(0, "GET", "%s:k"), ws(0, "EXEC")}},
	// A watched key that expires between WATCH and EXEC aborts (redis 7);
	// one already expired when watched does not.
	{"a watched key that expires aborts", []watchStep{
		ws(0, "SET", "%s:x", "v", "PX", "300"), ws(0, "WATCH", "%s:x"), ws(0, "@SLEEP", "600"),
		ws(0, "MULTI"), ws(0, "SET", "%s:x", "mine"), ws(0, "EXEC")}},
	{"a key expired when watched does not abort", []watchStep{
		ws(0, "SET", "%s:y", "v", "PX", "100"), ws(0, "@SLEEP", "300"), ws(0, "WATCH", "%s:y"),
		ws(0, "MULTI"), ws(0, "SET", "%s:y", "mine"), ws(0, "EXEC"), ws(0, "GET", "%s:y")}},
}

// TestWatch runs WATCH scenarios with the two connections on the same and
// on different nodes, leader and followers, compares every reply with a
// stock redis-server's, and checks that all nodes hold the same data.
func TestWatch(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	pairs := []struct {
		name string
		a, b string
	}{
		{"leader-leader", leader.Addr, leader.Addr},
		{"follower-leader", followers[0].Addr, leader.Addr},
		{"leader-follower", leader.Addr, followers[1].Addr},
		{"follower-follower", followers[0].Addr, followers[1].Addr},
	}
	for pi, p := range pairs {
		for si, sc := range watchScripts {
			t.Run(p.name+"/"+sc.name, func(t *testing.T) {
				prefix := fmt.Sprintf("w%d.%d", pi, si)
				want := runSteps(t, [2]string{stock, stock}, prefix, sc.steps)
				got := runSteps(t, [2]string{p.a, p.b}, prefix, sc.steps)
				for i, st := range sc.steps {
					if got[i] != want[i] {
						t.Errorf("step %d conn %d %q: raftproxy answered %s, redis answered %s", i, st.conn, st.cmd, got[i], want[i])
					}
				}
			})
		}
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
}

// runSteps runs a two-connection script and returns each reply.
func runSteps(t *testing.T, addrs [2]string, prefix string, steps []watchStep) []string {
	t.Helper()
	var conns [2]*rawConn
	for i, a := range addrs {
		conn, err := dialRaw(a, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[i] = conn
	}
	out := make([]string, len(steps))
	for i, st := range steps {
		if st.cmd[0] == "@SLEEP" {
			ms, _ := strconv.Atoi(st.cmd[1])
			time.Sleep(time.Duration(ms) * time.Millisecond)
			continue
		}
		args := make([]string, len(st.cmd))
		for j, a := range st.cmd {
			args[j] = strings.ReplaceAll(a, "%s", prefix)
		}
		v, err := conns[st.conn].Do(args...)
		if err != nil {
			t.Fatalf("%q on %s: %v", args, addrs[st.conn], err)
		}
		out[i] = strings.ReplaceAll(v.String(), prefix, "%s")
	}
	return out
}

// TestWatchOptimisticLocking is WATCH's reason to exist: clients on every
// node increment one counter with GET, then MULTI/SET/EXEC under WATCH,
// retrying when EXEC aborts. With a working WATCH no increment is lost; a
// pause between GET and EXEC makes conflicts certain.
func TestWatchOptimisticLocking(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	const clients, each = 6, 15
	var aborts sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n := c.Nodes[i%len(c.Nodes)]
			cl := n.Client()
			if i%2 == 1 {
				// RESP3 clients get an aborted EXEC as a RESP3 null.
				cl = c.track(redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 3, MaxRetries: -1}))
			}
			aborted := 0
			for done := 0; done < each; {
				err := cl.Watch(ctx, func(tx *redis.Tx) error {
					v, err := tx.Get(ctx, "wol:counter").Int()
					if err != nil && !errors.Is(err, redis.Nil) {
						return err
					}
					time.Sleep(3 * time.Millisecond)
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, "wol:counter", strconv.Itoa(v+1), 0)
						return nil
					})
					return err
				}, "wol:counter")
				switch {
				case err == nil:
					done++
				case errors.Is(err, redis.TxFailedErr):
					aborted++
				default:
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
			}
			aborts.Store(i, aborted)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	aborts.Range(func(_, v any) bool { total += v.(int); return true })
	got, err := c.Nodes[0].Client().Get(ctx, "wol:counter").Int()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d increments, %d aborted EXECs retried", clients*each, total)
	if got != clients*each {
		t.Errorf("counter = %d, want %d: an increment was lost", got, clients*each)
	}
	if total == 0 {
		t.Errorf("no EXEC aborted: the test did not exercise a conflict")
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
}

// TestWatchAcrossFailures: a watch lives in the log, so it holds across a
// leader change, and across a node rebuilt from a snapshot taken between
// WATCH and EXEC. A node that decided differently would apply or skip the
// transaction alone, and AssertRedisIdentical would see it.
func TestWatchAcrossFailures(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]

	watchOn := func(n *Node, keys ...string) *rawConn {
		t.Helper()
		conn, err := dialRaw(n.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		mustDo(t, conn, "+OK", append([]string{"WATCH"}, keys...)...)
		return conn
	}
	execSet := func(conn *rawConn, key, want string) {
		t.Helper()
		mustDo(t, conn, "+OK", "MULTI")
		mustDo(t, conn, "+QUEUED", "SET", key, "tx")
		mustDo(t, conn, want, "EXEC")
	}

	// Leader change between WATCH and EXEC.
	written := watchOn(f, "wf:written")
	clean := watchOn(f, "wf:clean")
	if v, err := leader.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER", followers[1].ID); err != nil || v.IsError() {
		t.Fatalf("RAFT.TRANSFER_LEADER: %v %v", v, err)
	}
	newLeader, _ := c.Leader(ctx)
	if newLeader == leader {
		t.Fatalf("leadership did not move from %s", leader)
	}
	if err := newLeader.Client().Set(ctx, "wf:written", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	execSet(written, "wf:written", "*-1(nil)")
	execSet(clean, "wf:clean", "[+OK]")

	// A snapshot between WATCH and EXEC, and a node rebuilt from it.
	written = watchOn(f, "ws:written")
	clean = watchOn(f, "ws:clean")
	if err := leader.Client().Set(ctx, "ws:written", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if v, err := n.Do(ctx, time.Minute, "RAFT.DEBUG", "COMPACT"); err != nil || v.IsError() {
			t.Fatalf("RAFT.DEBUG COMPACT on %s: %v %v", n, v, err)
		}
	}
	rebuilt := followers[1]
	if err := rebuilt.KillRedis(); err != nil {
		t.Fatal(err)
	}
	if err := rebuilt.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, rebuilt, map[string]string{"ws:written": "other"}); err != nil {
		t.Fatal(err)
	}
	execSet(written, "ws:written", "*-1(nil)")
	execSet(clean, "ws:clean", "[+OK]")
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	dump := c.AssertRedisIdentical(ctx)
	for k, want := range map[string]string{"wf:written": "other", "wf:clean": "tx", "ws:written": "other", "ws:clean": "tx"} {
		if got := dump[dumpKey(0, k)]; !strings.Contains(got, want) {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func mustDo(t *testing.T, conn *rawConn, want string, args ...string) {
	t.Helper()
	v, err := conn.Do(args...)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if v.String() != want {
		t.Fatalf("%q: got %s, want %s", args, v, want)
	}
}
