package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// restartRedisOnExit starts a node's redis-server again when it exits by
// itself, as a container's restart policy would: raftproxy shuts its redis
// down (SHUTDOWN NOSAVE) to kill a script that had written, and rebuilds it
// from the log once it is back. It stops before the cluster's teardown.
func restartRedisOnExit(ctx context.Context, t *testing.T, c *Cluster) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			for _, n := range c.Nodes {
				if p := n.redis; p != nil && p.Exited() && !p.stopping.Load() {
					p.stopping.Store(true) // asked for, by the proxy
					if err := n.StartRedis(ctx); err != nil && ctx.Err() == nil {
						t.Errorf("restarting %s's redis-server: %v", n, err)
					}
				}
			}
		}
	}()
}

// runForever sends a command that runs for ever on a connection of its own
// and returns the channel its reply arrives on.
func runForever(t *testing.T, n *Node, args ...string) <-chan respValue {
	t.Helper()
	rc, err := dialRaw(n.Addr, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan respValue, 1)
	go func() {
		defer rc.Close()
		v, err := rc.Do(args...)
		if err != nil {
			v = respValue{Kind: '!', Str: err.Error()}
		}
		out <- v
	}()
	return out
}

// waitBusy waits until n answers a write with -BUSY.
func waitBusy(ctx context.Context, t *testing.T, n *Node, want string) {
	t.Helper()
	err := waitFor(ctx, 10*time.Second, 50*time.Millisecond, fmt.Sprintf("%s busy", n), func(ctx context.Context) error {
		v, err := n.Do(ctx, 3*time.Second, "SET", "probe", "1")
		if err != nil {
			return err
		}
		if v.Kind != '-' || v.Str != want {
			return fmt.Errorf("SET answered %s", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRunawayScripts: a script or function that runs for ever, proposed
// through a follower, makes every node answer -BUSY; SCRIPT KILL (FUNCTION
// KILL) sent to a third node kills it on every node through the log; writes
// work again within 2 s; every redis holds the same data, without the
// script's writes; and neither a restart of every node (kill -9), nor a node
// that joins and catches up from the log, runs a killed script again.
func TestRunawayScripts(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	restartRedisOnExit(ctx, t, c)
	leader, followers := c.Leader(ctx)
	runner, killer := followers[0], followers[1]
	// Busy after 500 ms rather than redis's 5 s: replicated to every node.
	if v, err := leader.Do(ctx, 5*time.Second, "CONFIG", "SET", "busy-reply-threshold", "500"); err != nil || v.Kind != '+' {
		t.Fatalf("CONFIG SET busy-reply-threshold: %v %v", v, err)
	}
	lib := "#!lua name=loops\n" +
		"redis.register_function('spin', function(keys, args) while true do end end)\n" +
		"redis.register_function('wspin', function(keys, args) redis.call('INCR', 'fwritten') while true do end end)"
	if v, err := leader.Do(ctx, 5*time.Second, "FUNCTION", "LOAD", lib); err != nil || v.Kind != '$' {
		t.Fatalf("FUNCTION LOAD: %v %v", v, err)
	}
	busyEval := "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
	busyFunc := "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
	cases := []struct {
		name       string
		run        []string
		kill       string
		busy, miss string // -BUSY text, and the text of the other kind's KILL
	}{
		{"script", []string{"EVAL", "while true do end", "0"}, "SCRIPT", busyEval, busyEval},
		{"script that wrote", []string{"EVAL", "redis.call('INCR', 'written') while true do end", "0"}, "SCRIPT", busyEval, busyEval},
		{"function", []string{"FCALL", "spin", "0"}, "FUNCTION", busyFunc, busyFunc},
		{"function that wrote", []string{"FCALL", "wspin", "0"}, "FUNCTION", busyFunc, busyFunc},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("before%d", i)
			if v, err := leader.Do(ctx, 5*time.Second, "SET", key, "v"); err != nil || v.Kind != '+' {
				t.Fatalf("SET: %v %v", v, err)
			}
			reply := runForever(t, runner, tc.run...)
			if i == 0 {
				// More than raft hands a restarted node in one Ready (1 MiB)
				// between the script and its abort: a restart must know of
				// the abort before it reaches the script.
				before, _ := leader.RaftInfo(ctx)
				fillLog(ctx, t, leader, 2<<20)
				time.Sleep(300 * time.Millisecond)
				after, _ := leader.RaftInfo(ctx)
				t.Logf("log filled from index %d to %d", before.Int("commit_index"), after.Int("commit_index"))
			}
			for _, n := range []*Node{leader, killer, runner} {
				waitBusy(ctx, t, n, tc.busy)
				if v, err := n.Do(ctx, 5*time.Second, "GET", key); err != nil || v.Str != tc.busy {
					t.Errorf("%s: GET while busy: %v %v, want -%s", n, v, err, tc.busy)
				}
			}
			other := map[string]string{"SCRIPT": "FUNCTION", "FUNCTION": "SCRIPT"}[tc.kill]
			if v, err := killer.Do(ctx, 5*time.Second, other, "KILL"); err != nil || v.Str != tc.miss {
				t.Errorf("%s KILL while a %s runs: %v %v, want -%s", other, tc.name, v, err, tc.miss)
			}
			if v, err := killer.Do(ctx, 10*time.Second, tc.kill, "KILL"); err != nil || v.Kind != '+' {
				t.Fatalf("%s KILL through %s: %v %v", tc.kill, killer, v, err)
			}
			killed := time.Now()
			select {
			case v := <-reply:
				if v.Kind != '-' || !strings.HasPrefix(v.Str, "ERR Script killed by user with SCRIPT KILL") {
					t.Errorf("the script's client got %s, want redis's kill error", v)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the script's client got no reply 10 s after the kill")
			}
			var took time.Duration
			err := waitFor(ctx, 10*time.Second, 20*time.Millisecond, "a write after the kill", func(ctx context.Context) error {
				v, err := leader.Do(ctx, 2*time.Second, "SET", "after", tc.name)
				if err != nil || v.Kind != '+' {
					return fmt.Errorf("SET: %v %v", v, err)
				}
				took = time.Since(killed)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if took > 2*time.Second {
				t.Errorf("writes came back %v after the kill, want within 2 s", took)
			}
			t.Logf("writes came back %v after the kill", took.Round(time.Millisecond))
			// A node answers NOTBUSY once it has applied the kill's verdict;
			// until then its own run is still in execution there.
			if err := c.WaitConverged(ctx); err != nil {
				t.Fatal(err)
			}
			for _, n := range []*Node{leader, killer, runner} {
				if v, err := n.Do(ctx, 5*time.Second, tc.kill, "KILL"); err != nil || v.Str != "NOTBUSY No scripts in execution right now." {
					t.Errorf("%s: %s KILL with nothing running: %v %v", n, tc.kill, v, err)
				}
			}
			dump := c.AssertRedisIdentical(ctx)
			for _, k := range []string{"written", "fwritten"} {
				if _, ok := dump[dumpKey(0, k)]; ok {
					t.Errorf("the killed script's write to %q is in redis", k)
				}
			}
		})
	}
	if t.Failed() {
		return
	}

	// Every node killed and restarted: the log holds the four scripts and
	// their aborts, and no node may run one again (redis would log it as a
	// slow script after 500 ms, and the node would be busy until killed).
	slow := map[*Node]int{}
	for _, n := range c.Nodes {
		slow[n] = slowScripts(t, n)
	}
	for _, n := range c.Nodes {
		if err := n.KillProxy(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "a write after restarting every node", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if v, err := n.Do(ctx, 2*time.Second, "SET", "restarted", n.String()); err != nil || v.Kind != '+' {
				return fmt.Errorf("%s: SET: %v %v", n, v, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
	time.Sleep(time.Second) // longer than a script would take to be slow
	for _, n := range c.Nodes {
		if got := slowScripts(t, n); got != slow[n] {
			t.Errorf("%s's redis ran a slow script %d times after the restart: a killed script ran again", n, got-slow[n])
		}
	}

	// A new node catches up from the whole log, scripts and aborts included.
	joined := c.AddNode(ctx, leader)
	if err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "the new node serving", func(ctx context.Context) error {
		v, err := joined.Do(ctx, 2*time.Second, "GET", "restarted")
		if err != nil || v.Kind != '$' {
			return fmt.Errorf("GET: %v %v", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
	time.Sleep(time.Second)
	if got := slowScripts(t, joined); got != 0 {
		t.Errorf("the node that joined ran a killed script (%d slow scripts in its redis log)", got)
	}
}

// fillLog proposes about size bytes of writes through n at once, before
// the running script makes n busy; their outcome does not matter.
func fillLog(ctx context.Context, t *testing.T, n *Node, size int) {
	t.Helper()
	rc, err := dialRaw(n.Addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	value := strings.Repeat("v", 1024)
	var buf bytes.Buffer
	count := size / len(value)
	for i := range count {
		encodeCommand(&buf, "SET", fmt.Sprintf("fill%d", i), value)
	}
	if err := rc.WriteRaw(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// The replies come after the kill (or as -TIMEOUT, -BUSY): not waited for.
}

// slowScripts counts the scripts n's redis-server logged as still running
// past busy-reply-threshold.
func slowScripts(t *testing.T, n *Node) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "Slow script detected")
}
