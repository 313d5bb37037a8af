// Package apply is the apply layer: it runs committed commands on redis
// with the meaning raftproxy gives them beyond redis's own. raftnode hands
// it commands in log order (as an fsm.StateMachine); it takes the WATCH
// steps itself (guard.go), delivers PUBLISH to the node's subscribers
// (publish.go), answers notices, sends the rest to the redis state machine
// (backend) in runs, and publishes what was written as events (events.go)
// for the proxy's blocked clients, client-side caching and settings. It
// owns the replicated state an RDB does not carry (watches; the redis state
// machine's own), which snapshots save whole.
package apply

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// Redis is the state machine that runs commands on the local redis
// (backend.StateMachine).
type Redis interface {
	fsm.StateMachine
	fsm.MachineState
	fsm.KeyDeadlines
	fsm.Killer
	fsm.Interrupter
}

// Keys tells which keys a write command may modify, from the command
// table. Both answers must depend on the arguments (and reply) alone, so
// every node marks watches alike.
type Keys interface {
	// WriteKeys returns the keys args may modify, or all when that cannot
	// be told from its arguments.
	WriteKeys(args [][]byte) (keys [][]byte, all bool)
	// Modified reports whether a command whose reply was raw changed the
	// keys it addresses (a DEL answering 0 did not).
	Modified(args [][]byte, raw []byte) bool
	// AccessedKeys returns the keys args reads or writes.
	AccessedKeys(args [][]byte) [][]byte
}

// Publisher delivers a PUBLISH of the entry at index to this node's
// subscribers and returns how many received it (pubsub.Broker).
type Publisher interface {
	Publish(index uint64, channel, message []byte, sharded bool) int64
}

// Machine is the apply layer over one node's redis. It implements
// fsm.StateMachine and the optional interfaces raftnode looks for; every
// method but Kill, BusyAfter, Interrupt and Events is called on the
// node's applier goroutine.
type Machine struct {
	redis  Redis
	keys   Keys
	pub    Publisher
	events *Feed

	watches *watches
	// run, nulls and wrote are Apply's buffers, reused from call to call
	// (Apply runs on the applier goroutine only, and nothing keeps them).
	run   []fsm.Command
	nulls []bool
	wrote []Event
	// routing is the cluster's routing data, changed by OpRoute requests;
	// nil until the first (a cluster that was never sharded). A Map stored
	// here is never changed: a change stores a changed clone.
	routing atomic.Pointer[slotmap.Map]
	// shard names the shard this machine applies the log of (its group's
	// raft cluster id), "" while unknown; nil: not set.
	shard func() string
	// locks are the keys a slot move exported and has not dropped yet
	// (migrate.go), with the move's id.
	locks map[lockKey]uint64
	// published is the last entry whose PUBLISHes were delivered, and
	// publishing the entry being delivered now (its requests may come in
	// several Apply calls): a chunk applied again after a failed Apply
	// delivers nothing twice.
	published, publishing uint64
}

// New returns the apply layer over redis. keys nil: every write may modify
// every key; pub nil: PUBLISH runs on redis like any write.
func New(redis Redis, keys Keys, pub Publisher) *Machine {
	return &Machine{redis: redis, keys: keys, pub: pub, events: newFeed(), watches: newWatches()}
}

// Events is the feed of what the applied commands wrote.
func (m *Machine) Events() *Feed { return m.events }

var (
	okReply       = resp.AppendSimple(nil, "OK")
	abortedReply  = []byte("*-1\r\n") // EXEC's reply when a watched key was written
	abortedReply3 = []byte("_\r\n")   // the same in RESP3
	emptyTxReply  = resp.AppendArrayLen(nil, 0)
)

