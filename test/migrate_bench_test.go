package test

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/slotmap"
)

// TestMigrationBench measures a live slot move (make bench-migrate): a
// third of the slots, holding MIGRATE_KEYS keys (1M by default, every
// tenth with a deadline), move between two shards of a 3-node cluster
// while clients run about 10k operations a second over those keys. It
// reports how long the move took, the operations' latency during it (a
// client's retries and redirects included: how long a key was out of
// reach), that no acknowledged write was lost and that the deadlines
// came along.
func TestMigrationBench(t *testing.T) {
	if os.Getenv("MIGRATE_BENCH") == "" {
		t.Skip("a benchmark of minutes: make bench-migrate (MIGRATE_BENCH=1)")
	}
	keys := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("MIGRATE_KEYS")); err == nil && v > 0 {
		keys = v
	}
	ctx := testContext(t, 30*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: 3})
	n0 := c.Nodes[0]
	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	waitShards(ctx, t, n0, 3)
	// The first shard's slots (0-5461) move to the last one's.
	const first, last = 0, 5460
	dst := ""
	v, err := (&Node{c: c, Addr: ownerAddr(ctx, t, n0, 16383)}).Do(ctx, 2*time.Second, "RAFT.INFO")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := parseRaftInfo(v.Str)
	dst = info.Get("cluster_id")

	// Load: keys of the moving slots only, every tenth with a deadline.
	names := make([]string, 0, keys)
	for i := 0; len(names) < keys; i++ {
		k := "m:" + strconv.Itoa(i)
		if s := slotmap.KeySlot([]byte(k)); first <= s && s <= last {
			names = append(names, k)
		}
	}
	at := time.Now().Add(2 * time.Hour).UnixMilli()
	start := time.Now()
	var wg sync.WaitGroup
	var loadErr atomic.Value
	const loaders = 8
	for w := range loaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * 2000; i < len(names); i += loaders * 2000 {
				pipe := cc.Pipeline()
				for j := i; j < min(i+2000, len(names)); j++ {
					if j%10 == 0 {
						pipe.Set(ctx, names[j], "0", 0)
						pipe.PExpireAt(ctx, names[j], time.UnixMilli(at+int64(j)))
					} else {
						pipe.Set(ctx, names[j], "0", 0)
					}
				}
				if _, err := pipe.Exec(ctx); err != nil {
					loadErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := loadErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d keys in %v", len(names), time.Since(start).Round(time.Millisecond))

	// The load: 200 clients, 50 operations a second each, half GETs and
	// half SETs; each client writes its own keys (i mod clients), with
	// rising values, so the last value it was told was written can be
	// checked.
	const clients, perSec = 200, 50
	type result struct {
		lat    []time.Duration // of the operations started during the move
		pre    []time.Duration // and before it
		failed int
		acked  map[string]int64
		tried  map[string]int64
		inMove int
		moved  bool
	}
	results := make([]result, clients)
	var moving atomic.Bool
	stop := make(chan struct{})
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			r := &results[w]
			r.acked, r.tried = map[string]int64{}, map[string]int64{}
			tick := time.NewTicker(time.Second / perSec)
			defer tick.Stop()
			for seq := int64(1); ; seq++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				i := rng.IntN(len(names)/clients)*clients + w
				k := names[i]
				during := moving.Load()
				if during {
					r.moved = true
				}
				t0 := time.Now()
				var err error
				if seq%2 == 0 {
					err = cc.Get(ctx, k).Err()
					if err == redis.Nil {
						err = nil
					}
				} else {
					r.tried[k] = seq
					err = cc.Set(ctx, k, seq, redis.KeepTTL).Err()
					if err == nil {
						r.acked[k] = seq
					}
				}
				d := time.Since(t0)
				if err != nil {
					r.failed++
				}
				if during {
					r.lat = append(r.lat, d)
					r.inMove++
				} else if !r.moved {
					r.pre = append(r.pre, d)
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	moving.Store(true)
	start = time.Now()
	if err := n0.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", first, last, dst).Err(); err != nil {
		t.Fatal(err)
	}
	waitMovesDone(ctx, t, c, 20*time.Minute)
	took := time.Since(start)
	moving.Store(false)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	var lat, pre []time.Duration
	failed, ops := 0, 0
	for _, r := range results {
		lat = append(lat, r.lat...)
		pre = append(pre, r.pre...)
		failed += r.failed
		ops += r.inMove
	}
	slices.Sort(lat)
	slices.Sort(pre)
	quant := func(lat []time.Duration, p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	pct := func(p float64) time.Duration { return quant(lat, p) }
	t.Logf("before the move: %d ops in 3 s, latency p50 %v p99 %v", len(pre), quant(pre, 0.5), quant(pre, 0.99))
	t.Logf("moved slots %d-%d (%d keys) in %v, %.0f ops/s during it; latency p50 %v p99 %v p99.9 %v max %v; %d failed",
		first, last, len(names), took.Round(time.Millisecond), float64(ops)/took.Seconds(),
		pct(0.5), pct(0.99), pct(0.999), pct(1), failed)

	// No acknowledged write lost: each key holds at least its client's
	// last acknowledged value, and at most its last tried one.
	lost, checked := 0, 0
	for _, r := range results {
		for k, a := range r.acked {
			v, err := cc.Get(ctx, k).Int64()
			checked++
			if err != nil || v < a || v > r.tried[k] {
				lost++
				if lost <= 5 {
					t.Errorf("%s = %d (%v): last acknowledged %d, last tried %d", k, v, err, a, r.tried[k])
				}
			}
		}
	}
	// Deadlines: a sample of the keys given one.
	ttlBad := 0
	for j := 0; j < len(names); j += 10 * 97 {
		d, err := cc.PExpireTime(ctx, names[j]).Result()
		if err != nil || d != time.Duration(at+int64(j))*time.Millisecond {
			ttlBad++
			if ttlBad <= 5 {
				t.Errorf("%s: deadline %v %v, want %d", names[j], d, err, at+int64(j))
			}
		}
	}
	if got := ownerShard(ctx, t, n0, first); got != ownerShard(ctx, t, n0, 16383) {
		t.Errorf("slot %d is %s's after the move", first, got)
	}
	t.Logf("checked %d written keys: %d lost; %d deadlines sampled, %d wrong", checked, lost, len(names)/970+1, ttlBad)
}
