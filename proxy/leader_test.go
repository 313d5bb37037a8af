package proxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/backend"
)

// leaderFake is a group's node whose leadership the test sets.
type leaderFake struct {
	Group
	mu      sync.Mutex
	leading bool
	changed chan struct{}
	applied chan struct{}
	done    chan struct{}
}

func newLeaderFake() *leaderFake {
	return &leaderFake{changed: make(chan struct{}), applied: make(chan struct{}), done: make(chan struct{})}
}

func (f *leaderFake) AppliedChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// apply stands for the node applying entries.
func (f *leaderFake) apply() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.applied)
	f.applied = make(chan struct{})
}

func (f *leaderFake) IsLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leading
}

func (f *leaderFake) LeaderChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *leaderFake) Done() <-chan struct{} { return f.done }

func (f *leaderFake) set(leading bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leading = leading
	close(f.changed)
	f.changed = make(chan struct{})
}

// TestWhileLeader: leader work runs while the node leads and only then,
// skips a task with nothing to do, and stops with its server.
func TestWhileLeader(t *testing.T) {
	n := newLeaderFake()
	s := &Server{cfg: Config{Cluster: fakeCluster{node: n}}}
	var busyRounds, idleRounds atomic.Int64
	var idle atomic.Bool
	idle.Store(true)
	var busyIdle atomic.Bool
	busy := &leaderTask{rc: new(*backend.Conn), idle: func(Group) bool { return busyIdle.Load() }, round: func(Group) error {
		busyRounds.Add(1)
		return nil
	}}
	lazy := &leaderTask{rc: new(*backend.Conn), idle: func(Group) bool { return idle.Load() }, round: func(Group) error {
		idleRounds.Add(1)
		return nil
	}}
	stop := make(chan struct{})
	returned := make(chan struct{})
	go func() { defer close(returned); s.whileLeader(stop, busy, nil, lazy) }()

	time.Sleep(300 * time.Millisecond)
	if got := busyRounds.Load(); got != 0 {
		t.Fatalf("%d rounds while following", got)
	}
	n.set(true)
	waitUntil(t, 5*time.Second, "no round while leading", func() bool { return busyRounds.Load() >= 3 })
	if got := idleRounds.Load(); got != 0 {
		t.Errorf("an idle task ran %d rounds", got)
	}
	// With every task idle the loop sleeps until something is applied.
	busyIdle.Store(true)
	time.Sleep(300 * time.Millisecond) // the loop sees busy idle
	asleep := busyRounds.Load()
	idle.Store(false)
	time.Sleep(1500 * time.Millisecond)
	if got := idleRounds.Load(); got != 0 {
		t.Errorf("an idle loop ran %d rounds with nothing applied", got)
	}
	n.apply()
	waitUntil(t, 5*time.Second, "a task given work by an applied entry got no round", func() bool { return idleRounds.Load() >= 1 })
	busyIdle.Store(false)
	waitUntil(t, 5*time.Second, "no round once busy again", func() bool { return busyRounds.Load() > asleep })
	n.set(false)
	time.Sleep(200 * time.Millisecond) // a round under way may finish
	after := busyRounds.Load()
	time.Sleep(500 * time.Millisecond)
	if got := busyRounds.Load(); got != after {
		t.Errorf("%d rounds after leadership was lost", got-after)
	}
	close(stop)
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("whileLeader did not return at stop")
	}
}

// swapCluster is a Cluster whose node the test replaces.
type swapCluster struct {
	Cluster
	node atomic.Pointer[leaderFake]
}

func (c *swapCluster) Node() Group { return c.node.Load() }

// TestWhileLeaderWakes: an idle task whose wake falls due gets a round with
// nothing applied, and a loop asleep on a node that is replaced (its Ready
// loop revived) goes on with the new node's channels.
func TestWhileLeaderWakes(t *testing.T) {
	first := newLeaderFake()
	c := &swapCluster{}
	c.node.Store(first)
	s := &Server{cfg: Config{Cluster: c}}
	var rounds atomic.Int64
	var due atomic.Int64 // unix ns the task has work at; 0: none until applied
	var seen atomic.Pointer[leaderFake]
	task := &leaderTask{rc: new(*backend.Conn),
		idle: func(n Group) bool {
			d := due.Load()
			return d == 0 || time.Now().UnixNano() < d
		},
		wake: func() time.Duration {
			if d := due.Load(); d != 0 {
				return time.Until(time.Unix(0, d))
			}
			return 0
		},
		round: func(n Group) error {
			seen.Store(n.(*leaderFake))
			rounds.Add(1)
			due.Store(0)
			return nil
		}}
	stop := make(chan struct{})
	defer close(stop)
	go s.whileLeader(stop, task)
	first.set(true)
	time.Sleep(300 * time.Millisecond)
	// Due in 2 s: the applied entry has the loop look once (after
	// idleWait), find the task idle, and sleep until its wake.
	due.Store(time.Now().Add(2 * time.Second).UnixNano())
	first.apply()
	waitUntil(t, 5*time.Second, "no round when the wake fell due", func() bool { return rounds.Load() == 1 })

	second := newLeaderFake()
	second.leading = true
	c.node.Store(second)
	close(first.done)
	time.Sleep(1500 * time.Millisecond) // past idleWait: the loop is on the new node
	due.Store(1)                        // work at once, once the loop looks
	second.apply()
	waitUntil(t, 5*time.Second, "no round after the replacing node applied", func() bool { return rounds.Load() == 2 })
	if seen.Load() != second {
		t.Fatal("the round ran on the replaced node")
	}
}

func waitUntil(t *testing.T, d time.Duration, msg string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
