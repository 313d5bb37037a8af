package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/proxy"

	"github.com/raftproxy/raftproxy/test/chaoscheck"
	"github.com/raftproxy/raftproxy/test/lincheck"
)

// The chaos workloads run together, on disjoint keys, from every client:
// registers (SET/GET, checked by porcupine), list-append transactions
// (MULTI; RPUSH; LRANGE; EXEC, as Jepsen's RedisRaft workload), counters
// (INCR/GET) and keys with deadlines (SET PXAT, GET, PEXPIREAT, PERSIST,
// APPEND, GETEX, checked by porcupine against the wall clock; and relative
// TTLs, SET PX, INCR, EXPIRE NX/XX/GT/LT, GETEX EX, whose keys are checked
// for being the same on every node).
const (
	registerKeys = 3
	listKeys     = 4
	counterKeys  = 2
	ttlKeys      = 4
	// A list key takes this many appends before clients move on to the
	// next one, so LRANGE stays cheap however long the run.
	appendsPerList = 400
)

// workload is the clients of one chaos run and what they recorded.
type workload struct {
	start   time.Time
	targets atomic.Pointer[[]string] // proxy addresses clients may use
	stop    chan struct{}
	wg      sync.WaitGroup

	registers lincheck.History
	ttl       lincheck.TTLHistory

	mu       sync.Mutex
	appends  []chaoscheck.AppendOp
	counters []chaoscheck.CounterOp
	nextVal  atomic.Int64 // unique appended values
	listBase atomic.Int64 // appends so far, to pick the current list keys

	// shardOf, in a sharded cluster, is the index of the shard that owns
	// a key: clients send it to that shard's port of the node they use.
	// learn takes a slot's new owner from a -MOVED.
	shardOf func(key string) int
	learn   func(error)
	// holders are the first ports of a placed shard's nodes (nil: all).
	holders func(shard int) []string
}

func (w *workload) now() int64 { return time.Since(w.start).Nanoseconds() }

func (w *workload) setTargets(addrs []string) {
	cp := append([]string(nil), addrs...)
	w.targets.Store(&cp)
}

// startWorkload runs clients goroutines until stop; client i prefers node
// i mod n, as Jepsen binds a client to a node. router, when not nil, is
// the sharded cluster's slot routing.
func startWorkload(seed uint64, clients int, addrs []string, router *slotRouter) *workload {
	redis.SetLogger(quietLogger{})
	w := &workload{start: time.Now(), stop: make(chan struct{})}
	if router != nil {
		w.shardOf, w.learn, w.holders = router.of, router.learn, router.nodesOf
	}
	w.setTargets(addrs)
	for i := 0; i < clients; i++ {
		w.wg.Add(1)
		go func(id int) {
			defer w.wg.Done()
			w.client(id, rand.New(rand.NewPCG(seed, uint64(id)+1)))
		}(i)
	}
	return w
}

func (w *workload) Stop() {
	close(w.stop)
	w.wg.Wait()
}

// quietLogger drops go-redis's own log lines: under faults every client
// logs each failed dial, which would bury the test's output.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...interface{}) {}

func (w *workload) client(id int, rng *rand.Rand) {
	conns := map[string]*redis.Client{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		targets := *w.targets.Load()
		node := targets[(id+n/50)%len(targets)]
		cl := func(key string) *redis.Client {
			addr := node
			if w.shardOf != nil {
				k := w.shardOf(key)
				if hs := w.holders(k); len(hs) > 0 {
					// A placed shard: the client's node among its holders.
					addr = hs[(id+n/50)%len(hs)]
				}
				addr = proxy.ShardAddr(addr, k)
			}
			c := conns[addr]
			if c == nil {
				c = newClient(addr, 1) // no retries: a retried write could apply twice
				conns[addr] = c
			}
			return c
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		var err error
		switch p := rng.IntN(12); {
		case p < 4:
			err = w.appendOp(ctx, cl, id, rng)
		case p < 7:
			err = w.registerOp(ctx, cl, id, rng, n)
		case p < 9:
			err = w.counterOp(ctx, cl, id, rng)
		default:
			err = w.ttlOp(ctx, cl, id, rng, n)
		}
		cancel()
		if err != nil && w.learn != nil {
			w.learn(err)
		}
		if err != nil {
			// A client whose node is down or cut off gets errors at once;
			// backing off keeps it from filling the history with them.
			time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
		}
	}
}

func outcome(err error) chaoscheck.Outcome {
	switch lincheck.Classify(err) {
	case lincheck.OK:
		return chaoscheck.OK
	case lincheck.Failed:
		return chaoscheck.Failed
	}
	return chaoscheck.Unknown
}

func (w *workload) appendOp(ctx context.Context, conn func(string) *redis.Client, id int, rng *rand.Rand) error {
	base := w.listBase.Load() / appendsPerList
	key := "chaos:list:" + strconv.FormatInt(base+int64(rng.IntN(listKeys)), 10)
	cl := conn(key)
	v := w.nextVal.Add(1)
	op := chaoscheck.AppendOp{Client: id, Key: key, Value: v, Call: w.now()}
	var lr *redis.StringSliceCmd
	_, err := cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, v)
		lr = p.LRange(ctx, key, 0, -1)
		return nil
	})
	op.Return = w.now()
	op.Outcome = outcome(err)
	if op.Outcome == chaoscheck.OK {
		for _, s := range lr.Val() {
			x, perr := strconv.ParseInt(s, 10, 64)
			if perr != nil {
				x = -1 // not a value any client appended: a phantom
			}
			op.Read = append(op.Read, x)
		}
	}
	if op.Outcome != chaoscheck.Failed {
		w.listBase.Add(1)
	}
	w.mu.Lock()
	w.appends = append(w.appends, op)
	w.mu.Unlock()
	return err
}

