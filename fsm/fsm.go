// Package fsm is the contract between the log and what applies it: the
// commands committed entries become, and the state machine they are
// applied to. raftnode orders and delivers them; the apply layer and the
// redis backend implement the state machine. It holds types only.
package fsm

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/raftproxy/raftproxy/entry"
)

// Command is one committed request handed to the state machine, in log
// order.
type Command struct {
	// Index and Req name the request in the log: the entry's index and
	// its place in the entry's batch.
	Index uint64
	Req   int
	DB    int
	Args  [][]byte
	// Tx, when set, makes the command a transaction: its commands run
	// between MULTI and EXEC, Args is empty and Reply gets EXEC's reply.
	Tx [][][]byte
	// Op and Watch are the request's kind and the watch it names
	// (entry.Request); the apply layer interprets them.
	Op    entry.Op
	Watch uint64
	// RESP3: the proposing client speaks RESP3, so the command must run on
	// a RESP3 connection for its reply to be in the client's protocol.
	RESP3 bool
	// TimeMs is the log's time at the command's entry: the largest leader's
	// stamp of the log up to it, the same on every node. Keys expire by it.
	TimeMs int64
	// Live is set when the command is applied as it commits, and clear when
	// the node applies it again (a restart or a rebuild replaying the log):
	// effects outside the state machine (messages to subscribers) happen
	// once, live.
	Live bool
	// Asking: the client sent ASKING before the request (entry.Request).
	Asking bool
	// Tag is the tag the request was proposed with on this node, else 0.
	Tag uint64
	// Killable marks a request that may run without bound (a script); a
	// Killer may be asked to stop it while Apply runs it. Apply gets it
	// alone.
	Killable uint8
	// Format is the format of the log entry that carries the command
	// (entry.Entry.Format): the same on every node, so an apply rule that
	// changes with a format applies alike everywhere.
	Format byte
	// Reply receives the raw RESP reply; nil when no client waits for it.
	Reply func(raw []byte)
}

// StateMachine is what committed entries are applied to.
type StateMachine interface {
	// Apply runs cmds in order. An error means the state machine's content
	// is now unknown (its connection failed): the node calls Reset and
	// replays the log before applying anything else.
	Apply(cmds []Command) error
	// Reset blocks until the state machine is reachable, then replaces its
	// whole content with the RDB read from rdb (size bytes), or empties it
	// when rdb is nil.
	Reset(ctx context.Context, rdb io.Reader, size int64) error
	// Healthy reports whether the state machine still holds what was applied
	// (for redis: the connection is up and its run_id has not changed).
	Healthy(ctx context.Context) bool
	// StartSnapshot starts writing an RDB of exactly what has been applied
	// so far. It is called between two Apply calls and must not wait for
	// the RDB; the job's Wait does. Reset is not called with an RDB until
	// the job's reader is closed.
	StartSnapshot(ctx context.Context) (SnapshotJob, error)
}

// MachineState is implemented by a state machine that holds replicated state
// of its own besides redis's keyspace, which an RDB file does not carry
// (e.g. CONFIG SET values applied through the log): it travels in snapshots.
type MachineState interface {
	// MachineState returns that state as of the last Apply: a JSON object,
	// whose fields the snapshot keeps beside the node's own (members,
	// removed, last_seq, log_time_ms, which it must not use). It is called
	// right after StartSnapshot, before the next Apply.
	MachineState() (json.RawMessage, error)
	// RestoreMachineState is called after every Reset with the snapshot's
	// whole state object (nil after Reset to empty), before the entries
	// after it are applied.
	RestoreMachineState(ctx context.Context, raw json.RawMessage) error
}

// SnapshotJob is an RDB being written by the state machine.
type SnapshotJob interface {
	// Wait waits for the RDB, checks it, and returns it open for reading.
	// Closing the reader removes the state machine's copy.
	Wait(ctx context.Context) (io.ReadCloser, error)
}

// KeyDeadlines is implemented by a state machine that can tell when keys
// expire: for each key of db, in unix milliseconds, -1 for none, -2 when it
// does not exist. Everything applied before must be in.
type KeyDeadlines interface {
	KeyDeadlines(db int, keys [][]byte) ([]int64, error)
}

// KillResult is how the state machine stopped a killable request.
type KillResult uint8

const (
	// KillNotRunning: nothing was running (it ended, or has not started).
	KillNotRunning KillResult = iota
	// KillClean: it stopped before it changed anything; Apply returns its
	// reply.
	KillClean
	// KillUnclean: it could not be stopped without stopping the state
	// machine (it had written), whose content is now lost: Apply fails and
	// the node rebuilds it.
	KillUnclean
)

// Killer is implemented by a state machine that can stop the killable
// request (Command.Killable) Apply is running. Its methods are called from
// goroutines other than the applier's, while Apply runs.
type Killer interface {
	Kill(ctx context.Context, kind uint8) (KillResult, error)
	// BusyAfter is how long a killable request runs before the node is busy.
	BusyAfter() time.Duration
}

// Interrupter is implemented by a state machine whose Apply can be ended
// from another goroutine: a node that stops must not wait for a script that
// runs for ever.
type Interrupter interface {
	Interrupt()
}
