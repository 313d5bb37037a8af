// Package netns builds a network of Linux network namespaces for
// multi-process fault tests: every node lives in its own namespace, so a
// partition is a real network cut between nodes, while the test process (in
// the namespace it started in, "the host") still reaches every node.
//
// Topology, for a topology whose second address octet is A (derived from its
// name, see New):
//
//	host 10.A.0.2 --veth-- 10.A.0.1  router R  10.A.i.1 --veth-- 10.A.i.2 node i
//
// The router namespace forwards between its links (ip_forward is set inside
// R only; the host's sysctls are untouched). The host routes 10.A.0.0/16 via
// the router; each node has a default route via the router. A cut between
// nodes a and b is a pair of policy rules in R,
//
//	ip -n R rule add from 10.A.a.2 to 10.A.b.2 blackhole
//
// and its reverse: forwarded packets are silently dropped, so connections
// time out exactly as in a real partition, while host↔node traffic (source
// 10.A.0.2) keeps flowing. Blackhole routes inside a node's own namespace
// would not do: local senders get EINVAL at once instead of a timeout.
//
// Only iproute2 (`ip`) and sysctl are needed, no iptables, nft or tc, and
// the process must be root; Available says whether this machine qualifies.
//
// The API is deliberately small: addresses and namespace names to configure
// processes, Command to start them inside a node, and cuts between whole
// nodes (Partition, Cut, Heal), which is what partition tests need. Delay,
// loss or one-way cuts would need tc or finer rules and are left out.
package netns

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxNodes is the largest topology: node i uses the third address octet i.
const MaxNodes = 254

// cleanupTimeout bounds Close and the cleanup after a failed New, which have
// no context of their own.
const cleanupTimeout = 30 * time.Second

