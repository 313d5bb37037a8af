package test

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// smallDisk puts n's data directory on a tmpfs of sizeMiB (its content
// copied over), with n's proxy stopped meanwhile. It skips the test where
// mounting is not allowed.
func smallDisk(ctx context.Context, t *testing.T, n *Node, sizeMiB int) {
	t.Helper()
	if err := n.StopProxy(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	saved := n.DataDir + ".saved"
	if err := os.Rename(n.DataDir, saved); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(t, n.DataDir, sizeMiB); err != nil {
		t.Skip(err)
	}
	if out, err := exec.Command("cp", "-a", saved+"/.", n.DataDir+"/").CombinedOutput(); err != nil {
		t.Fatalf("copy the data directory onto the tmpfs: %v: %s", err, out)
	}
	if err := n.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs of sizeMiB at dir, unmounted (lazily, as the
// node's processes may still use it) when t ends.
func mountTmpfs(t *testing.T, dir string, sizeMiB int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("mounting a small tmpfs for a data directory needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMiB), "tmpfs", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot mount a tmpfs for a data directory (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return nil
}

// fill leaves about leaveMiB free on dir's file system, in one file it
// returns (remove it to free the space).
func fill(t *testing.T, dir string, leaveMiB int) string {
	t.Helper()
	path, err := fillDir(dir, leaveMiB)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func fillDir(dir string, leaveMiB int) (string, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "", err
	}
	size := int64(st.Bavail)*int64(st.Bsize) - int64(leaveMiB)<<20
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Written, not fallocated alone, so that tmpfs counts it at once.
	buf := make([]byte, 1<<20)
	for size > 0 {
		k := min(int64(len(buf)), size)
		if _, err := f.Write(buf[:k]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break // someone else wrote meanwhile: full is full
			}
			os.Remove(f.Name())
			return "", fmt.Errorf("fill %s: %w", dir, err)
		}
		size -= k
	}
	return f.Name(), nil
}

// TestDiskFull: a follower's data directory fills up. It must write nothing
// (its WAL stays whole), answer its clients MISCONF, say so in its metrics
// and /readyz, while the other two serve every write; once the space is
// freed it resumes by itself, catches up (snapshots included: they are
// made every 300 entries), and every redis ends identical with every
// acknowledged write.
func TestDiskFull(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true, ExtraArgs: []string{"--snapshot-entries", "300", "--snapshot-catchup-entries", "100"}})
	leader, followers := c.Leader(ctx)
	if leader == nil || len(followers) < 2 {
		t.Fatal("no stable leader")
	}
	victim := followers[0]
	smallDisk(ctx, t, victim, 300)
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	leader, _ = c.Leader(ctx)
	if leader == victim {
		t.Skip("the node with the small disk became the leader")
	}
	acked := map[string]string{}
	write := func(n *Node, k, v string) error {
		r, err := n.Do(ctx, 10*time.Second, "SET", k, v)
		if err != nil {
			return err
		}
		if r.IsError() {
			return fmt.Errorf("%s", r.String())
		}
		acked[k] = v
		return nil
	}
	for i := range 100 {
		if err := write(victim, fmt.Sprintf("before%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}

	// Below the reserve (80 MiB): the victim stops writing.
	filler := fill(t, victim.DataDir, 40)
	var misconf string
	err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "a write through the full node refused with MISCONF", func(ctx context.Context) error {
		// Writes through the others keep the log moving, so the victim
		// has something to persist and finds the disk full.
		if err := write(leader, "during", "y"); err != nil {
			return err
		}
		r, err := victim.Do(ctx, 10*time.Second, "SET", "victim", "z")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(r.String(), "-MISCONF") {
			return fmt.Errorf("SET through the full node: %s", r)
		}
		misconf = r.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the full node answers: %s", misconf)
	if v := scrapeNode(ctx, t, victim).get(t, "raftproxy_disk_full"); v != 1 {
		t.Errorf("raftproxy_disk_full = %v on the full node", v)
	}
	if code, body := readyz(ctx, t, victim); code != http.StatusServiceUnavailable || !strings.Contains(body, "[failed] disk") {
		t.Errorf("/readyz of the full node: %d %q", code, body)
	}
	if r, err := victim.Do(ctx, 10*time.Second, "GET", "before1"); err != nil || !strings.HasPrefix(r.String(), "-MISCONF") {
		t.Errorf("GET through the full node: %v %v, want MISCONF (it cannot apply)", r, err)
	}
	// The majority serves on, enough for snapshots on the others.
	for i := range 1000 {
		if err := write(leader, fmt.Sprintf("full%d", i), strings.Repeat("v", 100)); err != nil {
			t.Fatal(err)
		}
	}

	// Space is back: it resumes by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "the node writing again", func(ctx context.Context) error {
		return write(victim, "after", "w")
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := scrapeNode(ctx, t, victim).get(t, "raftproxy_disk_full"); v != 0 {
		t.Errorf("raftproxy_disk_full = %v once space is back", v)
	}
	dump := c.AssertRedisIdentical(ctx)
	for k, v := range acked {
		if got := dump[dumpKey(0, k)]; !strings.Contains(got, fmt.Sprintf("%q", v)) {
			t.Errorf("acknowledged %s=%.10s…: redis has %.60s", k, v, got)
		}
	}
	// The WAL is whole: a restart reads it back.
	if err := victim.StopProxy(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := victim.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(victim.dir, "proxy.log"))
	if strings.Contains(string(b), "repaired") || strings.Contains(string(b), "torn") {
		t.Errorf("the WAL needed a repair after the full disk")
	}
}

// TestSnapshotDiskFull: a follower's redis cannot write its RDB (the
// directory redis saves into is full), so none of its snapshots can be made.
// It must keep applying and serving every write (redis must not turn to
// refusing writes after a failed BGSAVE), retry with a back-off that the
// failure metric shows, and make its snapshot by itself once space is back.
func TestSnapshotDiskFull(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true, ExtraArgs: []string{"--snapshot-entries", "300"}})
	leader, followers := c.Leader(ctx)
	if leader == nil || len(followers) < 2 {
		t.Fatal("no stable leader")
	}
	victim := followers[0]
	rdbDir := filepath.Join(victim.dir, "rdb")
	if err := os.MkdirAll(rdbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(t, rdbDir, 1); err != nil {
		t.Skip(err)
	}
	// Its redis restarts saving to a small disk (the node rebuilds it).
	if err := victim.KillRedis(); err != nil {
		t.Fatal(err)
	}
	victim.RedisDir = rdbDir
	if err := victim.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "the node serving again", func(ctx context.Context) error {
		r, err := victim.Do(ctx, 5*time.Second, "GET", "k0")
		if err == nil && r.IsError() {
			err = fmt.Errorf("%s", r)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{}
	write := func(n *Node, k, v string) {
		t.Helper()
		r, err := n.Do(ctx, 10*time.Second, "SET", k, v)
		if err != nil || r.IsError() {
			t.Fatalf("SET %s through %s: %v %v", k, n, r, err)
		}
		acked[k] = v
	}
	// Random, so that the RDB does not compress below the disk's size.
	rnd := make([]byte, 750)
	crand.Read(rnd)
	value := base64.StdEncoding.EncodeToString(rnd)
	i := 0
	err = waitFor(ctx, 60*time.Second, 0, "a failed snapshot on the node whose redis cannot save", func(ctx context.Context) error {
		for range 200 {
			write([]*Node{leader, victim}[i%2], fmt.Sprintf("k%d", i), value)
			i++
		}
		if v, _ := scrapeNode(context.Background(), t, victim).sum("raftproxy_snapshot_failures_total", `op="make"`); v == 0 {
			return fmt.Errorf("no failed snapshot yet after %d writes", i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// It serves on meanwhile, reads and writes, and makes no snapshot (the
	// earlier ones, while the data was small, fitted).
	stuck := infoInt(ctx, t, victim, "snapshot_last_index")
	for range 700 {
		write(victim, fmt.Sprintf("k%d", i), value)
		i++
	}
	if got := infoInt(ctx, t, victim, "snapshot_last_index"); got != stuck {
		t.Fatalf("snapshot_last_index %d, was %d, on the node whose redis cannot save", got, stuck)
	}
	if r, err := victim.Do(ctx, 10*time.Second, "GET", "k1"); err != nil || r.Str != value {
		t.Fatalf("GET k1 through the node: %v %v", r, err)
	}

	// Space is back: the next attempt succeeds by itself.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", rdbDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	err = waitFor(ctx, 90*time.Second, 500*time.Millisecond, "a snapshot on the node once space is back", func(ctx context.Context) error {
		write(leader, fmt.Sprintf("k%d", i), value)
		i++
		if got := infoInt(ctx, t, victim, "snapshot_last_index"); got <= stuck {
			return fmt.Errorf("no new snapshot yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dump := c.AssertRedisIdentical(ctx)
	for k, v := range acked {
		if got := dump[dumpKey(0, k)]; !strings.Contains(got, fmt.Sprintf("%q", v)) {
			t.Errorf("acknowledged %s=%.10s…: redis has %.60s", k, v, got)
		}
	}
}
