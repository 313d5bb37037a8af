package raftnode

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series a Host's nodes record as they work.
// They belong to the Host, not to one Node, so that they stay monotonic when
// the Host replaces its node (INIT, JOIN after a removal). Every labelled
// child is resolved once here: recording costs an atomic add or a histogram
// Observe, never a label lookup or an allocation.
type Metrics struct {
	leaderChanges      prometheus.Counter
	quiesced           prometheus.Gauge
	proposalsCommitted prometheus.Counter
	proposalsApplied   prometheus.Counter
	proposalsFailed    prometheus.Counter
	proposalDuration   prometheus.Histogram
	readIndexDuration  prometheus.Histogram
	walFsyncDuration   prometheus.Histogram
	snapshotMake       prometheus.Histogram
	snapshotLoad       prometheus.Histogram
	snapshotBytes      prometheus.Gauge
	redisApply         prometheus.Histogram
	redisRebuilds      prometheus.Counter

	transfer     *prometheus.CounterVec
	transferSent prometheus.Counter
	transferRecv prometheus.Counter

	failures      *prometheus.CounterVec
	failMake      prometheus.Counter
	failSend      prometheus.Counter
	failReceive   prometheus.Counter
	failLoad      prometheus.Counter
	collectorList []prometheus.Collector
}

// NewMetrics creates a Host's series, unregistered (see Collectors).
func NewMetrics() *Metrics {
	// WAL fsync buckets follow etcd's etcd_disk_wal_fsync_duration_seconds
	// (1ms to 8s), so etcd's alert thresholds carry over.
	fsyncBuckets := prometheus.ExponentialBuckets(0.001, 2, 14)
	requestBuckets := prometheus.ExponentialBuckets(0.0002, 2, 16) // 0.2ms to 6.5s
	snapshotBuckets := prometheus.ExponentialBuckets(0.01, 2, 15)  // 10ms to 164s
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "raftproxy_" + name, Help: help})
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "raftproxy_" + name, Help: help, Buckets: buckets})
	}
	m := &Metrics{
		leaderChanges: counter("leader_changes_seen_total", "Times this node saw a new leader (as etcd_server_leader_changes_seen_total)."),
		quiesced: prometheus.NewGauge(prometheus.GaugeOpts{Name: "raftproxy_quiesced",
			Help: "1 while this node's group is idle and quiesced: it does not tick or send heartbeats until a request or message wakes it."}),
		proposalsCommitted: counter("proposals_committed_total", "Raft log entries this node saw committed since it started; each is one batch of client requests, a membership change or a new leader's empty entry. Its rate is etcd_server_proposals_committed_total's."),
		proposalsApplied:   counter("proposals_applied_total", "Raft log entries this node applied (to redis or its membership) since it started."),
		proposalsFailed:    counter("proposals_failed_total", "Client requests this node proposed whose proposal failed: no leader, dropped, or outcome unknown at the deadline."),
		proposalDuration:   hist("proposal_duration_seconds", "Time from a batch's proposal to raft until it was applied on this node (one observation per batch).", requestBuckets),
		readIndexDuration:  hist("read_index_duration_seconds", "Time from the start of a ReadIndex round until this node had applied up to the read index (one observation per round).", requestBuckets),
		walFsyncDuration:   hist("wal_fsync_duration_seconds", "Duration of WAL saves that fsync (new entries or a new term or vote).", fsyncBuckets),
		snapshotMake:       hist("snapshot_make_duration_seconds", "Time to make a snapshot: redis's RDB written, stored and the log compacted.", snapshotBuckets),
		snapshotLoad:       hist("snapshot_load_duration_seconds", "Time to load a snapshot received from the leader into redis.", snapshotBuckets),
		snapshotBytes:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "raftproxy_snapshot_bytes", Help: "Size of this node's newest snapshot (RDB file) in bytes."}),
		redisApply:         hist("redis_apply_duration_seconds", "Duration of one pipelined apply round trip to the local redis.", requestBuckets),
		redisRebuilds:      counter("redis_rebuilds_total", "Times this node rebuilt its redis from its snapshot and log after the start: redis restarted or stopped answering, an apply failed, or another client changed redis's data (the log says which)."),
		transfer: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "raftproxy_snapshot_transfer_bytes_total",
			Help: "Snapshot bytes sent to or received from peers."}, []string{"direction"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "raftproxy_snapshot_failures_total",
			Help: "Snapshots that failed, by operation: make, send, receive (refused after transfer), load."}, []string{"op"}),
	}
	m.transferSent = m.transfer.WithLabelValues("sent")
	m.transferRecv = m.transfer.WithLabelValues("received")
	m.failMake = m.failures.WithLabelValues("make")
	m.failSend = m.failures.WithLabelValues("send")
	m.failReceive = m.failures.WithLabelValues("receive")
	m.failLoad = m.failures.WithLabelValues("load")
	m.collectorList = []prometheus.Collector{m.leaderChanges, m.quiesced, m.proposalsCommitted, m.proposalsApplied, m.proposalsFailed,
		m.proposalDuration, m.readIndexDuration, m.walFsyncDuration, m.snapshotMake, m.snapshotLoad, m.snapshotBytes,
		m.redisApply, m.redisRebuilds, m.transfer, m.failures}
	return m
}

// Collectors returns the series, for a registry.
func (m *Metrics) Collectors() []prometheus.Collector { return m.collectorList }

// Metrics returns the host's series.
func (h *Host) Metrics() *Metrics { return h.cfg.metrics }

func since(start time.Time) float64 { return time.Since(start).Seconds() }

// WaitApplied waits, at most timeout, until this node has applied index
// and its redis holds the applied log (/readyz's applied check).
func (n *Node) WaitApplied(index uint64, timeout time.Duration) error {
	return n.applier.waitApplied(index, timeout)
}
