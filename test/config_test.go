package test

import (
	"context"
	"errors"
	"os"
	"os/exec"
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
		{"RAFT.CONFIG", "SET", "move-pause", "-1"},
	} {
		if v, err := f.Do(ctx, 5*time.Second, bad...); err != nil || v.Kind != '-' {
			t.Errorf("%v: %v %v, want an error", bad, v, err)
		}
	}
	for _, set := range [][]string{{"follower-proxy", "no"}, {"snapshot-entries", "5"}, {"log-level", "debug"}, {"request-timeout", "3s"}, {"move-pause", "0"}} {
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
	b, err := os.ReadFile(f.dir + "/proxy.log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "overrides the command line") || !strings.Contains(string(b), "setting=request-timeout saved=3s command_line=5s") {
		t.Error("the restarted node's log does not name the saved settings that override its flags")
	}

	// RESET forgets a saved value and restores the command line's, now
	// and at the next start.
	for _, bad := range [][]string{{"RAFT.CONFIG", "RESET", "no-such-setting"}, {"RAFT.CONFIG", "RESET"}} {
		if v, err := f.Do(ctx, 5*time.Second, bad...); err != nil || v.Kind != '-' {
			t.Errorf("%v: %v %v, want an error", bad, v, err)
		}
	}
	if v, err := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "RESET", "request-timeout"); err != nil || v.Kind != '+' {
		t.Fatalf("RAFT.CONFIG RESET request-timeout: %v %v", v, err)
	}
	if v, _ := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "GET", "request-timeout"); !strings.Contains(v.String(), "5s") {
		t.Errorf("after RESET request-timeout: %v, want the command line's 5s", v)
	}
	if v, err := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "RESET", "ALL"); err != nil || v.Kind != '+' {
		t.Fatalf("RAFT.CONFIG RESET ALL: %v %v", v, err)
	}
	if v, _ := f.Do(ctx, 5*time.Second, "SET", "k", "v"); v.Kind != '+' {
		t.Errorf("after RESET ALL: SET on a follower answered %v, want OK (follower-proxy back to yes)", v)
	}

	// raftproxy settings shows and forgets saved values on a stopped node.
	if v, err := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "SET", "snapshot-entries", "7"); err != nil || v.Kind != '+' {
		t.Fatalf("RAFT.CONFIG SET snapshot-entries 7: %v %v", v, err)
	}
	if err := f.StopProxy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, raftproxyBin, "settings", "--data-dir", f.DataDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "snapshot-entries = 7") || strings.Contains(string(out), "request-timeout") {
		t.Errorf("raftproxy settings: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, raftproxyBin, "settings", "--data-dir", f.DataDir, "--reset").CombinedOutput(); err != nil {
		t.Fatalf("raftproxy settings --reset: %v\n%s", err, out)
	}
	out, _ = exec.CommandContext(ctx, raftproxyBin, "settings", "--data-dir", f.DataDir).CombinedOutput()
	if !strings.Contains(string(out), "no saved settings") {
		t.Errorf("raftproxy settings after --reset:\n%s", out)
	}
	if err := f.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Do(ctx, 5*time.Second, "RAFT.CONFIG", "GET", "snapshot-entries"); !strings.Contains(v.String(), "10000") {
		t.Errorf("after settings --reset and a restart: snapshot-entries %v, want the default 10000", v)
	}
}
