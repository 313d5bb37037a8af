package raftnode

import (
	"context"
	"encoding/json"
	"io"
)

// Command is one request handed to the state machine.
type Command struct {
	DB   int
	Args [][]byte
	// Tx, when set, makes the command a transaction: its commands run
	// between MULTI and EXEC, Args is empty and Reply gets EXEC's reply.
	Tx [][][]byte
	// RESP3: the proposing client speaks RESP3, so the command must run on
	// a RESP3 connection for its reply to be in the client's protocol.
	RESP3 bool
	// TimeMs is the log's time at the command's entry (clock.go): the
	// largest leader's stamp of the log up to it, the same on every node.
	// Keys expire by it.
	TimeMs int64
	// Reply receives the raw RESP reply; nil when no client waits for it.
	Reply func(raw []byte)
	// Killable (entry.Request.Killable) marks a request that may run
	// without bound (a script); a Killer may be asked to stop it while
	// Apply runs it. Apply gets it alone.
	Killable uint8
	// null is set by Reply for Config.Written (see there).
	null *bool
	// t names the request in the log; finish completes its future with a
	// reply or an error (nil when no client of this node waits); tag is its
	// future's (ProposeTagged); guard makes it a WATCH step the applier
	// takes itself (apply_watch.go).
	t      target
	finish func([]byte, error)
	tag    uint64
	guard  *guard
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
	// MachineState returns that state as of the last Apply. It is called
	// right after StartSnapshot, before the next Apply.
	MachineState() (json.RawMessage, error)
	// RestoreMachineState is called after every Reset with the state saved
	// with the snapshot that was loaded (nil after Reset to empty), before
	// the entries after it are applied.
	RestoreMachineState(ctx context.Context, raw json.RawMessage) error
}

// SnapshotJob is an RDB being written by the state machine.
type SnapshotJob interface {
	// Wait waits for the RDB, checks it, and returns it open for reading.
	// Closing the reader removes the state machine's copy.
	Wait(ctx context.Context) (io.ReadCloser, error)
}
