package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
	"github.com/raftproxy/raftproxy/test/netns"
)

// raftproxyBin is the binary under test, built once by TestMain.
var raftproxyBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// CI installs redis-server; a machine without it must fail loudly rather
	// than report a green run that tested nothing.
	if _, err := exec.LookPath("redis-server"); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: redis-server not found on PATH; the integration tests in ./test run real redis-server processes (install Debian package redis-server, version 7 or later)")
		return 1
	}
	if bin := os.Getenv("RAFTPROXY_BIN"); bin != "" {
		raftproxyBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "raftproxy-itest-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: creating a directory for the raftproxy binary: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	raftproxyBin = filepath.Join(dir, "raftproxy")
	if err := buildBinary(raftproxyBin); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: building ./cmd/raftproxy: %v\n", err)
		return 1
	}
	return m.Run()
}

func buildBinary(out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		// go test puts GOROOT/bin on PATH, but a test binary run by hand may not have it.
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := repoRoot(goTool)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", out}
	if os.Getenv("RAFTPROXY_TEST_RACE") != "" {
		// The processes under test run with the race detector (needs gcc);
		// a race they find is printed in their log and fails teardown.
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goTool, append(args, "./cmd/raftproxy")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", root, err, b)
	}
	return nil
}

func repoRoot(goTool string) (string, error) {
	b, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating go.mod with go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the raftproxy module: go env GOMOD is empty")
	}
	return filepath.Dir(gomod), nil
}

