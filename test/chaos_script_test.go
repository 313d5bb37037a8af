package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The script nemesis: a client runs a script or function that never ends
// (half of them write a key first) through a random node, and after a
// while another client kills it with SCRIPT KILL or FUNCTION KILL through
// a random node, while the other faults go on. Every such script is killed,
// so none of their writes may survive: the run ends with no chaos:script:*
// key in any redis, on top of the workloads' own checks.

const scriptKeyPrefix = "chaos:script:"

// prepareScripts makes nodes busy after 300 ms of a script (replicated, so
// every node) and loads the library of never-ending functions.
func prepareScripts(ctx context.Context, c *Cluster) error {
	l, _ := c.Leader(ctx)
	if v, err := l.Do(ctx, 5*time.Second, "CONFIG", "SET", "busy-reply-threshold", "300"); err != nil || v.Kind != '+' {
		return fmt.Errorf("CONFIG SET busy-reply-threshold: %v %v", v, err)
	}
	lib := "#!lua name=chaosloops\n" +
		"redis.register_function('spin', function(keys, args) while true do end end)\n" +
		"redis.register_function('wspin', function(keys, args) redis.call('INCR', keys[1]) while true do end end)"
	if v, err := l.Do(ctx, 5*time.Second, "FUNCTION", "LOAD", lib); err != nil || v.Kind != '$' {
		return fmt.Errorf("FUNCTION LOAD: %v %v", v, err)
	}
	return nil
}

// runaway starts a never-ending script through a random node, waits, and
// kills it through another random node.
func (nm *nemesis) runaway(ctx context.Context) {
	n := nm.randomNode()
	for _, i := range nm.rng.Perm(len(nm.c.Nodes)) {
		if nm.c.Nodes[i].ProxyRunning() {
			n = nm.c.Nodes[i]
			break
		}
	}
	key := fmt.Sprintf("%s%d", scriptKeyPrefix, nm.count)
	cmds := [][]string{
		{"EVAL", "while true do end", "0"},
		{"EVAL", "redis.call('INCR', KEYS[1]) while true do end", "1", key},
		{"FCALL", "spin", "0"},
		{"FCALL", "wspin", "1", key},
	}
	cmd := cmds[nm.rng.IntN(len(cmds))]
	rc, err := dialRaw(n.Addr, 30*time.Second)
	if err != nil {
		nm.logf("runaway script through %s: %v", n, err)
		return
	}
	reply := make(chan string, 1)
	go func() {
		defer rc.Close()
		v, err := rc.Do(cmd...)
		if err != nil {
			reply <- err.Error()
			return
		}
		reply <- v.String()
	}()
	sleep(ctx, nm.dur(300*time.Millisecond, 1500*time.Millisecond))
	killed := nm.killScripts(ctx, 10*time.Second)
	select {
	case r := <-reply:
		nm.logf("runaway %s through %s: killed=%v; its client got %s", cmd[:2], n, killed, r)
	case <-time.After(2 * time.Second):
		nm.logf("runaway %s through %s: killed=%v; its client has no reply yet", cmd[:2], n, killed)
	}
	nm.restartStoppedRedis(ctx)
}

// killScripts sends SCRIPT KILL and FUNCTION KILL to the running nodes, in
// random order, until one kills a script or every node answers that none
// runs, twice in a row; at most limit. It reports whether one was killed.
func (nm *nemesis) killScripts(ctx context.Context, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	idle := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		quiet := true
		for _, i := range nm.rng.Perm(len(nm.c.Nodes)) {
			n := nm.c.Nodes[i]
			if !n.ProxyRunning() {
				continue
			}
			for _, kill := range []string{"SCRIPT", "FUNCTION"} {
				v, err := n.Do(ctx, 3*time.Second, kill, "KILL")
				switch {
				case err == nil && v.Kind == '+':
					return true
				case err == nil && strings.HasPrefix(v.Str, "NOTBUSY"):
				default:
					quiet = false // busy, down, cut off, or waiting for a leader
				}
			}
		}
		if quiet {
			if idle++; idle == 2 {
				return false
			}
		} else {
			idle = 0
		}
		sleep(ctx, 300*time.Millisecond)
	}
	return false
}

// restartStoppedRedis starts the redis-servers that exited on their own: a
// proxy shuts its redis down to kill a script that had written, and the
// test stands for the restart policy a deployment has.
func (nm *nemesis) restartStoppedRedis(ctx context.Context) {
	for _, n := range nm.c.Nodes {
		if p := n.redis; p != nil && p.Exited() && !p.stopping.Load() {
			p.stopping.Store(true)
			if err := n.StartRedis(ctx); err != nil {
				nm.logf("restarting %s's redis-server: %v", n, err)
				continue
			}
			nm.logf("restarted %s's redis-server, which its proxy shut down to kill a script", n)
		}
	}
}

// assertNoScriptWrites fails t if a killed script's write is in dump.
func assertNoScriptWrites(t *testing.T, dump redisDump) {
	t.Helper()
	for k := range dump {
		if strings.Contains(k, scriptKeyPrefix) {
			t.Errorf("%s: the write of a killed script survived", k)
		}
	}
}
