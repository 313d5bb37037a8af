package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/raftproxy/raftproxy/test/netns"
)

// Nemeses: faults that last a while and are then healed, and instant
// operations that run alone or in the middle of a fault.
var (
	faultNemeses   = []string{"kill", "redis", "pause", "partition", "torn", "skew", "disk"}
	instantNemeses = []string{"member", "compact", "script", "redis-loss", "move"}
)

// nemesis injects faults into c on a schedule drawn from rng, so a seed
// replays the same sequence of faults (what they hit may differ with
// timing, e.g. which node leads).
type nemesis struct {
	c     *Cluster
	topo  *netns.Topology // nil: no partitions
	rng   *rand.Rand
	kinds []string
	w     *workload
	logf  func(format string, args ...any)
	count int
	// joining are started nodes whose join did not finish (it may have
	// been made but not confirmed); healAll joins them again.
	joining []*Node
	// uncertain are members whose removal had an unknown outcome; settle
	// finds out from the leader whether they are still members.
	uncertain []*Node
	size      int // the cluster size settle restores
}

func (nm *nemesis) enabled(kind string) bool { return slices.Contains(nm.kinds, kind) }

func (nm *nemesis) pick(from []string) string {
	var ok []string
	for _, k := range from {
		if nm.enabled(k) {
			ok = append(ok, k)
		}
	}
	if len(ok) == 0 {
		return ""
	}
	return ok[nm.rng.IntN(len(ok))]
}

func (nm *nemesis) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(nm.rng.Int64N(int64(hi-lo)))
}