// Available returns nil when this process can build topologies: it runs as
// root, has ip and sysctl, and can create a namespace holding a veth pair, a
// policy rule and a forwarding sysctl. It tries all of that on a throwaway
// namespace, so the error says what is missing (not root, or the ip command
// and its output). It takes tens of milliseconds; callers that ask often may
// cache the answer.
func Available() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("netns: network namespaces need root: running as uid %d", uid)
	}
	for _, prog := range []string{"ip", "sysctl"} {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("netns: %s not found on PATH (iproute2 and procps are needed): %v", prog, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	ns := "netnsprobe-" + strconv.Itoa(os.Getpid())
	_ = run(ctx, "ip", "netns", "del", ns) // a leftover of a reused pid
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	defer func() { _ = run(ctx, "ip", "netns", "del", ns) }()
	steps := [][]string{
		{"ip", "-n", ns, "link", "add", "name", "probe0", "type", "veth", "peer", "name", "probe1"},
		{"ip", "-n", ns, "rule", "add", "from", "192.0.2.1", "to", "192.0.2.2", "blackhole"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Topology is a router namespace and nodes 1..Nodes(), each in its own
// namespace. Its methods are safe for concurrent use.
type Topology struct {
	name   string
	octet  int // the A in 10.A.x.y
	nodes  int
	router string // router namespace
	hostIf string // host end of the host↔router veth

	mu     sync.Mutex
	rules  map[[2]int]bool // installed blackhole rules, from node → to node
	closed bool
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// New creates a topology of nodes nodes. name is a short prefix (1 to 6
// lowercase letters or digits, starting with a letter) for its namespaces
// (name-r, name-n1, ...) and host interface (name-h; Linux interface names
// have at most 15 bytes). The second address octet A is a hash of name into
// 100..199, so a name always gets the same addresses; New fails if anything
// other than a previous run of the same name uses 10.A.0.0/16 on the host
// (then pick another name).
//
// Leftovers of a previous run with the same name (namespaces, host
// interface and route) are removed first, so a killed test does not break the
// next run. The flip side: a name belongs to one live topology per machine;
// New with the name of a topology still in use (by this or another process)
// destroys that topology, so concurrent tests must use different names. New
// returns once every link is up. On error, whatever it created is removed.
func New(ctx context.Context, name string, nodes int) (*Topology, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("netns: bad topology name %q: want 1-6 lowercase letters or digits starting with a letter", name)
	}
	if nodes < 1 || nodes > MaxNodes {
		return nil, fmt.Errorf("netns: bad node count %d: want 1..%d", nodes, MaxNodes)
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	t := &Topology{
		name:   name,
		octet:  100 + int(h.Sum32()%100),
		nodes:  nodes,
		router: name + "-r",
		hostIf: name + "-h",
		rules:  map[[2]int]bool{},
	}
	if err := t.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	if err := t.checkSubnetFree(ctx); err != nil {
		return nil, err
	}
	if err := t.create(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_ = t.destroy(cctx)
		return nil, err
	}
	return t, nil
}

func (t *Topology) subnet() string { return fmt.Sprintf("10.%d.0.0/16", t.octet) }

// routerIP is the router's address on the link to node i (0 = host).
func (t *Topology) routerIP(i int) string { return fmt.Sprintf("10.%d.%d.1", t.octet, i) }

func (t *Topology) ip(i int) string { return fmt.Sprintf("10.%d.%d.2", t.octet, i) }

// removeLeftovers deletes namespaces and the host interface of a previous
// topology with this name. Only objects named after this topology are
// touched; the host route goes away with the host interface.
func (t *Topology) removeLeftovers(ctx context.Context) error {
	// The host interface first: deleting it is synchronous, while a deleted
	// namespace's devices disappear asynchronously (and not at all while a
	// process still runs in it), which would make the next `link add` fail.
	if linkExists(ctx, "", t.hostIf) {
		if err := run(ctx, "ip", "link", "del", t.hostIf); err != nil {
			return err
		}
	}
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return err
	}
	mine := regexp.MustCompile(`^` + regexp.QuoteMeta(t.name) + `-(r|n[0-9]+)$`)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line) // "name (id: 3)"
		if len(f) == 0 || !mine.MatchString(f[0]) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", f[0]); err != nil {
			return err
		}
	}
	return nil
}

// checkSubnetFree fails if any route or address on the host lies within
// this topology's 10.A.0.0/16.
func (t *Topology) checkSubnetFree(ctx context.Context) error {
	routes, err := output(ctx, "ip", "-o", "route", "show", "table", "all", "root", t.subnet())
	if err != nil {
		return err
	}
	addrs, err := output(ctx, "ip", "-o", "addr", "show", "to", t.subnet())
	if err != nil {
		return err
	}
	if used := strings.TrimSpace(routes + addrs); used != "" {
		return fmt.Errorf("netns: topology %q uses %s, which is already in use on the host (choose another name):\n%s", t.name, t.subnet(), used)
	}
	return nil
}

func (t *Topology) create(ctx context.Context) error {
	r := t.router
	var steps [][]string
	add := func(args ...string) { steps = append(steps, append([]string{"ip"}, args...)) }

	add("netns", "add", r)
	add("-n", r, "link", "set", "lo", "up")
	steps = append(steps, []string{"ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"})
	// Host ↔ router.
	add("link", "add", "name", t.hostIf, "type", "veth", "peer", "name", "host", "netns", r)
	add("addr", "add", t.ip(0)+"/24", "dev", t.hostIf)
	add("-n", r, "addr", "add", t.routerIP(0)+"/24", "dev", "host")
	add("link", "set", t.hostIf, "up")
	add("-n", r, "link", "set", "host", "up")
	add("route", "add", t.subnet(), "via", t.routerIP(0))
	// Router ↔ node i.
	for i := 1; i <= t.nodes; i++ {
		ns, rif := t.Namespace(i), "n"+strconv.Itoa(i)
		add("netns", "add", ns)
		add("-n", ns, "link", "set", "lo", "up")
		add("link", "add", "name", rif, "netns", r, "type", "veth", "peer", "name", "eth0", "netns", ns)
		add("-n", r, "addr", "add", t.routerIP(i)+"/24", "dev", rif)
		add("-n", ns, "addr", "add", t.ip(i)+"/24", "dev", "eth0")
		add("-n", r, "link", "set", rif, "up")
		add("-n", ns, "link", "set", "eth0", "up")
		add("-n", ns, "route", "add", "default", "via", t.routerIP(i))
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return t.waitUp(ctx)
}

// waitUp waits until every veth end reports carrier and operational state
// UP: until then the kernel may drop packets sent over it.
func (t *Topology) waitUp(ctx context.Context) error {
	type link struct{ ns, dev string }
	links := []link{{"", t.hostIf}, {t.router, "host"}}
	for i := 1; i <= t.nodes; i++ {
		links = append(links, link{t.router, "n" + strconv.Itoa(i)}, link{t.Namespace(i), "eth0"})
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, l := range links {
		args := []string{"-o", "link", "show", "dev", l.dev}
		if l.ns != "" {
			args = append([]string{"-n", l.ns}, args...)
		}
		for {
			out, err := output(ctx, "ip", args...)
			if err != nil {
				return err
			}
			if strings.Contains(out, "LOWER_UP") && strings.Contains(out, "state UP") {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("netns: link %s in namespace %q not up: %v: %s", l.dev, l.ns, ctx.Err(), strings.TrimSpace(out))
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// Nodes returns the number of nodes; they are numbered 1..Nodes().
func (t *Topology) Nodes() int { return t.nodes }

// NodeIP returns node i's address, e.g. "10.142.2.2". Processes in node i
// may also bind 0.0.0.0 or 127.0.0.1 (lo is up in every namespace).
// It panics if i is not a node.
func (t *Topology) NodeIP(i int) string {
	t.checkNode(i)
	return t.ip(i)
}

// HostIP returns the host's address on the topology, from which the test
// process reaches nodes and at which nodes reach the test process. Cuts
// never affect it.
func (t *Topology) HostIP() string { return t.ip(0) }

// Namespace returns the name of node i's network namespace, as used by
// `ip netns exec` and found under /var/run/netns. It panics if i is not a
// node.
func (t *Topology) Namespace(i int) string {
	t.checkNode(i)
	return t.name + "-n" + strconv.Itoa(i)
}

func (t *Topology) checkNode(i int) {
	if i < 1 || i > t.nodes {
		panic(fmt.Sprintf("netns: node %d out of range 1..%d", i, t.nodes))
	}
}

// Command returns a command that runs name with args inside node i's
// namespace, via `ip netns exec`. ip execs the program, so the started
// process's PID is the program's own and signals (including Pdeathsig and
// ctx's kill) reach it. Callers set Stdout, Env, SysProcAttr and so on.
// It panics if i is not a node.
func (t *Topology) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.Namespace(i), name}, args...)...)
}

// Partition replaces the current cuts so that nodes in different groups
// cannot reach each other, while nodes within a group can. A node in no
// group is cut off from all other nodes; Partition with a single group of
// all nodes heals everything (as Heal does), Partition() isolates every
// node. The host reaches every node regardless.
func (t *Topology) Partition(groups ...[]int) error {
	group := map[int]int{}
	for g, nodes := range groups {
		for _, n := range nodes {
			if n < 1 || n > t.nodes {
				return fmt.Errorf("netns: partition: node %d out of range 1..%d", n, t.nodes)
			}
			if prev, dup := group[n]; dup {
				return fmt.Errorf("netns: partition: node %d is in groups %d and %d", n, prev, g)
			}
			group[n] = g
		}
	}
	want := map[[2]int]bool{}
	for a := 1; a <= t.nodes; a++ {
		for b := 1; b <= t.nodes; b++ {
			ga, oka := group[a]
			gb, okb := group[b]
			if a != b && !(oka && okb && ga == gb) {
				want[[2]int{a, b}] = true
			}
		}
	}
	return t.apply(func(map[[2]int]bool) map[[2]int]bool { return want })
}

// Cut adds a cut between nodes a and b, keeping the others.
func (t *Topology) Cut(a, b int) error {
	if a < 1 || a > t.nodes || b < 1 || b > t.nodes || a == b {
		return fmt.Errorf("netns: cut %d-%d: want two different nodes in 1..%d", a, b, t.nodes)
	}
	return t.apply(func(cur map[[2]int]bool) map[[2]int]bool {
		want := make(map[[2]int]bool, len(cur)+2)
		for r := range cur {
			want[r] = true
		}
		want[[2]int{a, b}] = true
		want[[2]int{b, a}] = true
		return want
	})
}

// Heal removes every cut.
func (t *Topology) Heal() error {
	return t.apply(func(map[[2]int]bool) map[[2]int]bool { return nil })
}

// Cuts returns the current cuts as sorted pairs {a, b} with a < b.
func (t *Topology) Cuts() [][2]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[[2]int]bool{}
	for r := range t.rules {
		if r[0] > r[1] {
			r[0], r[1] = r[1], r[0]
		}
		seen[r] = true
	}
	cuts := make([][2]int, 0, len(seen))
	for c := range seen {
		cuts = append(cuts, c)
	}
	sort.Slice(cuts, func(i, j int) bool {
		if cuts[i][0] != cuts[j][0] {
			return cuts[i][0] < cuts[j][0]
		}
		return cuts[i][1] < cuts[j][1]
	})
	return cuts
}

// apply changes the installed rules to want(current rules), touching only
// the difference. On error, t.rules still reflects what is installed, so a
// later call completes the change.
func (t *Topology) apply(wantFn func(cur map[[2]int]bool) map[[2]int]bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("netns: topology closed")
	}
	want := wantFn(t.rules)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	rule := func(op string, r [2]int) error {
		return run(ctx, "ip", "-n", t.router, "rule", op, "from", t.ip(r[0]), "to", t.ip(r[1]), "blackhole")
	}
	for r := range t.rules {
		if !want[r] {
			if err := rule("del", r); err != nil {
				return err
			}
			delete(t.rules, r)
		}
	}
	for r := range want {
		if !t.rules[r] {
			if err := rule("add", r); err != nil {
				return err
			}
			t.rules[r] = true
		}
	}
	return nil
}

// Close deletes the namespaces, links and the host route of the topology.
// Processes still running in a node's namespace keep it alive but cut off
// from everything. Close is idempotent.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	return t.destroy(ctx)
}

// destroy removes everything this topology may have created, ignoring what
// does not exist.
func (t *Topology) destroy(ctx context.Context) error {
	var errs []error
	// Deleting the host interface also deletes its peer and the host route.
	if linkExists(ctx, "", t.hostIf) {
		errs = append(errs, run(ctx, "ip", "link", "del", t.hostIf))
	}
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			exists[f[0]] = true
		}
	}
	nss := []string{t.router}
	for i := 1; i <= t.nodes; i++ {
		nss = append(nss, t.Namespace(i))
	}
	for _, ns := range nss {
		if exists[ns] {
			errs = append(errs, run(ctx, "ip", "netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// linkExists reports whether dev exists in namespace ns ("" = this one).
func linkExists(ctx context.Context, ns, dev string) bool {
	args := []string{"link", "show", "dev", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return exec.CommandContext(ctx, "ip", args...).Run() == nil
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output runs a command and returns its combined output; the error names
// the command line and includes the output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
