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
		if portsFree(b, 3) {
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

// TestClusterScriptSharded: make run SHARDS=3 (scripts/cluster.sh with
// SHARDS) makes a 3-shard cluster whose nodes start their shards'
// redis-servers themselves, on the ports it prints; a cluster client writes
// and reads across the shards; stop and a plain start resume it sharded.
func TestClusterScriptSharded(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	root, err := repoRoot(goTool())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	client := freePortRun(t, 24) // node i's shards: client + 1 + 10 (i - 1) and the two above
	var others []int
	for _, b := range freeBases(t, 8) {
		if (b < client-10 || b > client+30) && len(others) < 3 {
			others = append(others, b)
		}
	}
	if len(others) < 3 {
		t.Fatal("no free port ranges apart from the client ports")
	}
	env := append(os.Environ(), "RUN_DIR="+dir, "BIN="+raftproxyBin,
		"CLIENT_BASE="+strconv.Itoa(client), "PEER_BASE="+strconv.Itoa(others[0]),
		"REDIS_BASE="+strconv.Itoa(others[1]), "METRICS_BASE="+strconv.Itoa(others[2]))
	script := func(shards, arg string) string {
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "cluster.sh"), arg)
		cmd.Env = append(env, "SHARDS="+shards)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("SHARDS=%s cluster.sh %s: %v\n%s", shards, arg, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(root, "scripts", "cluster.sh"), "stop")
		cmd.Env = env
		cmd.Run()
	})
	out := script("3", "start")
	for i := range 3 {
		first := client + 1 + 10*i
		if want := fmt.Sprintf("shards on ports %d-%d", first, first+2); !strings.Contains(out, want) {
			t.Errorf("cluster.sh start does not say %q:\n%s", want, out)
		}
	}
	addr := func(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
	check := func(round int) {
		t.Helper()
		cc := newClusterClient(addr(client + 1))
		defer cc.Close()
		deadline := time.Now().Add(30 * time.Second)
		for {
			slots, err := cc.ClusterSlots(ctx).Result()
			if err == nil && len(slots) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CLUSTER SLOTS: %v %v, want 3 shards", slots, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		for i := range 60 {
			k := fmt.Sprintf("k%d", i)
			if round == 0 {
				if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", k, err)
				}
			}
			if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
				t.Fatalf("round %d: GET %s: %v %v, want %d", round, k, v, err, i)
			}
		}
	}
	check(0)
	// Every shard holds some of the keys: the slots are split.
	for i := range 3 {
		n := &Node{Addr: addr(client + 1 + i), c: &Cluster{}}
		v, err := n.Do(ctx, 5*time.Second, "DBSIZE")
		if err != nil || v.Int == 0 {
			t.Errorf("shard %d on node1 holds no key: DBSIZE %v %v", i, v, err)
		}
	}
	script("3", "stop")
	script("0", "start") // the layout is the data's
	check(1)
}

// freePortRun finds b with ports b+1 to b+span free.
func freePortRun(t *testing.T, span int) int {
	t.Helper()
	for tries := 0; tries < 1000; tries++ {
		if b := 20000 + rand.IntN(20000)/10*10; portsFree(b, span) {
			return b
		}
	}
	t.Fatal("no free run of ports")
	return 0
}

// portsFree reports whether ports b+1 to b+span can be listened on now.
func portsFree(b, span int) bool {
	for i := 1; i <= span; i++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b+i))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}
