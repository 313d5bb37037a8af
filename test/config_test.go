package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRaftConfig: RAFT.CONFIG GET/SET change settings at run time, refuse
// bad values, and survive a restart.
func TestRaftConfig(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	f := followers[0]
	v, err := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "GET", "*")
	if err != nil || v.Kind != '*' || !strings.Contains(v.String(), "follower-proxy") || !strings.Contains(v.String(), "snapshot-entries") {
		t.Fatalf("RAFT.CONFIG GET *: %v %v", v, err)
	}
	for _, bad := range [][]string{
		{"RAFT.CONFIG", "SET", "follower-proxy", "maybe"},
		{"RAFT.CONFIG", "SET", "snapshot-entries", "-1"},
		{"RAFT.CONFIG", "SET", "no-such-setting", "1"},
		{"RAFT.CONFIG", "SET", "log-level"},
		{"RAFT.CONFIG", "SET", "request-timeout", "soon"},
	} {
		if v, err := f.Do(ctx, 5*time.Second, bad...); err != nil || v.Kind != '-' {
			t.Errorf("%v: %v %v, want an error", bad, v, err)
		}
	}
	for _, set := range [][]string{{"follower-proxy", "no"}, {"snapshot-entries", "5"}, {"log-level", "debug"}, {"request-timeout", "3s"}} {
		if v, err := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "SET", set[0], set[1]); err != nil || v.Kind != '+' {
			t.Fatalf("RAFT.CONFIG SET %v: %v %v", set, v, err)
		}
	}
	check := func(when string) {
		t.Helper()
		if v, _ := f.Do(ctx, 5*time.Second, "SET", "k", "v"); v.Kind != '-' || !strings.HasPrefix(v.Str, "MOVED 7629 ") {
			t.Errorf("%s: SET on a follower with follower-proxy no answered %v, want MOVED", when, v)
		}
		if v, _ := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "GET", "snapshot-*"); !strings.Contains(v.String(), "5") {
			t.Errorf("%s: RAFT.CONFIG GET snapshot-*: %v", when, v)
		}
		if v, _ := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "GET", "request-timeout"); !strings.Contains(v.String(), "3s") {
			t.Errorf("%s: RAFT.CONFIG GET request-timeout: %v", when, v)
		}
	}
	check("after SET")
	// The follower snapshots after 5 entries now.
	leader, _ := c.Leader(ctx)
	if _, err := writeKeysIn(leader.Addr, "cfg", 100, 10, 5); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "follower snapshot", func(context.Context) error {
		if n := infoInt(ctx, t, f, "snapshot_last_index"); n == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := f.StopProxy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	check("after restart")
}
