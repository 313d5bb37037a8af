package test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopWhileRedisBusy: SIGTERM ends raftproxy within --request-timeout
// plus 5 s while its redis runs a script that never ends, and a supervised
// redis-server goes with it (it ignores SIGTERM while busy).
func TestStopWhileRedisBusy(t *testing.T) {
	for _, supervised := range []bool{false, true} {
		t.Run(map[bool]string{false: "external redis", true: "supervised redis"}[supervised], func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			const timeout = 2 * time.Second
			c := StartCluster(ctx, t, ClusterOptions{Supervised: supervised, RequestTimeout: timeout})
			leader, _ := c.Leader(ctx)
			reply := runForever(t, leader, "EVAL", "while true do end", "0")
			// Every node's applier is inside the script once it answers
			// -BUSY (redis's default threshold, 5 s).
			for _, n := range c.Nodes {
				waitBusy(ctx, t, n, "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
			}
			redises := map[int]string{}
			for _, n := range c.Nodes {
				for pid, comm := range childProcesses(n.proxy.Pid()) {
					if strings.HasPrefix(comm, "redis-server") {
						redises[pid] = n.String()
					}
				}
			}
			if supervised && len(redises) != len(c.Nodes) {
				t.Fatalf("found %d supervised redis-servers, want %d", len(redises), len(c.Nodes))
			}
			start := time.Now()
			errs := make(chan error, len(c.Nodes))
			for _, n := range c.Nodes {
				go func() { errs <- n.StopProxy(timeout + 5*time.Second) }()
			}
			for range c.Nodes {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			t.Logf("all three stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
			for pid, n := range redises {
				if processAlive(pid) {
					t.Errorf("%s's supervised redis-server (pid %d) outlived it", n, pid)
				}
			}
			select {
			case v := <-reply:
				if v.Kind != '-' && v.Kind != '!' {
					t.Errorf("the script's client got %s from a stopping node", v)
				}
			case <-time.After(5 * time.Second):
				t.Error("the script's client still waits after its node stopped")
			}
		})
	}
}

// TestClusterScriptStop: scripts/cluster.sh (make run, make stop) stops
// every process it started, redis-servers busy with a script included.
func TestClusterScriptStop(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	root, err := repoRoot(goTool())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bases := freeBases(t, 4)
	env := append(os.Environ(), "RUN_DIR="+dir, "BIN="+raftproxyBin,
		"CLIENT_BASE="+strconv.Itoa(bases[0]), "PEER_BASE="+strconv.Itoa(bases[1]),
		"REDIS_BASE="+strconv.Itoa(bases[2]), "METRICS_BASE="+strconv.Itoa(bases[3]))
	script := func(arg string) string {
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "cluster.sh"), arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh %s: %v\n%s", arg, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		// Whatever the test left, by pid file.
		files, _ := filepath.Glob(filepath.Join(dir, "node*", "*.pid"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	script("start")
	pids := map[int]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "node*", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pids[pid] = f
	}
	if len(pids) != 9 {
		t.Fatalf("found %d pid files (%v), want 9: a raftproxy, a redis-server and its restart loop per node", len(pids), files)
	}
	node1 := &Node{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(bases[0]+1)), c: &Cluster{}}
	runForever(t, node1, "EVAL", "while true do end", "0")
	waitBusy(ctx, t, node1, "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
	start := time.Now()
	out := script("stop")
	took := time.Since(start)
	t.Logf("cluster.sh stop took %v:\n%s", took.Round(time.Millisecond), out)
	for pid, f := range pids {
		if processAlive(pid) {
			t.Errorf("process %d (%s) still runs after cluster.sh stop", pid, f)
		}
	}
	if took > 20*time.Second {
		t.Errorf("cluster.sh stop took %v", took)
	}
}

// freeBases returns n port bases b such that b+1..b+3 are free.
func freeBases(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	used := map[int]bool{}
	for tries := 0; len(out) < n && tries < 1000; tries++ {
		b := 20000 + rand.IntN(20000)/10*10
		if used[b] {
			continue
		}
		free := true
		for i := 1; i <= 3; i++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b+i))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			used[b] = true
			out = append(out, b)
		}
	}
	if len(out) < n {
		t.Fatal("no free port ranges")
	}
	return out
}

// goTool is the go command (go test puts it on PATH).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// TestClusterScriptBusyPort: scripts/cluster.sh (make run) fails at once,
// naming the port, when a port it needs is taken, and starts nothing; it
// used to hang waiting for a node that could not listen.
func TestClusterScriptBusyPort(t *testing.T) {
	ctx := testContext(t, time.Minute)
	root, err := repoRoot(goTool())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bases := freeBases(t, 4)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", bases[0]+2))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "cluster.sh"), "start")
	cmd.Env = append(os.Environ(), "RUN_DIR="+dir, "BIN="+raftproxyBin,
		"CLIENT_BASE="+strconv.Itoa(bases[0]), "PEER_BASE="+strconv.Itoa(bases[1]),
		"REDIS_BASE="+strconv.Itoa(bases[2]), "METRICS_BASE="+strconv.Itoa(bases[3]))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("cluster.sh start succeeded with port %d taken:\n%s", bases[0]+2, out)
	}
	want := fmt.Sprintf("port %d (node2's client port) is in use by another process", bases[0]+2)
	if !strings.Contains(string(out), want) {
		t.Errorf("cluster.sh start output lacks %q:\n%s", want, out)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cluster.sh start took %v to fail", took)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "node*", "*.pid")); len(files) > 0 {
		t.Errorf("cluster.sh started processes despite the busy port: %v", files)
	}
}