// Apply runs cmds in order: runs of commands go to redis, with the WATCH
// steps, notices and PUBLISHes taken between them.
func (m *Machine) Apply(cmds []fsm.Command) error {
	run := m.run[:0]
	defer func() { clear(run[:cap(run)]); m.run = run[:0] }()
	for i := range cmds {
		c := cmds[i]
		tx := len(c.Tx) > 0 || c.Op == entry.OpTx
		refused, err := m.notServed(&c, tx, &run)
		if err != nil {
			return err
		}
		if refused != nil {
			answer(&c, refused)
			continue
		}
		switch {
		case c.Op == entry.OpNotice:
			if err := m.applyRun(run); err != nil {
				return err
			}
			run = run[:0]
			m.events.put(Event{Kind: Notice, Args: c.Args, TimeMs: c.TimeMs, Live: c.Live})
			answer(&c, okReply)
			continue
		case c.Op == entry.OpRoute:
			if err := m.applyRun(run); err != nil {
				return err
			}
			run = run[:0]
			reply, err := m.route(&c)
			if err != nil {
				return err
			}
			answer(&c, reply)
			continue
		case c.Op == entry.OpWatch || c.Op == entry.OpUnwatch || (tx && c.Watch != 0):
			if err := m.applyRun(run); err != nil {
				return err
			}
			run = run[:0]
			send, err := m.step(&c)
			if err != nil {
				return err
			}
			if send {
				run = append(run, c) // the transaction runs first in the next run
			}
			continue
		case tx && len(c.Tx) == 0:
			answer(&c, emptyTxReply)
			continue
		}
		if m.publishOnly(&c) {
			continue
		}
		run = append(run, c)
	}
	return m.applyRun(run)
}

func answer(c *fsm.Command, raw []byte) {
	if c.Reply != nil {
		c.Reply(raw)
	}
}

// applyRun sends a run of commands to redis, marking watches from their
// replies, and publishes what they wrote.
func (m *Machine) applyRun(run []fsm.Command) error {
	if len(run) == 0 {
		return nil
	}
	nulls := m.nulls[:0]
	for range run {
		nulls = append(nulls, false)
	}
	m.nulls = nulls
	for i := range run {
		if m.watches.active() {
			m.markOnReply(&run[i])
		}
		if len(run[i].Tx) == 1 && run[i].Live {
			run[i].Reply = nullReply(run[i].Reply, &nulls[i])
		}
	}
	if err := m.redis.Apply(run); err != nil {
		return err
	}
	written := m.wrote[:0]
	for i, c := range run {
		if c.Tx == nil {
			written = append(written, Event{Kind: Written, DB: c.DB, Args: c.Args, Tag: c.Tag, Live: c.Live})
			continue
		}
		for _, t := range c.Tx {
			written = append(written, Event{Kind: Written, DB: c.DB, Args: t, Null: nulls[i], Tag: c.Tag, Live: c.Live})
		}
	}
	m.events.put(written...)
	clear(written)
	m.wrote = written[:0]
	return nil
}

// nullReply wraps the reply function of a one-command transaction to note
// whether EXEC answered that command's null (RESP2 null bulk or array, or
// RESP3 null): a blocking command's attempt that found nothing, which wrote
// nothing.
func nullReply(reply func([]byte), null *bool) func([]byte) {
	return func(raw []byte) {
		switch string(raw) {
		case "*1\r\n*-1\r\n", "*1\r\n$-1\r\n", "*1\r\n_\r\n":
			*null = true
		}
		if reply != nil {
			reply(raw)
		}
	}
}

// route applies a routing change or a move step (the one argument of an
// OpRoute request) and returns the reply: the id of a begun move or a
// claimed epoch, +OK, a step's outcome, or why the change was refused,
// which leaves the routing data as it was. Every node decides alike: the
// change and the data it applies to come from the log.
func (m *Machine) route(c *fsm.Command) ([]byte, error) {
	var arg routeArg
	if len(c.Args) != 1 {
		return resp.AppendError(nil, "ERR a routing change takes one argument"), nil
	}
	if err := json.Unmarshal(c.Args[0], &arg); err != nil {
		return resp.AppendError(nil, "ERR invalid routing change: "+err.Error()), nil
	}
	if arg.Step != nil {
		return m.moveStep(c, arg.Step)
	}
	ch := arg.Change
	ch.DropCopies = c.Format >= entry.PlacedFormat
	next := &slotmap.Map{}
	if cur := m.routing.Load(); cur != nil {
		next = cur.Clone()
	}
	id, err := next.Apply(ch)
	if err != nil {
		return resp.AppendError(nil, "ERR "+err.Error()), nil
	}
	m.routing.Store(next)
	m.afterRoute(ch, next)
	if ch.Op == slotmap.OpSyncMove || ch.Op == slotmap.OpEndMove {
		// Blocked clients try again: their keys may have moved away.
		m.events.put(Event{Kind: Reloaded})
	}
	if ch.Op == slotmap.OpBeginMove || ch.Op == slotmap.OpClaim {
		return resp.AppendInt(nil, int64(id)), nil
	}
	return okReply, nil
}

// SetShard names the shard whose log this machine applies (shard returns
// "" while it is not known): a sharded cluster's machine then runs a
// command only on slots its shard serves (notServed).
func (m *Machine) SetShard(shard func() string) { m.shard = shard }