func (w *workload) registerOp(ctx context.Context, conn func(string) *redis.Client, id int, rng *rand.Rand, n int) error {
	key := "chaos:reg:" + strconv.Itoa(rng.IntN(registerKeys))
	cl := conn(key)
	op := lincheck.Op{ClientID: id, Call: w.now()}
	if rng.IntN(2) == 0 {
		op.Input = lincheck.Input{Kind: lincheck.Get, Key: key}
		v, err := cl.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			v, err = "", nil
		}
		op.Output, op.Err = lincheck.Output{Value: v}, err
	} else {
		val := fmt.Sprintf("c%d-%d", id, n)
		op.Input = lincheck.Input{Kind: lincheck.Put, Key: key, Value: val}
		op.Err = cl.Set(ctx, key, val, 0).Err()
	}
	op.Return = w.now()
	w.registers.Add(op)
	return op.Err
}

func (w *workload) counterOp(ctx context.Context, conn func(string) *redis.Client, id int, rng *rand.Rand) error {
	key := "chaos:ctr:" + strconv.Itoa(rng.IntN(counterKeys))
	cl := conn(key)
	op := chaoscheck.CounterOp{Client: id, Key: key, Call: w.now()}
	var err error
	if rng.IntN(5) == 0 {
		op.Kind = chaoscheck.Read
		op.Value, err = cl.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			op.Value, err = 0, nil
		}
	} else {
		op.Kind = chaoscheck.Incr
		op.Value, err = cl.Incr(ctx, key).Result()
	}
	op.Return = w.now()
	op.Outcome = outcome(err)
	if op.Kind == chaoscheck.Read && op.Outcome != chaoscheck.OK {
		return err // a read that failed tells nothing
	}
	w.mu.Lock()
	w.counters = append(w.counters, op)
	w.mu.Unlock()
	return err
}

// ttlOp runs one operation on a key with a deadline. Checked operations
// take absolute deadlines, so the model knows them; a quarter use relative
// times on keys of their own, which only the final comparison of the
// nodes' data checks.
func (w *workload) ttlOp(ctx context.Context, conn func(string) *redis.Client, id int, rng *rand.Rand, n int) error {
	if rng.IntN(4) == 0 {
		return w.relativeTTLOp(ctx, conn, id, rng, n)
	}
	key := "chaos:ttl:" + strconv.Itoa(rng.IntN(ttlKeys))
	cl := conn(key)
	val := fmt.Sprintf("c%d-%d.", id, n)
	call, callMs := w.now(), time.Now().UnixMilli()
	at := strconv.FormatInt(callMs+int64(200+rng.IntN(2500)), 10)
	in := lincheck.TTLInput{Key: key, CallMs: callMs}
	in.At, _ = strconv.ParseInt(at, 10, 64)
	var out lincheck.TTLOutput
	var err error
	str := func(c *redis.Cmd) {
		var v string
		v, err = c.Text()
		if errors.Is(err, redis.Nil) {
			v, err = "", nil
		}
		out.Value = v
	}
	switch r := rng.IntN(10); {
	case r < 3:
		in.Kind, in.Value = lincheck.TTLSetAt, val
		err = cl.Do(ctx, "SET", key, val, "PXAT", at).Err()
	case r < 6:
		in.Kind = lincheck.TTLGet
		str(cl.Do(ctx, "GET", key))
	case r < 7:
		in.Kind = lincheck.TTLExpireAt
		out.Int, err = cl.Do(ctx, "PEXPIREAT", key, at).Int64()
	case r < 8:
		in.Kind = lincheck.TTLPersist
		out.Int, err = cl.Do(ctx, "PERSIST", key).Int64()
	case r < 9:
		in.Kind, in.Value = lincheck.TTLAppend, val
		out.Int, err = cl.Do(ctx, "APPEND", key, val).Int64()
	default:
		in.Kind = lincheck.TTLGetExAt
		str(cl.Do(ctx, "GETEX", key, "PXAT", at))
	}
	in.ReturnMs = time.Now().UnixMilli()
	w.ttl.Add(id, in, out, call, w.now(), err)
	return err
}

