package raftnode

import (
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Config configures one node.
type Config struct {
	DataDir        string // the node's directory; the WAL lives in DataDir/wal
	Self           Member // ID is filled in by Host
	ClusterID      uint64
	StateMachine   StateMachine
	Logger         *slog.Logger
	TickInterval   time.Duration // default 100ms
	ElectionTicks  int           // default 10
	HeartbeatTicks int           // default 1
	// RequestTimeout bounds how long a proposal or read waits (initial
	// value of Tunables.RequestTimeout).
	RequestTimeout time.Duration
	// ClockOffset shifts this node's clock, for tests of clock skew only.
	ClockOffset time.Duration
	// MinFreeDisk is the free space the WAL's file system must have for
	// the node to write to it (disk.go); default 80 MiB: a WAL segment
	// (64 MiB) and some.
	MinFreeDisk uint64
	// MaxBatch is the most requests one log entry carries.
	MaxBatch int
	// MaxInflight is how many batches of requests this node keeps on their
	// way through the log before it holds new requests back to form a
	// larger batch (default 2).
	MaxInflight int
	// SnapshotEntries: a snapshot is made when this many entries were
	// applied since the last one.
	SnapshotEntries uint64
	// SnapshotBytes: a snapshot is made when entries of this many bytes
	// were applied since the last one (batches make entries of any size).
	SnapshotBytes uint64
	// SnapshotCatchUpEntries is the tail of the log kept after a snapshot,
	// so a slightly lagging follower gets entries rather than a snapshot.
	SnapshotCatchUpEntries uint64
	// SnapshotCatchUpBytes bounds that tail in bytes.
	SnapshotCatchUpBytes uint64
	// SnapshotKeep is how many snapshot files are kept.
	SnapshotKeep int
	// Tunables are the settings that may change while the node runs
	// (RAFT.CONFIG SET); shared by every node of the Host.
	Tunables *Tunables
	// WriteKeys returns the keys a write command may modify, or all when
	// that cannot be told from its arguments; WATCH's bookkeeping uses it.
	// It must give the same answer on every node. Nil: every write may
	// modify every key.
	WriteKeys func(args [][]byte) (keys [][]byte, all bool)
	// Modified reports whether a command whose reply was raw changed the
	// keys it addresses (a DEL answering 0 did not): only then does it mark
	// the watches of its keys, as redis does. It must depend on its
	// arguments alone. Nil: every write changed them.
	Modified func(args [][]byte, raw []byte) bool
	// Written, if set, is called on the applier goroutine after each
	// command this node applied is in redis (a transaction's commands one
	// by one), and with nil args when redis was reloaded (a snapshot, a
	// rebuild) and any key may have changed. null says the command was a
	// transaction's only one and answered null (a blocking command's
	// attempt that found nothing, which wrote nothing); tag is the tag it
	// was proposed with on this node (ProposeTagged), else 0. Blocking
	// commands and client-side caching wait for it. It must not block.
	Written func(db int, args [][]byte, null bool, tag uint64)
	// Notice receives, on every node, the arguments of a notice request
	// (entry.OpNotice) when the applier reaches it, with the time it was
	// proposed at; live is false while the node replays its log. It returns
	// the reply of the node that proposed it. It must not block.
	Notice func(args [][]byte, timeMs int64, live bool) []byte
	// Publish delivers a PUBLISH (sharded: SPUBLISH) of the entry at index
	// to this node's subscribers and returns how many received it. The
	// applier calls it, in log order, for entries applied live only, and
	// never sends those commands to the state machine (publish.go). Nil:
	// PUBLISH goes to redis like any write.
	Publish func(index uint64, channel, message []byte, sharded bool) int64
	// PeerTLS, when it names a certificate, makes the transport dial peers
	// over https with that certificate as its client certificate (read
	// again at each handshake, so it rotates) and verify them against its
	// TrustedCAFile. The peer listener's own TLS is the caller's.
	PeerTLS transport.TLSInfo
	// ForceNewCluster, on restart, makes this node the only member of its
	// cluster, keeping what it had committed (quorum-loss recovery).
	ForceNewCluster bool
	// SeedRDB, when set, is an RDB file that RAFT.CLUSTER INIT makes the new
	// cluster's first state (seed.go); JOIN and restarts ignore it.
	SeedRDB string

	// metrics are the Host's series, shared by the nodes it runs.
	metrics *Metrics
}

func (c *Config) setDefaults() {
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 512
	}
	if c.MinFreeDisk == 0 {
		c.MinFreeDisk = 80 << 20
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 2
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10000
	}
	if c.SnapshotBytes == 0 {
		c.SnapshotBytes = 64 << 20
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = 5000
	}
	if c.SnapshotCatchUpBytes == 0 {
		c.SnapshotCatchUpBytes = 16 << 20
	}
	if c.SnapshotKeep == 0 {
		c.SnapshotKeep = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.metrics == nil {
		c.metrics = NewMetrics()
	}
	if c.Tunables == nil {
		c.Tunables = &Tunables{}
	}
	if c.Tunables.SnapshotEntries.Load() == 0 {
		c.Tunables.SnapshotEntries.Store(c.SnapshotEntries)
	}
	if c.Tunables.SnapshotBytes.Load() == 0 {
		c.Tunables.SnapshotBytes.Store(c.SnapshotBytes)
	}
	if c.Tunables.RequestTimeout.Load() == 0 {
		c.Tunables.RequestTimeout.Store(int64(c.RequestTimeout))
	}
}

// Tunables are settings read while the node runs, so they can change.
type Tunables struct {
	SnapshotEntries atomic.Uint64
	SnapshotBytes   atomic.Uint64
	// RequestTimeout (nanoseconds) bounds how long a proposal or a read
	// waits before its client gets -TIMEOUT.
	RequestTimeout atomic.Int64
}

// Timeout returns the request timeout.
func (t *Tunables) Timeout() time.Duration { return time.Duration(t.RequestTimeout.Load()) }