// run injects faults until ctx's deadline or until the run ends, healing
// each before the next, and everything at the end.
func (nm *nemesis) run(ctx context.Context, until time.Time) error {
	for time.Now().Add(time.Second).Before(until) {
		sleep(ctx, nm.dur(500*time.Millisecond, 2*time.Second))
		hold := nm.dur(time.Second, 4*time.Second)
		if rem := time.Until(until); hold > rem {
			hold = rem
		}
		if nm.enabled("script") {
			nm.restartStoppedRedis(ctx)
		}
		if nm.enabled("move") {
			nm.count++
			nm.moveSlots(ctx)
		}
		fault, instant := nm.pick(faultNemeses), nm.pick(instantNemeses)
		if fault == "" {
			if err := nm.instant(ctx, instant); err != nil {
				return err
			}
			sleep(ctx, hold)
			continue
		}
		heal, err := nm.inject(ctx, fault)
		if err != nil {
			return err
		}
		if instant != "" && nm.rng.IntN(2) == 0 {
			sleep(ctx, hold/2)
			if err := nm.instant(ctx, instant); err != nil {
				return err
			}
			sleep(ctx, hold/2)
		} else {
			sleep(ctx, hold)
		}
		if err := heal(); err != nil {
			return fmt.Errorf("healing %s: %w", fault, err)
		}
		nm.logf("healed %s", fault)
		nm.settle(ctx)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// leader returns the node that says it leads, or nil.
func (nm *nemesis) leader(ctx context.Context) *Node {
	for _, n := range nm.c.Running() {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := n.RaftInfo(ictx)
		cancel()
		if err == nil && info.Get("role") == "leader" {
			return n
		}
	}
	return nil
}

func (nm *nemesis) randomNode() *Node { return nm.c.Nodes[nm.rng.IntN(len(nm.c.Nodes))] }

// target is the leader half of the time (the node faults hurt most), else
// a random node.
func (nm *nemesis) target(ctx context.Context) *Node {
	if nm.rng.IntN(2) == 0 {
		if l := nm.leader(ctx); l != nil {
			return l
		}
	}
	return nm.randomNode()
}

func (nm *nemesis) inject(ctx context.Context, kind string) (heal func() error, err error) {
	nm.count++
	switch kind {
	case "kill":
		var victims []*Node
		switch mode := nm.rng.IntN(4); mode {
		case 0, 1:
			victims = []*Node{nm.target(ctx)}
		case 2:
			perm := nm.rng.Perm(len(nm.c.Nodes))
			for _, i := range perm[:len(nm.c.Nodes)/2+1] {
				victims = append(victims, nm.c.Nodes[i])
			}
		default:
			victims = append(victims, nm.c.Nodes...)
		}
		// Sometimes a graceful stop (SIGTERM): the node hands leadership
		// over and fails what it has in flight, which must then be reported
		// as unknown, never as not done.
		graceful := nm.rng.IntN(3) == 0
		for _, n := range victims {
			var err error
			if graceful {
				err = n.proxy.Terminate(10 * time.Second)
			} else {
				err = n.KillProxy()
			}
			if err != nil {
				return nil, err
			}
		}
		nm.logf("%s the proxies of %v", map[bool]string{true: "stopped (SIGTERM)", false: "killed"}[graceful], victims)
		return func() error {
			for _, n := range victims {
				if err := n.StartProxy(ctx); err != nil {
					return err
				}
			}
			return nil
		}, nil
	case "redis":
		n := nm.target(ctx)
		if err := n.KillRedis(); err != nil {
			return nil, err
		}
		nm.logf("killed %s's redis-server", n)
		return func() error { return n.StartRedis(ctx) }, nil
	case "pause":
		n := nm.target(ctx)
		p, what := n.proxy, "proxy"
		if nm.rng.IntN(4) == 0 {
			p, what = n.redis, "redis-server"
		}
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			return nil, err
		}
		nm.logf("paused %s's %s", n, what)
		return func() error {
			if p.Exited() {
				return nil // removed (and stopped) while paused
			}
			return p.Signal(syscall.SIGCONT)
		}, nil
	case "partition":
		desc, err := nm.partition(ctx)
		if err != nil {
			return nil, err
		}
		nm.logf("partition %s: cuts %v", desc, nm.memberCuts())
		return nm.topo.Heal, nil
	case "torn":
		n := nm.randomNode()
		// A node whose WAL lost its tail may not vote until a new leader
		// has repaired it (see docs/ARCHITECTURE.md), so a second such node
		// before that, or any in a cluster of two, leaves no majority that
		// can elect: the nemesis models one lying disk at a time.
		if q := nm.quarantined(ctx, n); q != "" || len(nm.c.Nodes) < 3 {
			nm.logf("no WAL cut now (%d members; quarantined: %s); killing %s instead", len(nm.c.Nodes), q, n)
			if err := n.KillProxy(); err != nil {
				return nil, err
			}
			return func() error { return n.StartProxy(ctx) }, nil
		}
		if err := n.KillProxy(); err != nil {
			return nil, err
		}
		cut, err := cutWALTail(filepath.Join(n.DataDir, "wal"), nm.rng, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("cutting %s's WAL: %w", n, err)
		}
		nm.logf("killed %s and cut %d bytes from the end of its WAL", n, cut)
		return func() error { return n.StartProxy(ctx) }, nil
	case "skew":
		// One node's redis, or every node's, runs its wall clock 5 to 60 s
		// off: keys must still expire by the leader's clock alone.
		nodes := []*Node{nm.target(ctx)}
		if nm.rng.IntN(3) == 0 {
			nodes = append([]*Node(nil), nm.c.Nodes...)
		}
		var offsets []time.Duration
		for _, n := range nodes {
			d := time.Duration(5+nm.rng.IntN(56)) * time.Second
			if nm.rng.IntN(2) == 0 {
				d = -d
			}
			if err := n.SetRedisClock(d); err != nil {
				return nil, err
			}
			offsets = append(offsets, d)
		}
		nm.logf("set the redis clocks of %v off by %v", nodes, offsets)
		return func() error {
			for _, n := range nodes {
				if err := n.SetRedisClock(0); err != nil {
					return err
				}
			}
			return nil
		}, nil
	case "disk":
		// A node's data directory fills up: below the WAL's reserve, or to
		// the last byte.
		n := nm.target(ctx)
		leave := []int{40, 0}[nm.rng.IntN(2)]
		path, err := fillDir(n.DataDir, leave)
		if err != nil {
			return nil, fmt.Errorf("filling %s's data directory: %w", n, err)
		}
		nm.logf("filled %s's data directory to %d MiB free", n, leave)
		return func() error { return os.Remove(path) }, nil
	}
	return nil, fmt.Errorf("unknown nemesis %q", kind)
}

// loseRedisData makes a node's redis lose data, or take data from another
// client, behind raftproxy's back.
func (nm *nemesis) loseRedisData(ctx context.Context) error {
	n := nm.randomNode()
	var err error
	switch nm.rng.IntN(3) {
	case 0:
		err = n.RedisClient().FlushAll(ctx).Err()
		nm.logf("FLUSHALL on %s's redis directly", n)
	case 1:
		err = n.RedisClient().Set(ctx, "chaos:stray", "stray", 0).Err()
		nm.logf("SET chaos:stray on %s's redis directly", n)
	default:
		if err = n.KillRedis(); err == nil {
			err = n.StartRedis(ctx)
		}
		nm.logf("restarted %s's redis empty", n)
	}
	if err != nil {
		// The redis may be paused or down under another fault.
		nm.logf("redis-loss on %s: %v", n, err)
	}
	return nil
}

// quarantined names the running members other than except that say they
// are quarantined, or that cannot say (down, paused, cut off).
func (nm *nemesis) quarantined(ctx context.Context, except *Node) string {
	var out []string
	for _, n := range nm.c.Nodes {
		if n == except {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := n.RaftInfo(ictx)
		cancel()
		if err != nil || info.Get("quarantined") != "0" {
			out = append(out, n.String())
		}
	}
	return strings.Join(out, ",")
}

// partition cuts the members apart: the leader alone, a random minority,
// a bridge (one node sees both halves, which do not see each other) or a
// ring (each node sees only its two neighbours).
func (nm *nemesis) partition(ctx context.Context) (string, error) {
	var slots []int
	for _, n := range nm.c.Nodes {
		slots = append(slots, n.Index+1)
	}
	nm.rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
	mode := nm.rng.IntN(4)
	if mode == 3 && len(slots) < 4 {
		mode = 2 // every node of a 3-ring is its neighbours' neighbour
	}
	switch mode {
	case 0:
		if l := nm.leader(ctx); l != nil {
			var rest []int
			for _, s := range slots {
				if s != l.Index+1 {
					rest = append(rest, s)
				}
			}
			return "isolating the leader", nm.cutApart([]int{l.Index + 1}, rest)
		}
		fallthrough
	case 1:
		k := 1 + nm.rng.IntN(len(slots)/2)
		return "minority/majority", nm.cutApart(slots[:k], slots[k:])
	case 2:
		mid := len(slots) / 2
		return fmt.Sprintf("bridge through slot %d", slots[0]), nm.cutApart(slots[1:mid+1], slots[mid+1:])
	default:
		n := len(slots)
		for i := 0; i < n; i++ {
			for j := i + 1; j < n; j++ {
				if j == i+1 || (i == 0 && j == n-1) {
					continue // neighbours on the ring
				}
				if err := nm.topo.Cut(slots[i], slots[j]); err != nil {
					return "", err
				}
			}
		}
		return fmt.Sprintf("ring %v", slots), nil
	}
}

// cutApart cuts every node of a from every node of b. Unlike
// Topology.Partition it leaves other namespaces alone, so a node joining
// during the partition is not cut off from everyone.
func (nm *nemesis) cutApart(a, b []int) error {
	for _, x := range a {
		for _, y := range b {
			if err := nm.topo.Cut(x, y); err != nil {
				return err
			}
		}
	}
	return nil
}

// memberCuts lists the cuts between members (spare namespaces are cut off
// from everything and would only clutter the log).
func (nm *nemesis) memberCuts() [][2]int {
	member := map[int]bool{}
	for _, n := range nm.c.Nodes {
		member[n.Index+1] = true
	}
	var out [][2]int
	for _, c := range nm.topo.Cuts() {
		if member[c[0]] && member[c[1]] {
			out = append(out, c)
		}
	}
	return out
}

// instant runs an operation that needs no healing: a forced snapshot, a
// leader transfer, or replacing a member with a new node.
func (nm *nemesis) instant(ctx context.Context, kind string) error {
	nm.count++
	switch kind {
	case "compact":
		n := nm.randomNode()
		// A node whose redis is down snapshots only once it is back; the
		// schedule does not wait for that.
		v, err := n.Do(ctx, 5*time.Second, "RAFT.DEBUG", "COMPACT")
		nm.logf("RAFT.DEBUG COMPACT on %s: %v %v", n, v, err)
	case "script":
		nm.runaway(ctx)
	case "redis-loss":
		return nm.loseRedisData(ctx)
	case "move":
		nm.moveSlots(ctx)
	case "member":
		l := nm.leader(ctx)
		if l == nil {
			nm.logf("membership change skipped: no leader")
			return nil
		}
		if nm.rng.IntN(2) == 0 || !nm.canAddNode() {
			n := nm.randomNode()
			if n == l || n.ID == "" {
				return nil
			}
			v, err := l.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER", n.ID)
			nm.logf("RAFT.TRANSFER_LEADER %s (%s) via %s: %v %v", n.ID, n, l, v, err)
			return nil
		}
		return nm.replace(ctx, l)
	}
	return nil
}

func (nm *nemesis) canAddNode() bool {
	used := len(nm.c.Nodes) + len(nm.c.gone)
	return nm.topo == nil || used < nm.topo.Nodes()
}

// replace removes a random follower and joins a new node in its place, so
// the cluster keeps its size. A removal whose outcome is unknown is
// settled by asking the leader for the members afterwards.
func (nm *nemesis) replace(ctx context.Context, l *Node) error {
	// A quarantined member (its WAL lost a tail) votes only once a leader
	// has repaired it: removing another member first could leave it and
	// one more, no majority that can elect.
	if q := nm.quarantined(ctx, nil); q != "" {
		nm.logf("no member replaced now (quarantined: %s)", q)
		return nil
	}
	var victim *Node
	for _, i := range nm.rng.Perm(len(nm.c.Nodes)) {
		if n := nm.c.Nodes[i]; n != l && n.ID != "" && n.ProxyRunning() {
			victim = n
			break
		}
	}
	if victim == nil {
		return nil
	}
	v, err := l.Do(ctx, 15*time.Second, "RAFT.NODE", "REMOVE", victim.ID)
	nm.logf("RAFT.NODE REMOVE %s (%s) via %s: %v %v", victim.ID, victim, l, v, err)
	if err != nil || strings.HasPrefix(v.Str, "TIMEOUT") {
		// The removal may still commit: settle asks the cluster later.
		nm.uncertain = append(nm.uncertain, victim)
		return nil
	}
	if v.Kind != '+' {
		return nil
	}
	nm.c.Forget(victim)
	if err := victim.StopProxy(10 * time.Second); err != nil {
		nm.logf("stopping removed %s: %v", victim, err)
	}
	n, err := nm.c.addNode(ctx, l)
	if err != nil {
		nm.logf("adding a node via %s: %v", l, err)
		if n != nil {
			nm.joining = append(nm.joining, n) // resumed after healing
		}
		return nil
	}
	nm.logf("joined %s in place of %s", n, victim)
	nm.w.setTargets(nm.addrs())
	return nil
}

// settle resolves removals whose outcome was unknown, once a leader
// answers: a node the leader no longer lists is forgotten and stopped, and
// a new node joins so that the cluster keeps its size.
func (nm *nemesis) settle(ctx context.Context) {
	if len(nm.uncertain) == 0 {
		return
	}
	var l *Node
	_ = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "a leader", func(ctx context.Context) error {
		if l = nm.leader(ctx); l == nil {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	if l == nil {
		return
	}
	info, err := l.RaftInfo(ctx)
	if err != nil {
		return
	}
	listed := map[string]bool{}
	for _, m := range info.Members {
		listed[m.ID] = true
	}
	for _, n := range nm.uncertain {
		if listed[n.ID] {
			nm.logf("%s is still a member: its removal did not happen", n)
			continue
		}
		nm.logf("%s was removed after all", n)
		nm.c.Forget(n)
		if err := n.StopProxy(10 * time.Second); err != nil {
			nm.logf("stopping removed %s: %v", n, err)
		}
	}
	nm.uncertain = nil
	for len(nm.c.Nodes) < nm.size && nm.canAddNode() {
		n, err := nm.c.addNode(ctx, l)
		if err != nil {
			nm.logf("adding a node via %s: %v", l, err)
			if n != nil {
				nm.joining = append(nm.joining, n)
			}
			break
		}
		nm.logf("joined %s to restore the cluster's size", n)
	}
	nm.w.setTargets(nm.addrs())
}

func (nm *nemesis) addrs() []string {
	var out []string
	for _, n := range nm.c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// healAll ends every fault: partitions, pauses, stopped processes, and a
// script still running or still to run.
func (nm *nemesis) healAll(ctx context.Context) error {
	var errs []string
	if nm.topo != nil {
		if err := nm.topo.Heal(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, n := range nm.c.Nodes {
		for _, p := range []*process{n.proxy, n.redis} {
			if p != nil && !p.Exited() {
				_ = p.Signal(syscall.SIGCONT)
			}
		}
		if n.redis != nil && n.redis.Exited() {
			if err := n.StartRedis(ctx); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if !n.ProxyRunning() {
			if err := n.StartProxy(ctx); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if nm.enabled("script") {
		nm.quiesceScripts(ctx)
	}
	for _, n := range nm.joining {
		if len(nm.c.Nodes) == 0 {
			break
		}
		// A join is resumed with the same node id, so one that was made
		// but not confirmed is found rather than made twice.
		if err := nm.c.join(ctx, n, nm.c.Nodes[0]); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		nm.logf("resumed the join of %s", n)
	}
	nm.joining = nil
	nm.settle(ctx)
	if len(nm.uncertain) > 0 {
		errs = append(errs, fmt.Sprintf("could not learn whether %v were removed", nm.uncertain))
	}
	nm.w.setTargets(nm.addrs())
	if len(errs) > 0 {
		return fmt.Errorf("healing: %s", strings.Join(errs, "; "))
	}
	return nil
}

// quiesceScripts kills the runaway scripts still running or still to run,
// with every process up. A script whose client got -TIMEOUT may commit
// later, once a leader is back, after a kill found nothing running (as in
// redis, SCRIPT KILL answers for this moment), and then it runs on every
// node until killed. So the kills go on until a write commits: its reply
// comes once its node has applied everything before it, so no script is
// left in the log unkilled.
func (nm *nemesis) quiesceScripts(ctx context.Context) {
	deadline := time.Now().Add(2 * time.Minute)
	for ctx.Err() == nil {
		if nm.killScripts(ctx, 20*time.Second) {
			nm.logf("killed a script still running at the end")
		}
		// The kill is decided before every node has carried it out: a node
		// shuts its redis down a moment later when the script had written.
		for range 30 {
			nm.restartStoppedRedis(ctx)
			sleep(ctx, 100*time.Millisecond)
		}
		err := nm.probeWrite(ctx)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			nm.logf("scripts: no write commits after the kills: %v", err)
			return
		}
	}
}

// probeWrite writes a key outside every workload through the leader.
func (nm *nemesis) probeWrite(ctx context.Context) error {
	l := nm.leader(ctx)
	if l == nil {
		return fmt.Errorf("no leader")
	}
	v, err := l.Do(ctx, 5*time.Second, "SET", "chaos:heal-probe", "1")
	if err != nil {
		return err
	}
	if v.Kind != '+' {
		return fmt.Errorf("SET through %s: %s", l, v)
	}
	return nil
}
