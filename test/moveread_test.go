package test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/slotmap"
)

// TestReadsAsMovesBegin: a client that follows only -MOVED and -ASK, as
// redis-cli -c, sees no other error while a slot moves, and a read never
// misses a key that has left. Readers on every node of both shards
// pipeline GETs of one slot's keys, and writers SET them one at a time,
// with no retries, while the slot moves back and forth; each GET must
// return its key's value, -ASK or -MOVED, each SET +OK, -ASK or -MOVED.
//   - A read that ran on a node's redis while its slot began moving out is
//     answered from the log instead (conn.rerun): without it the readers
//     saw "TRYAGAIN the slot began moving while the read ran" (as
//     TestSlotMove's redis-cli -c once did in CI).
//   - A key being copied is still read at the source (apply.servedHere):
//     without it, "TRYAGAIN Multiple keys request during rehashing of
//     slot" for a GET.
//   - A write to a key being copied is proposed again (conn.retryLocked):
//     without it, the writers saw "TRYAGAIN a key of this command is being
//     copied to another shard" (67 times).
//   - While a shard has no leader (the leader balancer moves them), -MOVED
//     and -ASK name this node's port for it (Server.redirectTo): without
//     it, "CLUSTERDOWN No raft leader".
//
// A write in flight as leadership moves is proposed again to the new
// leader (raftnode's proposer.resend), or it would end in -TIMEOUT.
func TestReadsAsMovesBegin(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: 2})
	n0 := c.Nodes[0]
	ids := waitShards(ctx, t, n0, 2)
	const keys = 200
	slot := slotmap.KeySlot([]byte("{rd}"))
	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	for i := range keys {
		k := "{rd}:" + strconv.Itoa(i)
		if err := cc.Set(ctx, k, "v"+strconv.Itoa(i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	home := srcShardID(ctx, t, n0, ownerShard(ctx, t, n0, slot))
	other := ids[0]
	if other == home {
		other = ids[1]
	}

	slots, err := n0.Client().ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]bool{}
	for _, s := range slots {
		for _, nd := range s.Nodes {
			addrs[nd.Addr] = true
		}
	}
	stop := make(chan struct{})
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[string]int{}
		bad    []string
	)
	// record counts one reply: what, as the right value or an error that
	// only redirects; anything else is bad, described by detail.
	record := func(prefix string, ok bool, err error, detail func() string) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && ok:
			counts[prefix+"OK"]++
		case err != nil && (strings.HasPrefix(err.Error(), "ASK ") || strings.HasPrefix(err.Error(), "MOVED ")):
			counts[prefix+firstWord(err)]++
		default:
			counts[prefix+"bad"]++
			if len(bad) < 10 {
				bad = append(bad, time.Now().Format("15:04:05.000")+" "+detail())
			}
		}
	}
	// client runs body with its step number on a connection to addr that
	// never retries, until stop.
	client := func(addr string, body func(cl *redis.Client, j int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, ReadTimeout: 10 * time.Second})
			defer cl.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				body(cl, j)
			}
		}()
	}
	for addr := range addrs {
		for range 2 {
			client(addr, func(cl *redis.Client, j int) {
				pipe := cl.Pipeline()
				cmds := make([]*redis.StringCmd, 16)
				for i := range cmds {
					cmds[i] = pipe.Get(ctx, "{rd}:"+strconv.Itoa((j*16+i)%keys))
				}
				pipe.Exec(ctx)
				for i, cmd := range cmds {
					v, err := cmd.Result()
					record("GET ", v == "v"+strconv.Itoa((j*16+i)%keys), err, func() string {
						return fmt.Sprintf("%s GET %s: %q %v", addr, cmd.Args()[1], v, err)
					})
				}
			})
		}
	}
	// Writers that wait for each reply, as redis-cli -c: a key being copied
	// that moment makes the proxy propose the write again, so they see no
	// -TRYAGAIN either. They write what the key holds, which the readers
	// check.
	for addr := range addrs {
		client(addr, func(cl *redis.Client, j int) {
			i := (j * 7) % keys
			t0 := time.Now()
			err := cl.Set(ctx, "{rd}:"+strconv.Itoa(i), "v"+strconv.Itoa(i), 0).Err()
			record("SET ", true, err, func() string {
				return fmt.Sprintf("(after %v) %s SET {rd}:%d: %v", time.Since(t0).Round(time.Millisecond), addr, i, err)
			})
		})
	}

	const moves = 16
	to := other
	for i := range moves {
		if err := n0.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", slot, slot, to).Err(); err != nil {
			t.Fatalf("move %d: MOVE-SLOTS %d %d %s: %v", i, slot, slot, to, err)
		}
		waitMovesDone(ctx, t, c, 30*time.Second)
		time.Sleep(100 * time.Millisecond)
		to = map[string]string{home: other, other: home}[to]
	}
	close(stop)
	wg.Wait()
	t.Logf("%d moves of slot %d; outcomes %v", moves, slot, counts)
	if len(bad) > 0 {
		t.Errorf("%d GETs and %d SETs neither answered nor redirected, such as %q", counts["GET bad"], counts["SET bad"], bad)
	}
	if counts["GET OK"] == 0 || counts["GET ASK"]+counts["GET MOVED"] == 0 || counts["SET OK"] == 0 {
		t.Errorf("the clients saw %v: not values, redirections and writes", counts)
	}
	c.AssertShardsIdentical(ctx)
}
