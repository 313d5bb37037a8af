// Package migrate drives the slot moves of a sharded cluster: on the node
// that leads the primary group, one mover per move in the routing data
// copies the move's keys from its source shard to its target in batches
// (the export, import and drop steps of apply/migrate.go, each through a
// shard's log: its own group's, or a member's over the peer network for a
// shard placed on other nodes), then hands the slots off. Everything it does is a log
// entry and safe to repeat, so a mover that stops anywhere (a leader
// change, a crash) is replaced by the next leader's, which claims the move
// with a higher epoch and carries on from what the logs hold.
package migrate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// Group is a raft group of this node, through which the mover logs.
type Group interface {
	ProposeRequest(ctx context.Context, req entry.Request) *raftnode.Future
	IsLeader() bool
	// LeaderChanged is closed at the next change of leader.
	LeaderChanged() <-chan struct{}
	// AppliedChanged is closed when the group next applies entries.
	AppliedChanged() <-chan struct{}
}

// Log is a shard's log as a mover writes it.
type Log interface {
	// Append logs change (a routing change or a move step, JSON: an
	// entry.OpRoute argument) and returns the applier's reply.
	Append(ctx context.Context, change []byte) ([]byte, error)
}

// GroupLog is the Log of a group this node holds.
func GroupLog(g Group) Log { return groupLog{g} }

type groupLog struct{ g Group }