// notServed returns the refusal of a command (a transaction: of any of its
// commands) with a key in a slot this machine's shard does not serve, as
// this shard's log says at this point: every node of the shard decides
// alike (servedHere). The servers refuse such commands before they are
// proposed; this catches one proposed before the slot changed hands, and
// decides those of the slots being moved.
func (m *Machine) notServed(c *fsm.Command, tx bool, run *[]fsm.Command) ([]byte, error) {
	if m.routing.Load() == nil || m.shard == nil || m.keys == nil || m.shard() == "" {
		return nil, nil
	}
	if refused := m.scriptWhileMoving(c); refused != nil {
		return refused, nil
	}
	var keys [][]byte
	switch {
	case c.Op == entry.OpWatch:
		keys = c.Args
	case tx:
		for _, t := range c.Tx {
			keys = append(keys, m.keys.AccessedKeys(t)...)
		}
	case c.Op == entry.OpCommand && len(c.Args) > 0:
		keys = m.keys.AccessedKeys(c.Args)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return m.servedHere(c, keys, run)
}

// Routing is the cluster's routing data as applied so far, or nil when it
// was never sharded. The Map must not be changed.
func (m *Machine) Routing() *slotmap.Map { return m.routing.Load() }

// Reset empties the apply layer's state with redis's, or replaces both
// with a snapshot's (RestoreMachineState follows).
func (m *Machine) Reset(ctx context.Context, rdb io.Reader, size int64) error {
	m.routing.Store(nil)
	m.locks = nil
	m.watches = newWatches()
	m.publishing = 0
	return m.redis.Reset(ctx, rdb, size)
}

// state is the apply layer's part of a snapshot's state object.
type state struct {
	Watches []watchState `json:"watches,omitempty"`
	// Routing is the routing data, when the cluster was sharded.
	Routing *slotmap.Map `json:"routing,omitempty"`
	// Locks are the keys slot moves hold locked.
	Locks []lockState `json:"locks,omitempty"`
	// Machine is the redis state machine's own state.
	Machine json.RawMessage `json:"machine,omitempty"`
}

// MachineState implements fsm.MachineState.
func (m *Machine) MachineState() (json.RawMessage, error) {
	inner, err := m.redis.MachineState()
	if err != nil {
		return nil, err
	}
	var locks []lockState
	for lk, id := range m.locks {
		locks = append(locks, lockState{DB: lk.db, Key: []byte(lk.key), Move: id})
	}
	slices.SortFunc(locks, func(a, b lockState) int { return cmp.Or(cmp.Compare(a.DB, b.DB), bytes.Compare(a.Key, b.Key)) })
	return json.Marshal(state{Watches: m.watches.state(), Routing: m.routing.Load(), Locks: locks, Machine: inner})
}

// RestoreMachineState implements fsm.MachineState. A state object without
// the redis state machine's part (a cluster seeded from a stock redis's
// RDB) gives it an empty one, not none, so it converts what it must.
func (m *Machine) RestoreMachineState(ctx context.Context, raw json.RawMessage) error {
	var st state
	if raw != nil {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode the apply layer's snapshot state: %w", err)
		}
		if st.Machine == nil {
			st.Machine = json.RawMessage("{}")
		}
	}
	m.watches = restoreWatches(st.Watches)
	m.routing.Store(st.Routing)
	m.locks = nil
	for _, l := range st.Locks {
		if m.locks == nil {
			m.locks = map[lockKey]uint64{}
		}
		m.locks[lockKey{l.DB, string(l.Key)}] = l.Move
	}
	if err := m.redis.RestoreMachineState(ctx, st.Machine); err != nil {
		return err
	}
	m.events.put(Event{Kind: Reloaded})
	return nil
}

// Healthy implements fsm.StateMachine.
func (m *Machine) Healthy(ctx context.Context) bool { return m.redis.Healthy(ctx) }

// StartSnapshot implements fsm.StateMachine.
func (m *Machine) StartSnapshot(ctx context.Context) (fsm.SnapshotJob, error) {
	return m.redis.StartSnapshot(ctx)
}

// Kill implements fsm.Killer.
func (m *Machine) Kill(ctx context.Context, kind uint8) (fsm.KillResult, error) {
	return m.redis.Kill(ctx, kind)
}

// BusyAfter implements fsm.Killer.
func (m *Machine) BusyAfter() time.Duration { return m.redis.BusyAfter() }

// Interrupt implements fsm.Interrupter.
func (m *Machine) Interrupt() { m.redis.Interrupt() }