func (w *workload) relativeTTLOp(ctx context.Context, conn func(string) *redis.Client, id int, rng *rand.Rand, n int) error {
	key := "chaos:ttlr:" + strconv.Itoa(rng.IntN(ttlKeys))
	cl := conn(key)
	ms := strconv.Itoa(100 + rng.IntN(3000))
	secs := strconv.Itoa(1 + rng.IntN(3))
	var args []any
	switch rng.IntN(7) {
	case 0:
		args = []any{"SET", key, fmt.Sprintf("%d", n), "PX", ms}
	case 1:
		args = []any{"INCR", key}
	case 2:
		args = []any{"EXPIRE", key, secs, []string{"NX", "XX", "GT", "LT"}[rng.IntN(4)]}
	case 3:
		args = []any{"PEXPIRE", key, ms}
	case 4:
		args = []any{"GETEX", key, "EX", secs}
	case 5:
		args = []any{"PERSIST", key}
	default:
		args = []any{"SETEX", key, secs, "1"}
	}
	err := cl.Do(ctx, args...).Err()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if err != nil && strings.Contains(err.Error(), "not an integer") {
		err = nil // INCR of a GETEX'd or SET value: redis's own error
	}
	return err
}

// finalReads reads every list and counter key straight from each node's
// redis, once the cluster has converged.
//
// In a sharded cluster the shards' redis-servers are the nodes' own, so
// each node's copy is read through its port of the key's shard instead: a
// read there is served from that node's redis.
func (w *workload) finalReads(ctx context.Context, nodes []*Node) ([]chaoscheck.FinalRead, []chaoscheck.CounterFinal, error) {
	w.mu.Lock()
	listKeys, ctrKeys := map[string]bool{}, map[string]bool{}
	for _, op := range w.appends {
		listKeys[op.Key] = true
	}
	for _, op := range w.counters {
		ctrKeys[op.Key] = true
	}
	w.mu.Unlock()
	var lists []chaoscheck.FinalRead
	var ctrs []chaoscheck.CounterFinal
	for _, n := range nodes {
		plain := n.RedisClient()
		clients := map[string]*redis.Client{}
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		reader := func(key string) *redis.Client {
			if w.shardOf == nil {
				return plain
			}
			k := w.shardOf(key)
			if hs := w.holders(k); len(hs) > 0 && !slices.Contains(hs, n.Addr) {
				return nil // a placed shard this node does not hold
			}
			addr := proxy.ShardAddr(n.Addr, k)
			if clients[addr] == nil {
				clients[addr] = newClient(addr, 1)
			}
			return clients[addr]
		}
		for k := range listKeys {
			rc := reader(k)
			if rc == nil {
				continue
			}
			vals, err := rc.LRange(ctx, k, 0, -1).Result()
			if err != nil {
				return nil, nil, fmt.Errorf("final LRANGE %s on %s's redis: %w", k, n, err)
			}
			fr := chaoscheck.FinalRead{Node: n.String(), Key: k}
			for _, s := range vals {
				x, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					x = -1
				}
				fr.List = append(fr.List, x)
			}
			lists = append(lists, fr)
		}
		for k := range ctrKeys {
			rc := reader(k)
			if rc == nil {
				continue
			}
			v, err := rc.Get(ctx, k).Int64()
			if errors.Is(err, redis.Nil) {
				v, err = 0, nil
			}
			if err != nil {
				return nil, nil, fmt.Errorf("final GET %s on %s's redis: %w", k, n, err)
			}
			ctrs = append(ctrs, chaoscheck.CounterFinal{Node: n.String(), Key: k, Value: v})
		}
	}
	return lists, ctrs, nil
}