func (l groupLog) Append(ctx context.Context, change []byte) ([]byte, error) {
	f := l.g.ProposeRequest(ctx, entry.Request{Op: entry.OpRoute, Args: [][]byte{change}})
	select {
	case <-f.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.Result()
}

// Node is what a mover needs of the node it runs on.
type Node interface {
	// Primary is the primary group (nil before it has a node), whose log
	// holds the routing data: its leader drives the moves.
	Primary() Group
	// Routing is the routing data as the primary group applied it.
	Routing() *slotmap.Map
	// Shard is the log of shard id: this node's group, or, for a shard it
	// does not hold, the group of a member reached over the peer network;
	// nil when neither is known.
	Shard(id string) Log
	// Keys lists the keys of the slots r in the data of shard id, as a
	// linearizable read of the shard: every step logged before it is in
	// what it scans.
	Keys(ctx context.Context, id string, r slotmap.Range) ([]apply.MovedKey, error)
}

// Batch is how many keys one export, import and drop carry: a key is
// locked for the three log rounds of its batch, and a move takes about
// four rounds per batch.
const Batch = 500

// stepTimeout bounds one log round of a mover.
const stepTimeout = 10 * time.Second

// Movers runs the movers of a node.
type Movers struct {
	// Pause is how long a mover waits after each batch, in percent of
	// the time the batch took (nil or 0: none); it may change at any time.
	Pause *atomic.Uint64

	node Node
	log  *slog.Logger

	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	stopped chan struct{} // a mover returned
}

// New returns the movers of node.
func New(node Node, log *slog.Logger) *Movers {
	return &Movers{node: node, log: log, running: map[uint64]context.CancelFunc{}, stopped: make(chan struct{}, 1)}
}

// Run starts a mover for each move in progress while this node leads the
// primary group, and stops them when it no longer does, until ctx ends.
// It looks again when the primary group applies something (a move begins
// with a routing change in its log), its leader changes, or a mover stops,
// at most every 100 ms: an idle cluster's leader does not poll.
func (m *Movers) Run(ctx context.Context) {
	defer m.stopAll()
	for {
		p := m.node.Primary()
		if p == nil {
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		// Both are taken before what they signal is read.
		changed, applied := p.LeaderChanged(), p.AppliedChanged()
		rt := m.node.Routing()
		if rt == nil || !p.IsLeader() {
			// A node that does not lead the primary group sleeps until its
			// leader changes (or a second, for a new primary node).
			m.stopAll()
			select {
			case <-changed:
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			continue
		}
		for _, mv := range rt.Moves() {
			m.start(ctx, mv.ID)
		}
		select {
		case <-applied:
		case <-changed:
		case <-m.stopped:
		case <-ctx.Done():
			return
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

func (m *Movers) start(ctx context.Context, id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[id] != nil {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	m.running[id] = cancel
	go func() {
		err := m.drive(wctx, id)
		if err != nil && wctx.Err() == nil {
			m.log.Warn("slot move stopped; retrying", "move", id, "err", err)
			select {
			case <-time.After(time.Second):
			case <-wctx.Done():
			}
		}
		m.mu.Lock()
		delete(m.running, id)
		m.mu.Unlock()
		cancel()
		select {
		case m.stopped <- struct{}{}: // Run starts it again if it is not over
		default:
		}
	}()
}

func (m *Movers) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cancel := range m.running {
		cancel()
	}
}

// errTurned stops a pass when the move was cancelled meanwhile.
var errTurned = errors.New("the move was cancelled")

// errRefused wraps an applier's refusal.
var errRefused = errors.New("refused")

// drive runs move id to its end: claim it, tell both shards' logs its
// state (To's first: a shard importing a slot is ready before the source
// sends clients there, and when a cancel turns the move around To starts
// sending back before From stops), finish a batch an earlier mover left,
// copy what the source holds, then end it in the shard that keeps the
// slots, the other, and the primary, in that order.
func (m *Movers) drive(ctx context.Context, id uint64) error {
	p := m.node.Primary()
	if p == nil {
		return errors.New("no primary group")
	}
	reply, err := m.propose(ctx, GroupLog(p), slotmap.Change{Op: slotmap.OpClaim, Move: id})
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	epoch, err := strconv.ParseUint(strings.TrimSpace(string(reply[1:])), 10, 64)
	if err != nil || reply[0] != ':' {
		return fmt.Errorf("claim: %q", reply)
	}
	for {
		rt := m.node.Routing()
		if rt == nil {
			return errors.New("routing data unknown")
		}
		mv, ok := rt.MoveByID(id)
		if !ok {
			return nil
		}
		if mv.Epoch != epoch {
			return fmt.Errorf("superseded by epoch %d", mv.Epoch)
		}
		// The direction: backwards once a cancel was asked for.
		mv.Active = true
		if !mv.Finishing {
			mv.Cancelled = mv.Cancelled || mv.Cancel
		}
		started := time.Now()
		moved := mv.Keys
		if !mv.Finishing {
			n, err := m.pass(ctx, mv)
			if errors.Is(err, errTurned) {
				continue
			}
			if err != nil {
				return err
			}
			// From here the move only ends, in this direction: a cancel is
			// refused, and a mover that takes over ends it too (a shard
			// that ended it refuses every other step).
			fin := slotmap.Change{Op: slotmap.OpFinish, Move: id, Epoch: epoch, Cancelled: mv.Cancelled}
			if _, err := m.proposeOK(ctx, GroupLog(p), fin); err != nil {
				if refusedFor(err, slotmap.ErrNoMove) {
					return nil
				}
				return fmt.Errorf("finish: %w", err)
			}
			moved = n
		} else if err := m.syncMove(ctx, mv, true); err != nil {
			// A finishing move an earlier mover left: both shards take
			// this mover's epoch before its end steps, since each refuses
			// the steps of any epoch but the last it was told of.
			return err
		}
		// The shard that keeps the slots owns them first: until the other
		// lets go, it answers -ASK there for every key (it holds none).
		end := slotmap.Change{Op: slotmap.OpEndMove, Move: id, Epoch: epoch, Shard: mv.Dst()}
		for _, g := range []string{mv.Dst(), mv.Src()} {
			if _, err := m.proposeOK(ctx, m.node.Shard(g), end); err != nil {
				return fmt.Errorf("end in shard %s: %w", g, err)
			}
		}
		if _, err := m.proposeOK(ctx, GroupLog(p), end); err != nil {
			return fmt.Errorf("end in the primary group: %w", err)
		}
		m.log.Info("slot move ended", "move", id, "slots", mv.Range.String(), "to", mv.Dst(), "keys", moved, "took", time.Since(started).Round(time.Millisecond))
		return nil
	}
}

// syncMove logs move mv's state in both shards, the target's first (see
// drive). With endedOK, a shard that ended the move already is no error:
// it refuses the sync and takes the end step that follows as a retry.
func (m *Movers) syncMove(ctx context.Context, mv slotmap.Move, endedOK bool) error {
	rt := m.node.Routing()
	if rt == nil {
		return errors.New("routing data unknown")
	}
	from, _ := rt.Shard(mv.From)
	to, _ := rt.Shard(mv.To)
	for _, g := range []string{mv.To, mv.From} {
		sync := slotmap.Change{Op: slotmap.OpSyncMove, State: &mv, Shards: []slotmap.Shard{from, to}}
		if _, err := m.proposeOK(ctx, m.node.Shard(g), sync); err != nil && !(endedOK && refusedFor(err, slotmap.ErrEnded)) {
			return fmt.Errorf("sync in shard %s: %w", g, err)
		}
	}
	return nil
}

// refusedFor reports whether err is an applier's refusal for reason.
func refusedFor(err, reason error) bool {
	return errors.Is(err, errRefused) && strings.Contains(err.Error(), reason.Error())
}

// pass syncs move mv (active, in the direction the mover runs it) into
// both shards' logs and copies every key of its slots the source holds,
// until a scan finds none. It returns how many keys moved in all.
func (m *Movers) pass(ctx context.Context, mv slotmap.Move) (uint64, error) {
	if mv.Cancelled {
		// Before the move turns, a batch an earlier mover left half done
		// is finished forwards: a shard turns only with none locked, so
		// that a key it exported is never left behind as a stale copy.
		fwd := mv
		fwd.Cancelled = false
		if err := m.syncMove(ctx, fwd, false); err != nil {
			return 0, err
		}
		if _, err := m.batch(ctx, fwd, nil, true); err != nil {
			return 0, err
		}
	}
	if err := m.syncMove(ctx, mv, false); err != nil {
		return 0, err
	}
	moved := mv.Keys
	n, err := m.batch(ctx, mv, nil, true)
	if err != nil {
		return moved, err
	}
	moved += uint64(n)
	var reported time.Time
	for {
		keys, err := m.node.Keys(ctx, mv.Src(), mv.Range)
		if err != nil {
			return moved, err
		}
		if len(keys) == 0 {
			return moved, nil
		}
		// A slot's keys go in as few batches as they fill: a command on
		// keys of one slot split between the shards has to be retried.
		slices.SortStableFunc(keys, func(a, b apply.MovedKey) int {
			return cmp.Compare(slotmap.KeySlot(a.Key), slotmap.KeySlot(b.Key))
		})
		for len(keys) > 0 {
			if cur, ok := m.node.Routing().MoveByID(mv.ID); !ok || (cur.Cancel && !mv.Cancelled) || cur.Epoch != mv.Epoch {
				return moved, errTurned
			}
			b := keys[:min(Batch, len(keys))]
			keys = keys[len(b):]
			t0 := time.Now()
			n, err := m.batch(ctx, mv, b, false)
			if err != nil {
				return moved, err
			}
			if err := m.pause(ctx, time.Since(t0)); err != nil {
				return moved, err
			}
			moved += uint64(n)
			// The progress shown is at most a second old.
			if time.Since(reported) < time.Second && len(keys) > 0 {
				continue
			}
			reported = time.Now()
			if _, err := m.proposeOK(ctx, m.primary(), slotmap.Change{Op: slotmap.OpProgress, Move: mv.ID, Epoch: mv.Epoch, Keys: moved}); err != nil {
				return moved, fmt.Errorf("progress: %w", err)
			}
		}
	}
}

// batch moves keys (and, when locked, those the move holds locked): export
// from the source, import into the target, drop from the source.
func (m *Movers) batch(ctx context.Context, mv slotmap.Move, keys []apply.MovedKey, locked bool) (int, error) {
	src, dst := m.node.Shard(mv.Src()), m.node.Shard(mv.Dst())
	step := func(g Log, s apply.MoveStep) ([]byte, error) {
		s.Move, s.Epoch = mv.ID, mv.Epoch
		return m.proposeOK(ctx, g, struct {
			Step apply.MoveStep `json:"step"`
		}{s})
	}
	reply, err := step(src, apply.MoveStep{Op: apply.StepExport, Keys: keys, Locked: locked})
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	v, _, err := resp.Parse(reply)
	if err != nil || v.Kind != '$' {
		return 0, fmt.Errorf("export answered %q", reply)
	}
	var got []apply.MovedKey
	if err := json.Unmarshal(v.Str, &got); err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	if len(got) == 0 {
		return 0, nil
	}
	if _, err := step(dst, apply.MoveStep{Op: apply.StepImport, Keys: got}); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	for i := range got {
		got[i].Dump, got[i].Deadline = nil, 0
	}
	if _, err := step(src, apply.MoveStep{Op: apply.StepDrop, Keys: got}); err != nil {
		return 0, fmt.Errorf("drop: %w", err)
	}
	return len(got), nil
}

// primary is the primary group's log, nil before the node has one.
func (m *Movers) primary() Log {
	if p := m.node.Primary(); p != nil {
		return GroupLog(p)
	}
	return nil
}

// proposeOK logs v (a routing change or a move step) through g and
// returns the applier's reply, an error when it refused.
func (m *Movers) proposeOK(ctx context.Context, g Log, v any) ([]byte, error) {
	reply, err := m.propose(ctx, g, v)
	if err != nil {
		return nil, err
	}
	if len(reply) > 0 && reply[0] == '-' {
		return nil, fmt.Errorf("%w: %s", errRefused, strings.TrimSpace(string(reply[1:])))
	}
	return reply, nil
}

func (m *Movers) propose(ctx context.Context, g Log, v any) ([]byte, error) {
	if g == nil {
		return nil, errors.New("no member of the shard is known")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	return g.Append(ctx, b)
}

// pause waits, after a batch that took took, for Pause percent of that: a
// mover then leaves the shards it copies between and their nodes' CPU to
// the clients for part of the time, rather than queueing its rounds
// before every client's for the whole move.
func (m *Movers) pause(ctx context.Context, took time.Duration) error {
	if m.Pause == nil {
		return nil
	}
	d := took * time.Duration(m.Pause.Load()) / 100
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