// testContext bounds a whole test so that a stuck cluster fails the test with
// a message instead of hanging until go test's global timeout.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	deadline := time.Now().Add(d)
	if td, ok := t.Deadline(); ok && td.Add(-15*time.Second).Before(deadline) {
		deadline = td.Add(-15 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it returns nil, the timeout passes or ctx ends,
// and then returns cond's last error so the failure says what was awaited.
func waitFor(ctx context.Context, timeout, every time.Duration, what string, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = cond(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not reached within %v: %w", what, timeout, last)
		case <-time.After(every):
		}
	}
}

// Ports are handed out once per test binary: a port freed by one test's
// listener could otherwise be given to two nodes of a later test. They are
// taken below the kernel's ephemeral range, because a node that is down for
// a restart leaves its port free, and an ephemeral port handed to some
// outgoing connection in the meantime would make the restart fail.
var (
	portMu    sync.Mutex
	usedPorts = map[int]bool{}
)

func freePorts(n int) ([]int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	lo, hi := 10000, ephemeralLow()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 10000 {
			return nil, fmt.Errorf("found only %d free loopback ports in [%d,%d)", len(ports), lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		if usedPorts[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		usedPorts[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// freePortRuns returns the first ports of count runs of length free
// loopback ports in a row: a sharded node serves shard i on the port i
// above its first.
func freePortRuns(count, length int) ([]int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	lo, hi := 10000, ephemeralLow()-length
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var starts []int
	for tries := 0; len(starts) < count; tries++ {
		if tries > 10000 {
			return nil, fmt.Errorf("found only %d runs of %d free loopback ports in [%d,%d)", len(starts), length, lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		var got []net.Listener
		for q := p; q < p+length && !usedPorts[q]; q++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				break
			}
			got = append(got, l)
		}
		ls = append(ls, got...)
		if len(got) < length {
			continue
		}
		for q := p; q < p+length; q++ {
			usedPorts[q] = true
		}
		starts = append(starts, p)
	}
	return starts, nil
}

// ephemeralLow is the bottom of the kernel's ephemeral port range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 11000 {
				return lo
			}
		}
	}
	return 32768
}

// spawnRequests are served by one goroutine locked to its OS thread for the
// whole run: Pdeathsig fires when the thread that forked a child exits, so
// forking from a thread that never exits makes children die exactly when the
// test binary does (e.g. on a go test -timeout panic), and never earlier.
var spawnRequests = make(chan spawnRequest)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func init() {
	go func() {
		runtime.LockOSThread()
		for req := range spawnRequests {
			req.done <- req.cmd.Start()
		}
	}()
}

// process is one child process (redis-server or raftproxy) with its output
// appended to a log file that survives restarts.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	// stopping marks an exit the test asked for; any other exit is a crash.
	stopping atomic.Bool
}

func startProcess(name, logPath, bin string, args ...string) (*process, error) {
	return startCmd(name, logPath, exec.Command(bin, args...))
}

// startCmd starts cmd (which may be wrapped, e.g. by ip netns exec) with its
// output appended to logPath.
func startCmd(name, logPath string, cmd *exec.Cmd) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", logPath, err)
	}
	fmt.Fprintf(f, "==== %s: starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group: killing the group also takes down a redis-server
	// that a supervised raftproxy started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnRequests <- req
	if err := <-req.done; err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		fmt.Fprintf(f, "==== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), p.waitErr)
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) Pid() int { return p.cmd.Process.Pid }

func (p *process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process alone.
func (p *process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		return fmt.Errorf("signalling %s (pid %d) with %v: %w", p.name, p.Pid(), sig, err)
	}
	return nil
}

// Kill SIGKILLs the process and everything in its process group.
func (p *process) Kill() error {
	p.stopping.Store(true)
	if !p.Exited() {
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 10s after SIGKILL", p.name, p.Pid())
	}
}

// Terminate sends SIGTERM and waits up to grace for a clean exit; after that
// it SIGKILLs the group and reports that the graceful stop failed.
func (p *process) Terminate(grace time.Duration) error {
	p.stopping.Store(true)
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	// A process a test paused cannot act on SIGTERM until it runs again.
	_ = syscall.Kill(p.Pid(), syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.Kill()
		return fmt.Errorf("%s (pid %d) did not exit within %v of SIGTERM; SIGKILLed", p.name, p.Pid(), grace)
	}
}

// logTail returns the last n lines of a log file, for failure reports.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append([]string(nil), lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ClusterOptions says how to start the nodes.
type ClusterOptions struct {
	Nodes int // default 3
	// Supervised starts raftproxy without --redis, so that each node runs
	// its own redis-server.
	Supervised bool
	// Network, when set, puts node i in network namespace i+1 of the
	// topology (so partitions can cut nodes apart); it must have a slot
	// for every node the test will ever start. Nil runs all on loopback.
	Network        *netns.Topology
	FollowerProxy  *bool         // nil leaves the default
	RequestTimeout time.Duration // 0 leaves the default
	ExtraArgs      []string      // more raftproxy flags, e.g. snapshot thresholds
	// Password is the proxies' requirepass (given as RAFTPROXY_REQUIREPASS,
	// so the environment path is exercised too); the harness's own
	// clients and admin commands AUTH with it.
	Password string
	// Metrics gives each node a --metrics-listen address (Node.MetricsAddr).
	Metrics bool
	// SkewClocks runs each redis-server under the faketime shim, so a test
	// can shift its wall clock while it runs (Node.SetRedisClock).
	SkewClocks bool
	// DataDirMiB puts each node's data directory on a tmpfs of this size,
	// which a test can fill (fill); 0: on the test's disk.
	DataDirMiB int
	// Bin is the raftproxy binary nodes start with (Node.Bin changes it for
	// one node); empty: the one built from this tree.
	Bin string
	// Shards makes Form create a sharded cluster of that many shards
	// (RAFT.CLUSTER INIT SHARDS), each node's client ports a run of that
	// many free ports; 0: a plain cluster.
	Shards int
	// PortRun, when above Shards, is how many client ports each node gets
	// in its run: room for shards added later (RAFT.SHARD ADD).
	PortRun int
	// Placed (with Shards 3 and an even number of nodes, at least 6)
	// makes Form create the primary group on every node, then shard 1 on
	// the first half of the nodes and shard 2 on the second (RAFT.SHARD ADD
	// <node-id>...), each then owning a third of the slots.
	Placed bool
}

// Cluster is a set of raftproxy nodes, each with its own redis-server, data
// directory and log files under one directory that is kept on failure.
type Cluster struct {
	t         *testing.T
	opts      ClusterOptions
	dir       string
	Nodes     []*Node
	ClusterID string

	mu      sync.Mutex
	clients []*redis.Client
	// gone are nodes removed from the cluster: no longer expected in it,
	// but still torn down and their logs shown.
	gone []*Node
	// holders are the nodes of each placed shard, by index.
	holders map[int][]*Node
}

// Forget stops counting n as a member (after RAFT.NODE REMOVE); its
// processes keep running until teardown.
func (c *Cluster) Forget(n *Node) {
	for i, m := range c.Nodes {
		if m == n {
			c.Nodes = append(c.Nodes[:i:i], c.Nodes[i+1:]...)
			c.gone = append(c.gone, n)
			return
		}
	}
}

// Node is one raftproxy process and the redis-server behind it. Ports and
// the data directory stay the same across restarts.
type Node struct {
	c         *Cluster
	Index     int
	Addr      string // client RESP address of the proxy
	PeerAddr  string
	RedisAddr string // "" in supervised mode
	DataDir   string
	ID        string   // node_id from RAFT.INFO, known once the node is a member
	ExtraArgs []string // more flags for this node's next StartProxy
	// MetricsAddr serves /metrics, /livez and /readyz (ClusterOptions.Metrics).
	MetricsAddr string
	// ProxyClock shifts the clock of this node's next StartProxy
	// (RAFTPROXY_TEST_CLOCK_OFFSET).
	ProxyClock time.Duration
	// RedisDir is where this node's next StartRedis saves its RDB files
	// (redis's dir; its own directory when empty).
	RedisDir string
	// Bin is the raftproxy binary of this node's next StartProxy (another
	// build, for upgrades); empty: ClusterOptions.Bin.
	Bin string

	dir   string
	proxy *process
	redis *process
}

func (n *Node) String() string { return fmt.Sprintf("node%d(%s)", n.Index, n.Addr) }

// NewCluster starts the redis-servers and proxies but does not form the
// raft group; Form does.
func NewCluster(ctx context.Context, t *testing.T, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	name := regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(t.Name(), "_")
	dir, err := os.MkdirTemp("", "raftproxy-itest-"+name+"-")
	if err != nil {
		t.Fatalf("creating cluster directory: %v", err)
	}
	c := &Cluster{t: t, opts: opts, dir: dir}
	t.Cleanup(c.teardown)
	ports, err := freePorts(3 * opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	if run := max(opts.Shards, opts.PortRun); run > 1 {
		runs, err := freePortRuns(opts.Nodes, run)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range runs {
			ports[3*i] = p
		}
	}
	for i := 0; i < opts.Nodes; i++ {
		n, err := c.newNode(i, ports[3*i:3*i+3])
		if err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if !opts.Supervised {
			if err := n.StartRedis(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *Cluster) newNode(i int, ports []int) (*Node, error) {
	host := "127.0.0.1"
	if topo := c.opts.Network; topo != nil {
		// Each namespace has its own ports, so fixed ones do.
		if i+1 > topo.Nodes() {
			return nil, fmt.Errorf("node %d: the network topology has only %d namespaces", i, topo.Nodes())
		}
		host, ports = topo.NodeIP(i+1), []int{7000, 7100, 6379}
	}
	n := &Node{
		c:        c,
		Index:    i,
		Addr:     net.JoinHostPort(host, strconv.Itoa(ports[0])),
		PeerAddr: net.JoinHostPort(host, strconv.Itoa(ports[1])),
		dir:      filepath.Join(c.dir, fmt.Sprintf("node%d", i)),
	}
	if !c.opts.Supervised {
		n.RedisAddr = net.JoinHostPort(host, strconv.Itoa(ports[2]))
	}
	if c.opts.Metrics {
		mport := 9100
		if c.opts.Network == nil {
			p, err := freePorts(1)
			if err != nil {
				return nil, err
			}
			mport = p[0]
		}
		n.MetricsAddr = net.JoinHostPort(host, strconv.Itoa(mport))
	}
	n.DataDir = filepath.Join(n.dir, "data")
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", n.DataDir, err)
	}
	if mib := c.opts.DataDirMiB; mib > 0 {
		if err := mountTmpfs(c.t, n.DataDir, mib); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// AddNode starts one more node and joins it to the cluster through member.
func (c *Cluster) AddNode(ctx context.Context, member *Node) *Node {
	c.t.Helper()
	n, err := c.addNode(ctx, member)
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// addNode is AddNode for goroutines other than the test's: it returns
// errors instead of failing the test. A node that failed to join is
// counted as gone, so teardown still stops it.
func (c *Cluster) addNode(ctx context.Context, member *Node) (*Node, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	n, err := c.newNode(len(c.Nodes)+len(c.gone), ports)
	if err != nil {
		return nil, err
	}
	c.gone = append(c.gone, n)
	if !c.opts.Supervised {
		if err := n.StartRedis(ctx); err != nil {
			return nil, err
		}
	}
	if err := n.StartProxy(ctx); err != nil {
		return nil, err
	}
	if err := c.join(ctx, n, member); err != nil {
		return n, err
	}
	return n, nil
}

// join runs RAFT.CLUSTER JOIN on n (a node started by addNode) and, once
// it succeeds, counts n as a member.
func (c *Cluster) join(ctx context.Context, n, member *Node) error {
	v, err := n.Do(ctx, 60*time.Second, "RAFT.CLUSTER", "JOIN", member.Addr)
	if err != nil || v.Kind != '+' || v.Str != "OK" {
		return fmt.Errorf("RAFT.CLUSTER JOIN %s on %s: %v %v", member.Addr, n, v, err)
	}
	for i, g := range c.gone {
		if g == n {
			c.gone = append(c.gone[:i:i], c.gone[i+1:]...)
			break
		}
	}
	c.Nodes = append(c.Nodes, n)
	return nil
}

// RestartAndRead starts n's proxy again, waits for a stable cluster, and
// until reads through n return want.
func (c *Cluster) RestartAndRead(ctx context.Context, n *Node, want map[string]string) {
	c.t.Helper()
	if err := n.StartProxy(ctx); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		c.t.Fatal(err)
	}
	if err := waitForReads(ctx, n, want); err != nil {
		c.t.Fatal(err)
	}
}

// StartCluster starts the nodes and forms the raft group.
func StartCluster(ctx context.Context, t *testing.T, opts ClusterOptions) *Cluster {
	t.Helper()
	c := NewCluster(ctx, t, opts)
	if err := c.Form(ctx); err != nil {
		t.Fatalf("forming the cluster: %v", err)
	}
	return c
}

func (c *Cluster) teardown() {
	t := c.t
	all := append(append([]*Node{}, c.Nodes...), c.gone...)
	c.mu.Lock()
	for _, cl := range c.clients {
		cl.Close()
	}
	c.clients = nil
	c.mu.Unlock()

	// A process that exited without being asked to has crashed, which is a
	// failure even if every assertion passed.
	for _, n := range all {
		for _, p := range []*process{n.proxy, n.redis} {
			if p != nil && p.Exited() && !p.stopping.Load() {
				t.Errorf("%s exited unexpectedly: %v; log %s:\n%s", p.name, p.waitErr, p.logPath, logTail(p.logPath, 60))
			}
		}
	}
	var wg sync.WaitGroup
	for _, n := range all {
		if n.proxy != nil {
			wg.Add(1)
			go func(p *process) {
				defer wg.Done()
				if err := p.Terminate(5 * time.Second); err != nil {
					t.Logf("teardown: %v", err)
				}
				// Take down anything the proxy left in its group (its supervised redis).
				_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
			}(n.proxy)
		}
	}
	wg.Wait()
	for _, n := range all {
		if n.redis != nil {
			_ = n.redis.Kill()
		}
		// With RAFTPROXY_TEST_RACE the race detector reports in the log.
		if n.proxy != nil {
			if b, err := os.ReadFile(n.proxy.logPath); err == nil {
				if i := bytes.Index(b, []byte("WARNING: DATA RACE")); i >= 0 {
					t.Errorf("%s: the race detector found a data race:\n%s", n, b[i:min(len(b), i+6000)])
				}
			}
		}
	}
	if t.Failed() {
		for _, n := range all {
			if n.proxy != nil {
				t.Logf("---- %s proxy log (last 150 lines of %s) ----\n%s", n, n.proxy.logPath, logTail(n.proxy.logPath, 150))
			}
			if n.redis != nil {
				t.Logf("---- %s redis-server log (last 15 lines of %s) ----\n%s", n, n.redis.logPath, logTail(n.redis.logPath, 15))
			}
		}
		t.Logf("cluster files kept in %s", c.dir)
		return
	}
	os.RemoveAll(c.dir)
}

func logLevel() string {
	if l := os.Getenv("RAFTPROXY_TEST_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}

// StartRedis starts (or restarts, on the same port) this node's
// redis-server, empty, and waits until it answers PING.
func (n *Node) StartRedis(ctx context.Context) error {
	if n.redis != nil && !n.redis.Exited() {
		return fmt.Errorf("%s: redis-server already running", n)
	}
	host, port, _ := net.SplitHostPort(n.RedisAddr)
	dir := n.dir
	if n.RedisDir != "" {
		dir = n.RedisDir
	}
	args := []string{"--port", port, "--bind", host, "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir}
	if n.c.opts.Network != nil {
		// Off loopback, redis refuses clients without a password unless told
		// otherwise; the namespaces are private to the test.
		args = append(args, "--protected-mode", "no")
	}
	cmd := n.command(ctx, "redis-server", args...)
	if n.c.opts.SkewClocks {
		env, err := n.skewEnv()
		if err != nil {
			return err
		}
		cmd.Env = append(os.Environ(), env...)
	}
	p, err := startCmd(fmt.Sprintf("node%d redis-server", n.Index), filepath.Join(n.dir, "redis.log"), cmd)
	if err != nil {
		return err
	}
	n.redis = p
	return waitFor(ctx, 15*time.Second, 50*time.Millisecond, fmt.Sprintf("%s redis-server answering PING", n), func(context.Context) error {
		if p.Exited() {
			return fmt.Errorf("redis-server exited: %v; log:\n%s", p.waitErr, logTail(p.logPath, 20))
		}
		return pingRaw(n.RedisAddr)
	})
}

// command runs bin in this node's network namespace, if it has one. The
// command is not tied to ctx: the process outlives the call that starts it.
func (n *Node) command(_ context.Context, bin string, args ...string) *exec.Cmd {
	if topo := n.c.opts.Network; topo != nil {
		return topo.Command(context.Background(), n.Index+1, bin, args...)
	}
	return exec.Command(bin, args...)
}

// KillRedis SIGKILLs this node's redis-server.
func (n *Node) KillRedis() error {
	if n.redis == nil {
		return fmt.Errorf("%s has no redis-server of its own (supervised mode)", n)
	}
	return n.redis.Kill()
}

// StartProxy starts (or restarts, with the same ports and data directory)
// the raftproxy process and waits until it accepts connections.
func (n *Node) StartProxy(ctx context.Context) error {
	if n.proxy != nil && !n.proxy.Exited() {
		return fmt.Errorf("%s: proxy already running", n)
	}
	args := []string{"--listen", n.Addr, "--peer-listen", n.PeerAddr, "--data-dir", n.DataDir, "--log-level", logLevel()}
	if n.RedisAddr != "" {
		args = append(args, "--redis", n.RedisAddr)
	}
	if fp := n.c.opts.FollowerProxy; fp != nil {
		args = append(args, "--follower-proxy="+strconv.FormatBool(*fp))
	}
	if d := n.c.opts.RequestTimeout; d > 0 {
		args = append(args, "--request-timeout", d.String())
	}
	if n.MetricsAddr != "" {
		args = append(args, "--metrics-listen", n.MetricsAddr)
	}
	args = append(args, n.c.opts.ExtraArgs...)
	args = append(args, n.ExtraArgs...)
	bin := raftproxyBin
	if n.Bin != "" {
		bin = n.Bin
	} else if n.c.opts.Bin != "" {
		bin = n.c.opts.Bin
	}
	cmd := n.command(ctx, bin, args...)
	if pw := n.c.opts.Password; pw != "" {
		cmd.Env = append(os.Environ(), "RAFTPROXY_REQUIREPASS="+pw)
	}
	if n.ProxyClock != 0 {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, "RAFTPROXY_TEST_CLOCK_OFFSET="+n.ProxyClock.String())
	}
	p, err := startCmd(fmt.Sprintf("node%d raftproxy", n.Index), filepath.Join(n.dir, "proxy.log"), cmd)
	if err != nil {
		return err
	}
	n.proxy = p
	return waitFor(ctx, 20*time.Second, 50*time.Millisecond, fmt.Sprintf("%s accepting connections", n), func(context.Context) error {
		if p.Exited() {
			return fmt.Errorf("raftproxy exited: %v; log:\n%s", p.waitErr, logTail(p.logPath, 40))
		}
		c, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// KillProxy SIGKILLs the raftproxy process (a crash: no clean shutdown).
func (n *Node) KillProxy() error { return n.proxy.Kill() }

// StopProxy stops the raftproxy process with SIGTERM and fails if it does
// not exit cleanly within grace.
func (n *Node) StopProxy(grace time.Duration) error {
	if err := n.proxy.Terminate(grace); err != nil {
		return err
	}
	if n.proxy.waitErr != nil {
		return fmt.Errorf("%s: exit after SIGTERM was not clean: %w", n, n.proxy.waitErr)
	}
	return nil
}

func (n *Node) ProxyRunning() bool { return n.proxy != nil && !n.proxy.Exited() }

// Client returns a go-redis client to this node's proxy, closed at cleanup.
func (n *Node) Client() *redis.Client {
	return n.c.track(newClientAuth(n.Addr, 8, n.c.opts.Password))
}

// RedisClient returns a go-redis client straight to this node's
// redis-server, bypassing the proxy.
func (n *Node) RedisClient() *redis.Client {
	if n.RedisAddr == "" {
		n.c.t.Fatalf("%s: no direct redis address in supervised mode", n)
	}
	return n.c.track(newClient(n.RedisAddr, 4))
}

func (c *Cluster) track(cl *redis.Client) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clients = append(c.clients, cl)
	return cl
}

// newClient builds a go-redis client the proxy can serve: RESP2 via HELLO 2,
// no CLIENT SETINFO, no maintenance notifications, and no retries, because a
// retried write would hide whether the first attempt took effect.
func newClient(addr string, poolSize int) *redis.Client {
	return newClientAuth(addr, poolSize, "")
}

// newClientAuth is newClient for a server with requirepass password.
func newClientAuth(addr string, poolSize int, password string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                     addr,
		Password:                 password,
		Protocol:                 2,
		DisableIdentity:          true,
		MaxRetries:               -1,
		DialTimeout:              2 * time.Second,
		ReadTimeout:              15 * time.Second,
		WriteTimeout:             5 * time.Second,
		ContextTimeoutEnabled:    true,
		PoolSize:                 poolSize,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

func pingRaw(addr string) error {
	c, err := dialRaw(addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := c.Do("PING")
	if err != nil {
		return err
	}
	if v.Kind != '+' || v.Str != "PONG" {
		return fmt.Errorf("PING answered %s", v)
	}
	return nil
}

// Do sends one command on a fresh raw connection. Admin commands go this way
// so that a restarted node never meets a stale pooled connection.
func (n *Node) Do(ctx context.Context, timeout time.Duration, args ...string) (respValue, error) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return respValue{}, fmt.Errorf("%s %q: %w", n, args, context.DeadlineExceeded)
	}
	c, err := dialRaw(n.Addr, timeout)
	if err != nil {
		return respValue{}, fmt.Errorf("%s: %w", n, err)
	}
	defer c.Close()
	if pw := n.c.opts.Password; pw != "" {
		if v, err := c.Do("AUTH", pw); err != nil || v.Kind != '+' {
			return v, fmt.Errorf("%s: AUTH: %v %w", n, v, err)
		}
	}
	v, err := c.Do(args...)
	if err != nil {
		return v, fmt.Errorf("%s: %w", n, err)
	}
	return v, nil
}

// raftInfo is a parsed RAFT.INFO reply.
type raftInfo struct {
	Fields  map[string]string
	Members []memberInfo
}

type memberInfo struct {
	ID, Addr, PeerAddr, Voting, State, Format string
}

var memberLine = regexp.MustCompile(`^node\d+$`)

func parseRaftInfo(s string) (raftInfo, error) {
	info := raftInfo{Fields: map[string]string{}}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return info, fmt.Errorf("RAFT.INFO line %q is not key:value", line)
		}
		if memberLine.MatchString(k) {
			var m memberInfo
			for _, kv := range strings.Split(v, ",") {
				mk, mv, _ := strings.Cut(kv, "=")
				switch mk {
				case "id":
					m.ID = mv
				case "addr":
					m.Addr = mv
				case "peer_addr":
					m.PeerAddr = mv
				case "voting":
					m.Voting = mv
				case "state":
					m.State = mv
				case "format":
					m.Format = mv
				}
			}
			info.Members = append(info.Members, m)
			continue
		}
		info.Fields[k] = v
	}
	for _, k := range []string{"node_id", "role", "current_term", "commit_index", "last_applied_index", "num_nodes"} {
		if _, ok := info.Fields[k]; !ok {
			return info, fmt.Errorf("RAFT.INFO has no %s field:\n%s", k, s)
		}
	}
	return info, nil
}

func (i raftInfo) Get(k string) string { return i.Fields[k] }

func (i raftInfo) Int(k string) int64 {
	v, err := strconv.ParseInt(i.Fields[k], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func (i raftInfo) Leader() string {
	l := i.Fields["leader_id"]
	if l == "0" || strings.Trim(l, "0") == "" {
		return ""
	}
	return l
}

func (n *Node) RaftInfo(ctx context.Context) (raftInfo, error) {
	v, err := n.Do(ctx, 2*time.Second, "RAFT.INFO")
	if err != nil {
		return raftInfo{}, err
	}
	if v.Kind != '$' || v.Null {
		return raftInfo{}, fmt.Errorf("%s: RAFT.INFO answered %s, want a bulk string", n, v)
	}
	info, err := parseRaftInfo(v.Str)
	if err != nil {
		return info, fmt.Errorf("%s: %w", n, err)
	}
	return info, nil
}

// Form runs RAFT.CLUSTER INIT on node 0, JOINs every other node to it and
// waits until all agree on a leader with every node a voter.
func (c *Cluster) Form(ctx context.Context) error {
	n0 := c.Nodes[0]
	initArgs := []string{"RAFT.CLUSTER", "INIT"}
	if c.opts.Placed {
		initArgs = append(initArgs, "SHARDS", "1")
	} else if c.opts.Shards > 0 {
		initArgs = append(initArgs, "SHARDS", strconv.Itoa(c.opts.Shards))
	}
	v, err := n0.Do(ctx, 30*time.Second, initArgs...)
	if err != nil {
		return fmt.Errorf("RAFT.CLUSTER INIT: %w", err)
	}
	m := regexp.MustCompile(`^OK ([0-9a-fA-F]+)$`).FindStringSubmatch(v.Str)
	if v.Kind != '+' || m == nil {
		return fmt.Errorf("RAFT.CLUSTER INIT on %s answered %s, want +OK <hex cluster id>", n0, v)
	}
	c.ClusterID = m[1]
	// JOIN needs a leader to add the member, and a one-node group elects
	// itself only after an election timeout.
	err = waitFor(ctx, 15*time.Second, 50*time.Millisecond, "node0 leader of its one-node cluster", func(ctx context.Context) error {
		info, err := n0.RaftInfo(ctx)
		if err != nil {
			return err
		}
		if r := info.Get("role"); r != "leader" {
			return fmt.Errorf("role %s", r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range c.Nodes[1:] {
		v, err := n.Do(ctx, 30*time.Second, "RAFT.CLUSTER", "JOIN", n0.Addr)
		if err != nil {
			return fmt.Errorf("RAFT.CLUSTER JOIN %s: %w", n0.Addr, err)
		}
		if v.Kind != '+' || v.Str != "OK" {
			return fmt.Errorf("RAFT.CLUSTER JOIN %s on %s answered %s, want +OK", n0.Addr, n, v)
		}
	}
	if _, err = c.WaitStable(ctx); err != nil || !c.opts.Placed {
		return err
	}
	return c.placeShards(ctx)
}

// placeShards makes the two placed shards of ClusterOptions.Placed and
// gives each a third of the slots.
func (c *Cluster) placeShards(ctx context.Context) error {
	half := len(c.Nodes) / 2
	if c.opts.Shards != 3 || half < 3 || len(c.Nodes)%2 != 0 {
		return fmt.Errorf("placed shards need Shards 3 and an even number of nodes, at least 6")
	}
	c.holders = map[int][]*Node{1: c.Nodes[:half], 2: c.Nodes[half:]}
	n0 := c.Nodes[0]
	for k := 1; k <= 2; k++ {
		args := []string{"RAFT.SHARD", "ADD"}
		for _, n := range c.holders[k] {
			info, err := n.RaftInfo(ctx)
			if err != nil {
				return err
			}
			args = append(args, info.Get("node_id"))
		}
		v, err := n0.Do(ctx, 30*time.Second, args...)
		if err != nil || v.Kind != '$' {
			return fmt.Errorf("%v: %v %v", args, v, err)
		}
		first := (k - 1) * slotmap.NumSlots / 3
		if v, err := n0.Do(ctx, 10*time.Second, "RAFT.SHARD", "MOVE-SLOTS", strconv.Itoa(first), strconv.Itoa(first+slotmap.NumSlots/3-1), v.Str); err != nil || v.Kind != ':' {
			return fmt.Errorf("moving slots to shard %d: %v %v", k, v, err)
		}
	}
	return waitFor(ctx, 90*time.Second, 200*time.Millisecond, "the placed shards served and their slots moved", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if _, moves, err := shardList(ctx, n); err != nil || moves != 0 {
				return fmt.Errorf("%s: %d moves, %v", n, moves, err)
			}
		}
		for k, hs := range c.holders {
			for _, n := range hs {
				if _, err := (&Node{c: c, Addr: proxy.ShardAddr(n.Addr, k)}).Do(ctx, 2*time.Second, "RAFT.INFO"); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Holders are the running nodes that hold shard index k: every running
// node, but for a placed shard (ClusterOptions.Placed).
func (c *Cluster) Holders(k int) []*Node {
	hs, ok := c.holders[k]
	if !ok {
		return c.Running()
	}
	var out []*Node
	for _, n := range c.Running() {
		if slices.Contains(hs, n) {
			out = append(out, n)
		}
	}
	return out
}

// Running returns the nodes whose proxy process is up.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.ProxyRunning() {
			out = append(out, n)
		}
	}
	return out
}

// WaitStable waits until every running node reports the same leader and
// term, the leader itself says it leads, and all members are voters; it
// returns the leader.
func (c *Cluster) WaitStable(ctx context.Context) (*Node, error) {
	var leader *Node
	err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "cluster agreeing on a leader", func(ctx context.Context) error {
		infos, err := c.infos(ctx, c.Running())
		if err != nil {
			return err
		}
		l, err := c.checkAgreement(infos)
		leader = l
		return err
	})
	return leader, err
}

func (c *Cluster) infos(ctx context.Context, nodes []*Node) (map[*Node]raftInfo, error) {
	infos := map[*Node]raftInfo{}
	for _, n := range nodes {
		info, err := n.RaftInfo(ctx)
		if err != nil {
			return nil, err
		}
		n.ID = info.Get("node_id")
		infos[n] = info
	}
	return infos, nil
}

func (c *Cluster) checkAgreement(infos map[*Node]raftInfo) (*Node, error) {
	want := strconv.Itoa(len(c.Nodes))
	var leaderID, term string
	var leader *Node
	for n, info := range infos {
		l := info.Leader()
		if l == "" {
			return nil, fmt.Errorf("%s has no leader (role %s)", n, info.Get("role"))
		}
		if leaderID == "" {
			leaderID, term = l, info.Get("current_term")
		}
		if l != leaderID || info.Get("current_term") != term {
			return nil, fmt.Errorf("nodes disagree: %s says leader %s term %s, another says leader %s term %s",
				n, l, info.Get("current_term"), leaderID, term)
		}
		if info.Get("num_nodes") != want || info.Get("num_voting_nodes") != want {
			return nil, fmt.Errorf("%s: num_nodes=%s num_voting_nodes=%s, want %s", n, info.Get("num_nodes"), info.Get("num_voting_nodes"), want)
		}
		if info.Get("node_id") == leaderID {
			if info.Get("role") != "leader" {
				return nil, fmt.Errorf("%s is named leader but its role is %s", n, info.Get("role"))
			}
			leader = n
		} else if info.Get("role") != "follower" {
			return nil, fmt.Errorf("%s: role %s, want follower", n, info.Get("role"))
		}
	}
	if leader == nil {
		return nil, fmt.Errorf("leader %s is not among the running nodes", leaderID)
	}
	return leader, nil
}

// Leader waits for a stable leader and returns it with the other running
// nodes.
func (c *Cluster) Leader(ctx context.Context) (*Node, []*Node) {
	c.t.Helper()
	l, err := c.WaitStable(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var followers []*Node
	for _, n := range c.Running() {
		if n != l {
			followers = append(followers, n)
		}
	}
	return l, followers
}

// WaitConverged waits until every running node has applied everything it
// knows to be committed and all report the same commit index, twice in a
// row; only then do their redis-servers have to hold the same data.
func (c *Cluster) WaitConverged(ctx context.Context) error {
	var prev int64 = -1
	return waitFor(ctx, 45*time.Second, 200*time.Millisecond, "nodes converging on one applied index", func(ctx context.Context) error {
		infos, err := c.infos(ctx, c.Running())
		if err != nil {
			return err
		}
		var idx int64 = -1
		for n, info := range infos {
			ci, ai := info.Int("commit_index"), info.Int("last_applied_index")
			if ci != ai {
				return fmt.Errorf("%s: commit_index %d, last_applied_index %d", n, ci, ai)
			}
			if idx == -1 {
				idx = ai
			} else if idx != ai {
				return fmt.Errorf("applied indexes differ: %d vs %d (%s)", idx, ai, n)
			}
		}
		if idx != prev {
			prev = idx
			return fmt.Errorf("applied index %d not yet seen twice", idx)
		}
		return nil
	})
}

// AssertRedisIdentical waits for convergence, then reads every key of every
// running node's redis-server directly and requires identical content; it
// returns that content.
func (c *Cluster) AssertRedisIdentical(ctx context.Context) redisDump {
	c.t.Helper()
	if err := c.WaitConverged(ctx); err != nil {
		c.t.Fatal(err)
	}
	nodes := c.Running()
	var dumps []redisDump
	// The applied index is reported once redis answered, so the dumps should
	// match at once; the short retry only absorbs a read racing an apply.
	err := waitFor(ctx, 10*time.Second, 250*time.Millisecond, "identical redis content on every node", func(ctx context.Context) error {
		dumps = dumps[:0]
		for _, n := range nodes {
			d, err := dumpRedis(ctx, n.RedisAddr)
			if err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
			dumps = append(dumps, d)
		}
		for i := 1; i < len(dumps); i++ {
			if diff := diffDumps(dumps[0], dumps[i]); diff != "" {
				return fmt.Errorf("redis of %s and %s differ:\n%s", nodes[0], nodes[i], diff)
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return dumps[0]
}

// procStat returns the command name, state and parent pid of a process
// from /proc, or ok=false if it does not exist.
func procStat(pid int) (comm string, state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, 0, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, 0, false
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 2 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return s[open+1 : end], fields[0][0], ppid, true
}

// childProcesses maps the pids of pid's children to their command names.
func childProcesses(pid int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, _, ppid, ok := procStat(child); ok && ppid == pid {
			out[child] = comm
		}
	}
	return out
}

// processAlive reports whether pid runs; a zombie has exited.
func processAlive(pid int) bool {
	_, state, _, ok := procStat(pid)
	return ok && state != 'Z'
}
