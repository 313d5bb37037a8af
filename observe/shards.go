package observe

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftproxy/raftproxy/raftnode"
)

// shardCollector exports each group a node holds as raftproxy_shard_*
// series labelled with the shard's id (RAFT.SHARD LIST's first element),
// the primary group's included: the unlabelled series describe the primary
// group only, and an operator of a sharded cluster needs every shard's
// leader, progress and health. Values are read at scrape time from the same
// places as the unlabelled ones (Node.Status, Node.Counters).
type shardCollector struct {
	primary *raftnode.Host
	shards  func() map[int]*raftnode.Host // nil: only the primary group
	descs   []*prometheus.Desc            // shardSeries', made once
}

func newShardCollector(primary *raftnode.Host, shards func() map[int]*raftnode.Host) shardCollector {
	c := shardCollector{primary: primary, shards: shards}
	for _, s := range shardSeries {
		c.descs = append(c.descs, prometheus.NewDesc("raftproxy_shard_"+s.name, s.help, []string{"shard"}, nil))
	}
	return c
}

// shardSeries are the per-shard series: gauges, then counters.
var shardSeries = []struct {
	name, help string
	counter    bool
	value      func(raftnode.Status, *raftnode.Node) float64
}{
	{"has_leader", "1 if this node knows a leader of the shard's group.", false,
		func(s raftnode.Status, _ *raftnode.Node) float64 { return b2f(s.Leader != 0) }},
	{"is_leader", "1 if this node leads the shard's group.", false,
		func(s raftnode.Status, _ *raftnode.Node) float64 { return b2f(s.Role == "leader") }},
	{"term", "The shard's group's current raft term.", false,
		func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Term) }},
	{"commit_index", "Highest log index of the shard's group known committed.", false,
		func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Commit) }},
	{"applied_index", "Highest log index of the shard's group applied to its redis.", false,
		func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Applied) }},
	{"redis_up", "1 if the shard's redis holds the applied log.", false,
		func(_ raftnode.Status, n *raftnode.Node) float64 { return b2f(n.Serving()) }},
	{"quiesced", "1 while the shard's group is idle and quiesced on this node.", false,
		func(_ raftnode.Status, n *raftnode.Node) float64 { return b2f(n.Quiesced()) }},
	{"apply_halted", "1 while this node applies nothing of the shard's log (see raftproxy_apply_halted).", false,
		func(_ raftnode.Status, n *raftnode.Node) float64 { halted, _ := n.Halted(); return b2f(halted) }},
	{"proposed_requests_total", "Client requests this node proposed to the shard's group.", true,
		func(_ raftnode.Status, n *raftnode.Node) float64 { return float64(n.Counters().Requests.Load()) }},
	{"applied_commands_total", "Commands of the shard's log applied to its redis on this node.", true,
		func(_ raftnode.Status, n *raftnode.Node) float64 { return float64(n.Counters().Applied.Load()) }},
	{"wal_saves_total", "WAL saves of the shard's group that made entries or hard state durable.", true,
		func(_ raftnode.Status, n *raftnode.Node) float64 { return float64(n.Counters().PersistRounds.Load()) }},
}

// ShardSeriesNames are the names of the raftproxy_shard_* series, which a
// node exports only once it holds a group.
func ShardSeriesNames() []string {
	names := make([]string, len(shardSeries))
	for i, s := range shardSeries {
		names[i] = "raftproxy_shard_" + s.name
	}
	return names
}

func (c shardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c shardCollector) Collect(ch chan<- prometheus.Metric) {
	hosts := []*raftnode.Host{c.primary}
	if c.shards != nil {
		for _, h := range c.shards() {
			hosts = append(hosts, h)
		}
	}
	for _, h := range hosts {
		n := h.Node()
		if n == nil {
			continue // not in a cluster (yet): no shard to name
		}
		st := n.Status()
		id := raftnode.IDString(n.ClusterID())
		for i, s := range shardSeries {
			kind := prometheus.GaugeValue
			if s.counter {
				kind = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(c.descs[i], kind, s.value(st, n), id)
		}
	}
}
