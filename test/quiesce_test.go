package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestQuiesceIdleCluster: a cluster of real raftproxy and redis-server
// processes left idle quiesces on every node (raftproxy_quiesced 1) and,
// once it let go of its raft streams, still reports every member
// reachable and is ready; a read and a write wake it and see the data;
// and when the leader's process is killed while the cluster is quiet, the
// others elect a new leader that serves what was acknowledged.
func TestQuiesceIdleCluster(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true})
	leader, followers := c.Leader(ctx)
	if v, err := leader.Do(ctx, 5*time.Second, "SET", "k", "1"); err != nil || v.Str != "OK" {
		t.Fatalf("SET: %v %v", v, err)
	}
	quiet := func(what string) {
		t.Helper()
		err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, what, func(ctx context.Context) error {
			for _, n := range c.Running() {
				s := scrapeNode(ctx, t, n)
				if s.get(t, "raftproxy_quiesced") != 1 {
					return fmt.Errorf("%s not quiesced", n)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	quiet("every node quiesced")
	// Three election timeouts later the nodes have closed their streams;
	// they must still see each other and be ready.
	time.Sleep(4 * time.Second)
	for _, n := range c.Running() {
		s := scrapeNode(ctx, t, n)
		if v := s.get(t, "raftproxy_voting_members_unreachable"); v != 0 {
			t.Errorf("%s: %v voting members unreachable while idle", n, v)
		}
		if code, body, err := getHTTP(ctx, "http://"+n.MetricsAddr+"/readyz"); err != nil || code != 200 {
			t.Errorf("%s: /readyz %d %v: %s", n, code, err, body)
		}
	}
	if v, err := followers[0].Do(ctx, 5*time.Second, "GET", "k"); err != nil || v.Str != "1" {
		t.Fatalf("GET through a quiesced follower: %v %v", v, err)
	}
	if v, err := followers[1].Do(ctx, 5*time.Second, "SET", "k", "2"); err != nil || v.Str != "OK" {
		t.Fatalf("SET through a quiesced follower: %v %v", v, err)
	}
	quiet("every node quiesced again")
	time.Sleep(4 * time.Second)

	start := time.Now()
	if err := leader.KillProxy(); err != nil {
		t.Fatal(err)
	}
	err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "a new leader after the quiet leader was killed", func(ctx context.Context) error {
		for _, f := range followers {
			v, err := f.Do(ctx, 2*time.Second, "RAFT.INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(v.Str, "role:leader") {
				continue
			}
			return nil
		}
		return fmt.Errorf("no follower leads")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a new leader %v after the quiet leader's process was killed", time.Since(start).Round(time.Millisecond))
	for _, f := range followers {
		if v, err := f.Do(ctx, 10*time.Second, "GET", "k"); err != nil || v.Str != "2" {
			t.Errorf("%s: GET k after the failover: %v %v, want 2", f, v, err)
		}
	}
}
