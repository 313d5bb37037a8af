package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/test/lincheck"
)

// TestLinearizability records concurrent histories of GET/SET/APPEND from
// clients on every node while a fault is injected in the middle, and checks
// them with porcupine.
func TestLinearizability(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the longest test (10 s recorded histories with faults, then porcupine checks)")
	}
	tests := []struct {
		name string
		// crash and recover bracket the middle of the run.
		crash, recover func(ctx context.Context, leader, follower *Node) error
	}{
		{"leader crash and restart",
			func(ctx context.Context, l, _ *Node) error { return l.KillProxy() },
			func(ctx context.Context, l, _ *Node) error { return l.StartProxy(ctx) }},
		{"follower redis-server crash and restart",
			func(ctx context.Context, _, f *Node) error { return f.KillRedis() },
			func(ctx context.Context, _, f *Node) error { return f.StartRedis(ctx) }},
		{"leader redis-server crash and restart",
			func(ctx context.Context, l, _ *Node) error { return l.KillRedis() },
			func(ctx context.Context, l, _ *Node) error { return l.StartRedis(ctx) }},
		// A paused leader is deposed while it sleeps and wakes up still
		// believing it leads: it must not serve what it holds as current.
		// Leadership handed to a follower and back while clients on every
		// node read and write.
		{"leadership transferred and back",
			func(ctx context.Context, _, f *Node) error { return transferTo(ctx, f, f) },
			func(ctx context.Context, l, _ *Node) error { return transferTo(ctx, l, l) }},
		{"leader paused and resumed",
			func(ctx context.Context, l, _ *Node) error { return l.proxy.Signal(syscall.SIGSTOP) },
			func(ctx context.Context, l, _ *Node) error { return l.proxy.Signal(syscall.SIGCONT) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runLinearizability(t, tt.crash, tt.recover)
		})
	}
}

// transferTo asks via to hand leadership to target with RAFT.TRANSFER_LEADER.
func transferTo(ctx context.Context, via, target *Node) error {
	v, err := via.Do(ctx, 15*time.Second, "RAFT.TRANSFER_LEADER", target.ID)
	if err != nil {
		return err
	}
	if v.Kind != '+' {
		return fmt.Errorf("RAFT.TRANSFER_LEADER %s via %s: %v", target.ID, via, v)
	}
	return nil
}

func runLinearizability(t *testing.T, crash, recover func(ctx context.Context, leader, follower *Node) error) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{RequestTimeout: 3 * time.Second})
	leader, followers := c.Leader(ctx)

	const (
		clientsPerNode = 2
		runFor         = 10 * time.Second
	)
	rec := recordHistory(ctx, c.Nodes, clientsPerNode)
	start := rec.start

	nemesisErr := func() error {
		time.Sleep(runFor * 3 / 10)
		if err := crash(ctx, leader, followers[0]); err != nil {
			return fmt.Errorf("injecting the fault: %w", err)
		}
		t.Logf("%v: fault injected (leader %s, follower %s)", time.Since(start).Round(time.Millisecond), leader, followers[0])
		time.Sleep(runFor * 3 / 10)
		if err := recover(ctx, leader, followers[0]); err != nil {
			return fmt.Errorf("recovering from the fault: %w", err)
		}
		t.Logf("%v: recovered", time.Since(start).Round(time.Millisecond))
		time.Sleep(runFor * 4 / 10)
		return nil
	}()
	if nemesisErr != nil {
		rec.Stop()
		t.Fatal(nemesisErr)
	}
	rec.Check(t, c.Nodes)
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
}

// recorder runs clients that record a history of GET/SET/APPEND on a few
// keys through the given nodes, for porcupine.
type recorder struct {
	start     time.Time
	stop      chan struct{}
	wg        sync.WaitGroup
	hist      lincheck.History
	mu        sync.Mutex
	opsByNode map[int]int
}

func recordHistory(ctx context.Context, nodes []*Node, clientsPerNode int) *recorder {
	keys := []string{"lin:a", "lin:b", "lin:c", "lin:d"}
	r := &recorder{start: time.Now(), stop: make(chan struct{}), opsByNode: map[int]int{}}
	start, stop, hist := r.start, r.stop, &r.hist
	now := func() int64 { return int64(time.Since(start)) }
	wg, opsMu, opsByNode := &r.wg, &r.mu, r.opsByNode
	id := 0
	for _, n := range nodes {
		for i := 0; i < clientsPerNode; i++ {
			wg.Add(1)
			go func(n *Node, clientID int) {
				defer wg.Done()
				cl := newClient(n.Addr, 1)
				defer cl.Close()
				rng := rand.New(rand.NewPCG(uint64(clientID), uint64(start.UnixNano())))
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					key := keys[rng.IntN(len(keys))]
					// Unique values let the checker tell every write apart.
					val := fmt.Sprintf("%d.%d;", clientID, seq)
					op := lincheck.Op{ClientID: clientID}
					opCtx, cancel := context.WithTimeout(ctx, 8*time.Second)
					op.Call = now()
					switch r := rng.IntN(10); {
					case r < 4:
						op.Input = lincheck.Input{Kind: lincheck.Get, Key: key}
						v, err := cl.Get(opCtx, key).Result()
						if errors.Is(err, redis.Nil) {
							v, err = "", nil
						}
						op.Output, op.Err = lincheck.Output{Value: v}, err
					case r < 7:
						op.Input = lincheck.Input{Kind: lincheck.Put, Key: key, Value: val}
						op.Err = cl.Set(opCtx, key, val, 0).Err()
					default:
						op.Input = lincheck.Input{Kind: lincheck.Append, Key: key, Value: val}
						l, err := cl.Append(opCtx, key, val).Result()
						op.Output, op.Err = lincheck.Output{Length: l}, err
					}
					op.Return = now()
					cancel()
					hist.Add(op)
					if op.Err == nil {
						opsMu.Lock()
						opsByNode[n.Index]++
						opsMu.Unlock()
					} else {
						// A dead or rebuilding node fails fast; do not spin.
						time.Sleep(20 * time.Millisecond)
					}
				}
			}(n, id)
			id++
		}
	}

	return r
}

// Stop ends the clients.
func (r *recorder) Stop() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// Check stops the clients and requires a linearizable history in which an
// operation succeeded through each of nodes.
func (r *recorder) Check(t *testing.T, nodes []*Node) {
	t.Helper()
	r.Stop()
	ops := r.hist.Operations()
	kept, unknown, dropped := r.hist.Stats()
	t.Logf("history: %d operations kept (%d with unknown outcome), %d dropped; successful by node: %v", kept, unknown, dropped, r.opsByNode)
	for _, n := range nodes {
		if r.opsByNode[n.Index] == 0 {
			t.Errorf("no operation succeeded through %s", n)
		}
	}
	checkStart := time.Now()
	res, err := lincheck.Check(ops, 2*time.Minute)
	t.Logf("porcupine: %v in %v", res, time.Since(checkStart).Round(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
}
