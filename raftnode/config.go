package raftnode

import (
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	rwal "github.com/raftproxy/raftproxy/wal"
)

// Config configures one node.
type Config struct {
	DataDir        string // the node's directory; the WAL lives in DataDir/wal
	Self           Member // ID is filled in by Host
	ClusterID      uint64
	StateMachine   fsm.StateMachine
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
	// PeerTLS, when it names a certificate, makes the transport dial peers
	// over https with that certificate as its client certificate (read
	// again at each handshake, so it rotates) and verify them against its
	// TrustedCAFile. The peer listener's own TLS is the caller's.
	PeerTLS transport.TLSInfo
	// Liveness, shared by the groups of a process, lets an idle group
	// quiesce (quiesce.go); without it groups always tick.
	Liveness *Liveness
	// Heartbeats, shared by the groups of a process, sends their plain
	// heartbeats coalesced, one peer call per peer process and tick
	// (heartbeats.go); nil: each goes on its group's stream.
	Heartbeats *Heartbeats
	// Streams, shared by the groups of a process, carries their other
	// messages (not snapshots) to each peer process on one connection
	// (streams.go); nil: each goes on its group's rafthttp stream.
	Streams *Streams
	// WALSync, shared by the groups of a process, makes their WAL saves
	// durable together (one syncfs for all) once more than one group is
	// open; nil: each WAL fsyncs its own segment.
	WALSync *rwal.Syncer
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
	if c.Self.Format == 0 {
		// What this build decodes; a test may set less to stand for an
		// older member.
		c.Self.Format = entry.Version
	}
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
