package raftnode

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeVia proposes SET k v on n and waits for its answer.
func writeVia(t *testing.T, n *Node, k, v string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := n.Propose(ctx, 0, [][]byte{[]byte("SET"), []byte(k), []byte(v)}, false)
	<-f.Done()
	_, err := f.Result()
	return err
}

// TestQuiesce: an idle group stops ticking on all its nodes (no Readies at
// all) and then lets go of its transport peers, a write or a read on a
// quiesced follower wakes it and succeeds, the group goes quiet again, and when the leader's process dies the quiesced
// followers notice through Liveness and elect a new leader, which takes
// writes.
func TestQuiesce(t *testing.T) {
	groups, procs := startGroups(t, 1, 3, groupOpts{quiesce: true})
	nodes := groups[0]
	allQuiet := func() bool { return quiesced(groups) == len(nodes) }
	readies := func() (sum uint64) {
		for _, gn := range nodes {
			sum += gn.h.Node().counters.Readies.Load()
		}
		return sum
	}
	waitFor(t, 30*time.Second, "the idle group did not quiesce", allQuiet)
	before := readies()
	time.Sleep(time.Second) // ten ticks, ten heartbeats if it ticked
	if got := readies() - before; got != 0 {
		t.Fatalf("a quiesced group made %d Readies in a second", got)
	}

	// A while later every node lets go of its transport peers; a peer's
	// message still reaches it (rafthttp's pipeline) and wakes it.
	detached := func() {
		t.Helper()
		waitFor(t, 10*time.Second, "the quiesced nodes kept their transport peers", func() bool {
			for _, gn := range nodes {
				if !gn.h.Node().peers.detached.Load() {
					return false
				}
			}
			return true
		})
	}
	detached()
	// Detached, a node still shows its peers connected (RAFT.INFO, the
	// readiness check): their processes answer.
	for _, gn := range nodes {
		for _, m := range gn.h.Node().Status().Nodes {
			if m.State == "unreachable" {
				t.Errorf("a detached node shows member %s unreachable", IDString(m.ID))
			}
		}
	}

	leader := -1
	for i, gn := range nodes {
		if gn.h.Node().IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	follower := nodes[(leader+1)%3].h.Node()
	if err := writeVia(t, follower, "k", "1"); err != nil {
		t.Fatalf("write through a quiesced follower: %v", err)
	}
	waitFor(t, 10*time.Second, "the write was not applied everywhere", func() bool {
		for _, gn := range nodes {
			if gn.sm.applied.Load() < 1 {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "the group did not quiesce again after a write", allQuiet)
	r := follower.StartRead()
	select {
	case <-r.Ready():
		if r.Err() != nil {
			t.Fatalf("read on a quiesced follower: %v", r.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read on a quiesced follower did not finish")
	}
	waitFor(t, 30*time.Second, "the group did not quiesce again after a read", allQuiet)
	detached()

	// The leader's process dies: its listener closes and its node stops.
	// Nothing is sent to the followers, which do not tick.
	old := nodes[leader].h.Node().ID()
	procs[leader].srv.Close()
	nodes[leader].h.Stop()
	start := time.Now()
	var survivors []*Node
	for i, gn := range nodes {
		if i != leader {
			survivors = append(survivors, gn.h.Node())
		}
	}
	var changed []<-chan struct{}
	for _, n := range survivors {
		changed = append(changed, n.LeaderChanged())
	}
	waitFor(t, 20*time.Second, "the quiesced followers did not elect a new leader", func() bool {
		for _, n := range survivors {
			if n.IsLeader() {
				return true
			}
		}
		return false
	})
	// Work that runs only while a node leads sleeps on LeaderChanged.
	for i, ch := range changed {
		select {
		case <-ch:
		default:
			t.Errorf("survivor %d's LeaderChanged is still open after the election", i)
		}
	}
	t.Logf("new leader %v after the old one's process died", time.Since(start).Round(time.Millisecond))
	for i, n := range survivors {
		if n.ID() == old {
			t.Fatal("the stopped node leads")
		}
		if err := writeVia(t, n, "k", fmt.Sprint(i+2)); err != nil {
			t.Fatalf("write after the leader died: %v", err)
		}
	}
}
