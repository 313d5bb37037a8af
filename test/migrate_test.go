package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
)

// moveLoad is a workload of INCRs on counters and SETs of new keys through
// a ClusterClient, which follows -MOVED and -ASK itself: what it was told
// succeeded is counted, and what ended in an error may or may not have
// taken effect.
type moveLoad struct {
	mu      sync.Mutex
	acked   map[string]int64
	unknown map[string]int64
	created []string
	errs    map[string]int
	samples []string
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startMoveLoad(ctx context.Context, cc *redis.ClusterClient, workers int, prefix string) *moveLoad {
	l := &moveLoad{acked: map[string]int64{}, unknown: map[string]int64{}, errs: map[string]int{}, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if i%4 == 0 {
					k := fmt.Sprintf("%snew:%d:%d", prefix, w, i)
					err := cc.Set(ctx, k, k, 0).Err()
					l.mu.Lock()
					if err == nil {
						l.created = append(l.created, k)
					} else {
						l.errs[firstWord(err)]++
					}
					l.mu.Unlock()
					continue
				}
				k := prefix + "ctr:" + strconv.Itoa(rng.IntN(300))
				err := cc.Incr(ctx, k).Err()
				l.mu.Lock()
				if err == nil {
					l.acked[k]++
				} else {
					l.unknown[k]++
					l.errs[firstWord(err)]++
					if l.errs[firstWord(err)] < 4 {
						l.samples = append(l.samples, fmt.Sprintf("%s (slot %d) %v at %s", k, slotmap.KeySlot([]byte(k)), err, time.Now().Format("15:04:05.000")))
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func firstWord(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == ' ' {
			return s[:i]
		}
	}
	return s
}

func (l *moveLoad) end() {
	close(l.stop)
	l.wg.Wait()
}

// check fails t unless every counter holds at least what was acknowledged
// and at most that plus what may have taken effect, and every acknowledged
// new key exists. With a node killed the upper bound is not checked:
// go-redis resends a command whose connection broke, so one increment may
// be applied twice though the client saw one success.
func (l *moveLoad) check(ctx context.Context, t *testing.T, cc *redis.ClusterClient, killed bool) {
	t.Helper()
	for k, n := range l.acked {
		v, err := cc.Get(ctx, k).Int64()
		if err != nil || v < n || (!killed && v > n+l.unknown[k]) {
			t.Errorf("%s = %d (%v): %d acknowledged, %d unknown", k, v, err, n, l.unknown[k])
		}
	}
	for _, k := range l.created {
		if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
			t.Errorf("acknowledged %s = %q, %v", k, v, err)
		}
	}
	var total int64
	for _, n := range l.acked {
		total += n
	}
	t.Logf("workload: %d INCRs and %d new keys acknowledged; errors %v %q", total, len(l.created), l.errs, l.samples)
}

// shardList is RAFT.SHARD LIST as ids (by index order of rows), owners and
// moves in progress.
func shardList(ctx context.Context, n *Node) (ids []string, moves int, err error) {
	rows, err := n.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
	if err != nil {
		return nil, 0, err
	}
	for _, r := range rows {
		row, _ := r.([]any)
		if len(row) != 5 {
			return nil, 0, fmt.Errorf("row %v", row)
		}
		id, _ := row[0].(string)
		ids = append(ids, id)
		mv, _ := row[4].([]any)
		moves += len(mv)
	}
	return ids, moves, nil
}

// waitProgress waits until the move in progress moved some keys.
func waitProgress(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	err := waitFor(ctx, 30*time.Second, 10*time.Millisecond, "a move to make progress", func(ctx context.Context) error {
		rows, err := n.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
		if err != nil {
			return err
		}
		for _, r := range rows {
			row, _ := r.([]any)
			moves, _ := row[4].([]any)
			for _, m := range moves {
				if mv, _ := m.([]any); len(mv) == 6 && mv[4].(int64) > 0 {
					return nil
				}
			}
		}
		return errors.New("no keys moved yet")
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitShards waits until RAFT.SHARD LIST on n lists count shards, and
// returns their ids.
func waitShards(ctx context.Context, t *testing.T, n *Node, count int) []string {
	t.Helper()
	var ids []string
	err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, fmt.Sprintf("%d shards", count), func(ctx context.Context) error {
		var err error
		if ids, _, err = shardList(ctx, n); err == nil && len(ids) != count {
			err = fmt.Errorf("shards %v", ids)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func waitMovesDone(ctx context.Context, t *testing.T, c *Cluster, timeout time.Duration) {
	t.Helper()
	err := waitFor(ctx, timeout, 200*time.Millisecond, "the moves to end", func(ctx context.Context) error {
		for _, n := range c.Running() {
			if _, moves, err := shardList(ctx, n); err != nil || moves != 0 {
				return fmt.Errorf("%s: %d moves, %v", n, moves, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// slotMaster returns the master of slot, by CLUSTER SLOTS through n.
func slotMaster(ctx context.Context, t *testing.T, n *Node, slot int) redis.ClusterNode {
	t.Helper()
	slots, err := n.Client().ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Start <= slot && slot <= s.End {
			return s.Nodes[0]
		}
	}
	t.Fatalf("slot %d is owned by none: %v", slot, slots)
	return redis.ClusterNode{}
}

// ownerShard returns the shard that owns slot: the cluster-id part of its
// master's node id.
func ownerShard(ctx context.Context, t *testing.T, n *Node, slot int) string {
	t.Helper()
	return slotMaster(ctx, t, n, slot).ID[:24]
}

// ownerAddr returns the address of the master of slot.
func ownerAddr(ctx context.Context, t *testing.T, n *Node, slot int) string {
	t.Helper()
	return slotMaster(ctx, t, n, slot).Addr
}

// TestSlotMove: RAFT.SHARD MOVE-SLOTS moves a range of slots between two
// shards while clients write: keys move with their values, types and
// absolute deadlines; counters incremented throughout lose no
// acknowledged increment; new keys of the moving slots are writable (the
// ClusterClient follows -ASK); the target then owns the slots. A cancelled
// move runs back and leaves the slots with their source. A move whose
// driver, the primary group's leader, is stopped halfway is finished by
// the next leader. Every shard ends identical on every node.
func TestSlotMove(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: 2})
	n0 := c.Nodes[0]
	ids := waitShards(ctx, t, n0, 2)
	// The shard owning slot 16383 is the target of every move here.
	srcShard, dstShard := ownerShard(ctx, t, n0, 0), ownerShard(ctx, t, n0, 16383)
	dstAddr := ownerAddr(ctx, t, n0, 16383)
	v, err := (&Node{c: c, Addr: dstAddr}).Do(ctx, 2*time.Second, "RAFT.INFO")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := parseRaftInfo(v.Str)
	dst := info.Get("cluster_id")
	if !slices.Contains(ids, dst) || srcShard == dstShard {
		t.Fatalf("shards %v; the owner of 16383 (%s) is %q, of 0 %s", ids, dstAddr, dst, srcShard)
	}

	// Only database 0, as in Redis Cluster: a key elsewhere would be out
	// of every move's reach.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"SELECT", "1"}, "ERR SELECT is not allowed in cluster mode"},
		{[]string{"MOVE", "x", "1"}, "ERR MOVE is not allowed in cluster mode"},
		{[]string{"SWAPDB", "0", "1"}, "ERR SWAPDB is not allowed in cluster mode"},
		{[]string{"COPY", "x", "y", "DB", "1"}, "ERR Copying to another database is not allowed in cluster mode"},
	} {
		if v, err := (&Node{c: c, Addr: dstAddr}).Do(ctx, 2*time.Second, tc.args...); v.Kind != '-' || v.Str != tc.want {
			t.Errorf("%v: %v %v, want -%s", tc.args, v, err, tc.want)
		}
	}

	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	// Keys of every type, some with deadlines, over all slots.
	deadline := time.Now().Add(time.Hour).UnixMilli()
	type seeded struct {
		kind string
		dl   int64
	}
	seed := map[string]seeded{}
	for i := range 1500 {
		k := "s:" + strconv.Itoa(i)
		var err error
		switch i % 4 {
		case 0:
			err = cc.Set(ctx, k, k, 0).Err()
			seed[k] = seeded{"string", -1}
		case 1:
			err = cc.Set(ctx, k, k, 0).Err()
			if err == nil {
				err = cc.PExpireAt(ctx, k, time.UnixMilli(deadline+int64(i))).Err()
			}
			seed[k] = seeded{"string", deadline + int64(i)}
		case 2:
			err = cc.HSet(ctx, k, "f", k).Err()
			seed[k] = seeded{"hash", -1}
		case 3:
			err = cc.RPush(ctx, k, k, "x").Err()
			seed[k] = seeded{"list", -1}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Bulk keys in slots 4096-8191, so that the later moves take a while.
	var bulk []string
	for i := 0; len(bulk) < 20000; i++ {
		k := "bulk:" + strconv.Itoa(i)
		if s := slotmap.KeySlot([]byte(k)); 4096 <= s && s <= 8191 {
			bulk = append(bulk, k)
		}
	}
	for i := 0; i < len(bulk); i += 500 {
		pipe := cc.Pipeline()
		for _, k := range bulk[i:min(i+500, len(bulk))] {
			pipe.Set(ctx, k, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkSeeded := func() {
		t.Helper()
		for i := 0; i < len(bulk); i += 500 {
			pipe := cc.Pipeline()
			cmds := map[string]*redis.StringCmd{}
			for _, k := range bulk[i:min(i+500, len(bulk))] {
				cmds[k] = pipe.Get(ctx, k)
			}
			pipe.Exec(ctx)
			for k, c := range cmds {
				if v, err := c.Result(); v != k {
					t.Fatalf("%s = %q, %v", k, v, err)
				}
			}
		}
		for k, s := range seed {
			typ, err := cc.Type(ctx, k).Result()
			if err != nil || typ != s.kind {
				t.Errorf("%s: type %q %v, want %s", k, typ, err, s.kind)
				continue
			}
			dl, err := cc.PExpireTime(ctx, k).Result()
			if err != nil || (s.dl < 0 && dl != -1) || (s.dl >= 0 && dl != time.Duration(s.dl)*time.Millisecond) {
				t.Errorf("%s: deadline %v %v, want %d", k, dl, err, s.dl)
			}
		}
	}

	move := func(first, last int, to string) int64 {
		t.Helper()
		v, err := n0.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", first, last, to).Int64()
		if err != nil {
			t.Fatalf("MOVE-SLOTS %d %d %s: %v", first, last, to, err)
		}
		return v
	}

	// 1. A move under load.
	load := startMoveLoad(ctx, cc, 6, "a:")
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	move(0, 4095, dst)
	waitMovesDone(ctx, t, c, 90*time.Second)
	t.Logf("slots 0-4095 moved in %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	load.end()
	if got := ownerShard(ctx, t, n0, 100); got != dstShard {
		t.Errorf("slot 100 is %s's after the move, want %s", got, dstShard)
	}
	if got := ownerShard(ctx, t, n0, 5000); got != srcShard {
		t.Errorf("slot 5000 is %s's, want %s", got, srcShard)
	}
	load.check(ctx, t, cc, false)
	checkSeeded()
	// The source answers -MOVED for a moved slot's key, the target serves it.
	key := "s:0"
	for i := 0; slotmap.KeySlot([]byte(key)) > 4095; i++ {
		key = "s:" + strconv.Itoa(i)
	}
	srcAddr := ownerAddr(ctx, t, n0, 5000)
	if v, err := (&Node{c: c, Addr: srcAddr}).Do(ctx, 2*time.Second, "GET", key); v.Kind != '-' || !strings.HasPrefix(v.Str, "MOVED ") {
		t.Errorf("GET %s on the source: %v %v, want -MOVED", key, v, err)
	}

	// 2. A cancelled move runs back.
	load = startMoveLoad(ctx, cc, 4, "b:")
	id := move(4096, 6143, dst)
	waitProgress(ctx, t, n0)
	if err := n0.Client().Do(ctx, "RAFT.SHARD", "CANCEL-MOVE", id).Err(); err != nil {
		t.Fatalf("CANCEL-MOVE %d: %v", id, err)
	}
	waitMovesDone(ctx, t, c, 90*time.Second)
	load.end()
	if got := ownerShard(ctx, t, n0, 5000); got != srcShard {
		t.Errorf("slot 5000 is %s's after the cancel, want %s", got, srcShard)
	}
	load.check(ctx, t, cc, false)
	checkSeeded()

	// 3. The primary group's leader, which drives the move, stops halfway.
	load = startMoveLoad(ctx, cc, 4, "c:")
	move(6144, 8191, dst)
	waitProgress(ctx, t, n0)
	var driver *Node
	for _, n := range c.Nodes {
		v, err := n.Do(ctx, 2*time.Second, "RAFT.INFO")
		if err != nil {
			t.Fatal(err)
		}
		info, _ := parseRaftInfo(v.Str)
		if info.Get("role") == "leader" {
			driver = n
		}
	}
	if driver == nil {
		t.Fatal("no primary leader")
	}
	if err := driver.KillProxy(); err != nil {
		t.Fatal(err)
	}
	var alive *Node
	for _, n := range c.Nodes {
		if n != driver {
			alive = n
		}
	}
	cc2 := newClusterClient(alive.Addr)
	defer cc2.Close()
	err = waitFor(ctx, 90*time.Second, 300*time.Millisecond, "the move to end without its first driver", func(ctx context.Context) error {
		_, moves, err := shardList(ctx, alive)
		if err == nil && moves != 0 {
			err = fmt.Errorf("%d moves", moves)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	load.end()
	if err := driver.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	waitMovesDone(ctx, t, c, 60*time.Second)
	if got := ownerShard(ctx, t, alive, 7000); got != dstShard {
		t.Errorf("slot 7000 is %s's after the move, want %s", got, dstShard)
	}
	load.check(ctx, t, cc2, true)
	cc = cc2
	checkSeeded()

	// 4. Every kind of cluster client through a move: slots 0-4095 go back,
	// with 30000 more keys so that the move lasts a few seconds.
	seedSlotKeys(ctx, t, cc, "more:", 30000, slotmap.Range{First: 0, Last: 4095})
	clientsDone := runClientsDuring(ctx, t, c, alive)
	time.Sleep(time.Second)
	move(0, 4095, srcShardID(ctx, t, alive, srcShard))
	waitMovesDone(ctx, t, c, 90*time.Second)
	<-clientsDone
	if got := ownerShard(ctx, t, alive, 100); got != srcShard {
		t.Errorf("slot 100 is %s's after moving back, want %s", got, srcShard)
	}
	checkSeeded()
	c.AssertShardsIdentical(ctx)
}

// srcShardID is the shard id (RAFT.INFO cluster_id) whose node ids in
// CLUSTER SLOTS begin with prefix.
func srcShardID(ctx context.Context, t *testing.T, n *Node, prefix string) string {
	t.Helper()
	ids, _, err := shardList(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if strings.HasSuffix(prefix, id) {
			return id
		}
	}
	t.Fatalf("no shard of %v is %s", ids, prefix)
	return ""
}

// runClientsDuring runs, for about eight seconds, go-redis ClusterClients
// (plain, ReadOnly, RouteByLatency, TxPipeline), redis-py's RedisCluster,
// redis-cli -c and redis-benchmark --cluster, each checking what it reads
// back; the channel closes when all are done.
func runClientsDuring(ctx context.Context, t *testing.T, c *Cluster, n *Node) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	until := time.Now().Add(8 * time.Second)
	for _, opts := range []struct {
		name                     string
		readOnly, routeByLatency bool
	}{{"plain", false, false}, {"ReadOnly", true, false}, {"RouteByLatency", true, true}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := newClusterClient(n.Addr).Options()
			o.ReadOnly, o.RouteByLatency = opts.readOnly, opts.routeByLatency
			cc := redis.NewClusterClient(o)
			defer cc.Close()
			ops := 0
			for i := 0; time.Now().Before(until); i++ {
				k := fmt.Sprintf("%s:%d", opts.name, i%2000)
				if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
					t.Errorf("%s: SET %s: %v", opts.name, k, err)
					return
				}
				// A replica's read is linearizable too, through a move too.
				if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
					t.Errorf("%s: GET %s = %d, %v; want %d", opts.name, k, v, err, i)
					return
				}
				ops++
			}
			t.Logf("go-redis %s: %d SET+GET pairs", opts.name, ops)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		cc := newClusterClient(n.Addr)
		defer cc.Close()
		txs := 0
		for i := 0; time.Now().Before(until); i++ {
			var incr *redis.IntCmd
			k := fmt.Sprintf("{tx%d}", i%500)
			var err error
			for try := 0; try < 50; try++ {
				_, err = cc.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, k+"a", i, 0)
					incr = p.Incr(ctx, k+"n")
					return nil
				})
				// A transaction whose slot's keys are split between the
				// shards that moment is refused whole: it is sent again,
				// as with Redis Cluster.
				if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("TxPipeline: %v", err)
				return
			}
			if incr.Val() != int64(i/500+1) {
				t.Errorf("TxPipeline: INCR %sn = %d, want %d", k, incr.Val(), i/500+1)
				return
			}
			txs++
		}
		t.Logf("go-redis TxPipeline: %d transactions", txs)
	}()
	host, port, _ := net.SplitHostPort(n.Addr)
	if py, err := exec.LookPath("/usr/bin/python3"); err == nil && exec.Command(py, "-c", "from redis.cluster import RedisCluster").Run() == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.CommandContext(ctx, py, "-c", redisPyDuring, host, port, "8").CombinedOutput()
			if err != nil {
				t.Errorf("redis-py RedisCluster: %v\n%s", err, out)
				return
			}
			// redis-py logs each -ASK it followed, with a traceback; its
			// own last line is the count.
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			asks := strings.Count(string(out), "AskError\n")
			if last := lines[len(lines)-1]; !strings.HasSuffix(last, "SET+GET pairs") {
				t.Errorf("redis-py ended with %q", last)
			} else {
				t.Logf("redis-py: %s, %d -ASK followed", last, asks)
			}
		}()
	} else {
		t.Log("redis-py is not installed for /usr/bin/python3 (make deps installs python3-redis): its part is skipped")
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(until); i++ {
			k := "cli:" + strconv.Itoa(i%300)
			out, err := exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "SET", k, strconv.Itoa(i)).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "OK" {
				t.Errorf("redis-cli -c SET %s: %v %q", k, err, out)
				return
			}
			out, err = exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "GET", k).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(i) {
				t.Errorf("redis-cli -c GET %s: %v %q, want %d", k, err, out, i)
				return
			}
		}
	}()
	if _, err := exec.LookPath("redis-benchmark"); err == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.CommandContext(ctx, "redis-benchmark", "--cluster", "-h", host, "-p", port, "-n", "20000", "-c", "10", "-t", "set,get", "-q").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "SET:") || !strings.Contains(string(out), "GET:") {
				t.Errorf("redis-benchmark --cluster: %v\n%s", err, out)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// redisPyDuring writes and reads back keys for argv[3] seconds.
const redisPyDuring = `
import sys, time
from redis.cluster import RedisCluster
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rc = RedisCluster(host=host, port=port, decode_responses=True)
end, n = time.time() + secs, 0
while time.time() < end:
    k = "py:%d" % (n % 2000)
    rc.set(k, str(n))
    got = rc.get(k)
    assert got == str(n), (k, got, n)
    n += 1
print("%d SET+GET pairs" % n)
`

// TestShardAddRemove: RAFT.SHARD ADD makes an empty shard that every node
// joins by itself (it holds every shard); slots and keys move into it and
// out again; RAFT.SHARD REMOVE refuses a shard that owns slots, and
// removes an empty one: every node stops its group, frees its port and
// deletes its data.
func TestShardAddRemove(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: 2})
	n0 := c.Nodes[0]
	waitShards(ctx, t, n0, 2)
	if v, err := n0.Do(ctx, 2*time.Second, "RAFT.SHARD", "ADD", "123"); v.Kind != '-' || !strings.Contains(v.Str, "not a voting member") {
		t.Errorf("ADD on a node that is not a member: %v %v", v, err)
	}
	v, err := c.Nodes[1].Do(ctx, 30*time.Second, "RAFT.SHARD", "ADD")
	if err != nil || v.Kind != '$' {
		t.Fatalf("RAFT.SHARD ADD: %v %v", v, err)
	}
	added := v.Str
	err = waitFor(ctx, 60*time.Second, 200*time.Millisecond, "every node in the new shard", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			v, err := (&Node{c: c, Addr: proxy.ShardAddr(n.Addr, 2)}).Do(ctx, 2*time.Second, "RAFT.INFO")
			if err != nil {
				return err
			}
			info, _ := parseRaftInfo(v.Str)
			if info.Get("cluster_id") != added || info.Get("num_voting_nodes") != "3" {
				return fmt.Errorf("%s: shard 2 is %s with %s voters", n, info.Get("cluster_id"), info.Get("num_voting_nodes"))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	var keys []string
	for i := 0; len(keys) < 200; i++ {
		if k := "add:" + strconv.Itoa(i); slotmap.KeySlot([]byte(k)) < 1000 {
			keys = append(keys, k)
			if err := cc.Set(ctx, k, k, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	moveTo := func(to string) {
		t.Helper()
		if err := n0.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", 0, 999, to).Err(); err != nil {
			t.Fatalf("MOVE-SLOTS 0 999 %s: %v", to, err)
		}
		waitMovesDone(ctx, t, c, 60*time.Second)
		for _, k := range keys {
			if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
				t.Fatalf("after moving to %s: %s = %q, %v", to, k, v, err)
			}
		}
	}
	from := ownerShard(ctx, t, n0, 0)
	// A client subscribed to shard channels of the source: the one whose
	// slot moves is ended by the server ("sunsubscribe", as redis does when
	// a slot leaves a node), the other stays.
	chanIn := func(lo, hi int) string {
		for i := 0; ; i++ {
			if ch := "sch:" + strconv.Itoa(i); slotmap.KeySlot([]byte(ch)) >= lo && slotmap.KeySlot([]byte(ch)) <= hi {
				return ch
			}
		}
	}
	moved, kept := chanIn(0, 999), chanIn(1000, 4000)
	if ownerShard(ctx, t, n0, slotmap.KeySlot([]byte(kept))) != from {
		t.Fatalf("slots 0 and %d belong to different shards", slotmap.KeySlot([]byte(kept)))
	}
	subc := redis.NewClient(&redis.Options{Addr: ownerAddr(ctx, t, n0, 0), Protocol: 2, DisableIdentity: true})
	defer subc.Close()
	ssub := subc.SSubscribe(ctx, moved, kept)
	defer ssub.Close()
	for range 2 {
		if m, err := ssub.ReceiveTimeout(ctx, 10*time.Second); err != nil {
			t.Fatalf("SSUBSCRIBE confirmation: %v %v", m, err)
		}
	}
	moveTo(added)
	if m, err := ssub.ReceiveTimeout(ctx, 10*time.Second); err != nil {
		t.Errorf("no sunsubscribe after the channel's slot moved away: %v", err)
	} else if sub, ok := m.(*redis.Subscription); !ok || sub.Kind != "sunsubscribe" || sub.Channel != moved || sub.Count != 1 {
		t.Errorf("after the channel's slot moved away: %#v, want sunsubscribe %s 1", m, moved)
	}
	if err := cc.SPublish(ctx, kept, "still here").Err(); err != nil {
		t.Fatal(err)
	}
	if m, err := ssub.ReceiveTimeout(ctx, 10*time.Second); err != nil {
		t.Errorf("the shard channel whose slot stayed: %v", err)
	} else if msg, ok := m.(*redis.Message); !ok || msg.Channel != kept || msg.Payload != "still here" {
		t.Errorf("the shard channel whose slot stayed: %#v", m)
	}
	if got := ownerShard(ctx, t, n0, 0); !strings.HasSuffix(got, added) {
		t.Fatalf("slot 0 is %s's, want the new shard %s", got, added)
	}
	if v, _ := n0.Do(ctx, 5*time.Second, "RAFT.SHARD", "REMOVE", added); v.Kind != '-' || !strings.Contains(v.Str, "owns slots") {
		t.Errorf("REMOVE of a shard owning slots: %v", v)
	}
	moveTo(srcShardID(ctx, t, n0, from))
	if v, err := n0.Do(ctx, 5*time.Second, "RAFT.SHARD", "REMOVE", added); err != nil || v.Str != "OK" {
		t.Fatalf("REMOVE %s: %v %v", added, v, err)
	}
	err = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "the removed shard gone from every node", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if ids, _, err := shardList(ctx, n); err != nil || len(ids) != 2 {
				return fmt.Errorf("%s: shards %v, %v", n, ids, err)
			}
			if _, err := net.DialTimeout("tcp", proxy.ShardAddr(n.Addr, 2), time.Second); err == nil {
				return fmt.Errorf("%s still serves the removed shard's port", n)
			}
			if _, err := os.Stat(filepath.Join(n.DataDir, "shards", "2")); err == nil {
				return fmt.Errorf("%s keeps the removed shard's data", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.AssertShardsIdentical(ctx)
}

// seedSlotKeys writes count keys named prefix<i> of the slots r, each
// holding its name, through cc in one pipeline, and returns them.
func seedSlotKeys(ctx context.Context, t *testing.T, cc *redis.ClusterClient, prefix string, count int, r slotmap.Range) []string {
	t.Helper()
	var keys []string
	for i := 0; len(keys) < count; i++ {
		k := prefix + strconv.Itoa(i)
		if s := slotmap.KeySlot([]byte(k)); r.First <= s && s <= r.Last {
			keys = append(keys, k)
		}
	}
	pipe := cc.Pipeline()
	for _, k := range keys {
		pipe.Set(ctx, k, k, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("seeding %d keys of slots %s: %v", count, r, err)
	}
	return keys
}
