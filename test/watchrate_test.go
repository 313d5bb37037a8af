package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestWatchAbortRates measures how often WATCH's one difference from redis
// shows (docs/SEMANTICS.md): a write addressed to a watched key that
// changes nothing aborts EXEC here, not in redis. Clients increment shared
// counters optimistically (WATCH, GET, MULTI, SET, EXEC, retried on abort)
// on a stock redis-server and through a follower; in the second half other
// clients send SETNX to the counters, which exist, so it changes nothing.
// Aborts per commit are logged side by side; what is checked is that every
// counter ends at the number of increments that committed.
func TestWatchAbortRates(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a measurement with a 3-node cluster")
	}
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	for _, noise := range []bool{false, true} {
		for _, target := range []struct{ name, addr string }{{"redis", stock}, {"raftproxy", followers[0].Addr}} {
			commits, aborts, err := watchIncrements(ctx, target.addr, fmt.Sprintf("wr:%s:%v", target.name, noise), noise)
			if err != nil {
				t.Fatalf("%s: %v", target.name, err)
			}
			t.Logf("%-9s no-op writes to the watched keys: %-5v %d commits, %d aborts (%.3f per commit)",
				target.name, noise, commits, aborts, float64(aborts)/float64(commits))
		}
	}
}

func watchIncrements(ctx context.Context, addr, prefix string, noise bool) (commits, aborts int64, err error) {
	const clients, each, counters = 6, 50, 2
	var wg sync.WaitGroup
	var nc, na atomic.Int64
	errc := make(chan error, clients)
	stop := make(chan struct{})
	if noise {
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := newClient(addr, 1)
				defer cl.Close()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					cl.SetNX(ctx, fmt.Sprintf("%s:%d", prefix, (i+k)%counters), "0", 0)
				}
			}()
		}
	}
	var workers sync.WaitGroup
	for i := range clients {
		workers.Add(1)
		go func() {
			defer workers.Done()
			cl := newClient(addr, 1)
			defer cl.Close()
			for j := 0; j < each; j++ {
				key := fmt.Sprintf("%s:%d", prefix, (i+j)%counters)
				for {
					err := cl.Watch(ctx, func(tx *redis.Tx) error {
						v, err := tx.Get(ctx, key).Int64()
						if err != nil && !errors.Is(err, redis.Nil) {
							return err
						}
						_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
							p.Set(ctx, key, strconv.FormatInt(v+1, 10), 0)
							return nil
						})
						return err
					}, key)
					if err == nil {
						nc.Add(1)
						break
					}
					if !errors.Is(err, redis.TxFailedErr) {
						errc <- fmt.Errorf("increment %s: %w", key, err)
						return
					}
					na.Add(1)
				}
			}
		}()
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, 0, err
	}
	cl := newClient(addr, 1)
	defer cl.Close()
	var total int64
	for k := range counters {
		v, err := cl.Get(ctx, fmt.Sprintf("%s:%d", prefix, k)).Int64()
		if err != nil {
			return 0, 0, err
		}
		total += v
	}
	if total != nc.Load() {
		return 0, 0, fmt.Errorf("counters sum to %d, but %d increments committed", total, nc.Load())
	}
	return nc.Load(), na.Load(), nil
}
