// Package observe serves the operator endpoints: /metrics (Prometheus),
// /livez, /readyz and Go's /debug/pprof profiles.
package observe

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/version"
)

// Handler returns the endpoints for host; extra are more series to export
// (the proxy server's client metrics). Go's /debug/pprof profiles are
// served only with pprof: they need no authentication, and the port is
// often published beside /metrics. The etcd packages register their own
// series (WAL fsync, transport) in the default registry, which also holds
// the Go and process collectors; they are exported too.
func Handler(host *raftnode.Host, pprofOn bool, extra ...prometheus.Collector) http.Handler {
	return ShardedHandler(host, nil, pprofOn, extra...)
}

// ShardedHandler is Handler for a node that may hold a sharded cluster's
// other shards: shards returns their hosts by index, and /readyz checks
// each as it checks the primary group's. The unlabelled metrics are the
// primary group's; the raftproxy_shard_* series cover every group, the
// primary's included, labelled with the shard id.
func ShardedHandler(host *raftnode.Host, shards func() map[int]*raftnode.Host, pprofOn bool, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	status := func(f func(raftnode.Status, *raftnode.Node) float64) func() float64 {
		return func() float64 {
			n := host.Node()
			if n == nil {
				return 0
			}
			return f(n.Status(), n)
		}
	}
	// The raft state gauges read Node.Status, which INFO raft and RAFT.INFO
	// print, so the three always agree.
	gauge := func(name, help string, f func(raftnode.Status, *raftnode.Node) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "raftproxy_" + name, Help: help}, status(f)))
	}
	gauge("has_leader", "1 if this node knows a leader.", func(s raftnode.Status, _ *raftnode.Node) float64 { return b2f(s.Leader != 0) })
	gauge("is_leader", "1 if this node is the leader.", func(s raftnode.Status, _ *raftnode.Node) float64 { return b2f(s.Role == "leader") })
	gauge("is_learner", "1 if this node is a learner.", func(s raftnode.Status, _ *raftnode.Node) float64 { return b2f(s.Role == "learner") })
	gauge("term", "Current raft term.", func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Term) })
	gauge("commit_index", "Highest log index known committed.", func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Commit) })
	gauge("applied_index", "Highest log index applied to redis.", func(s raftnode.Status, _ *raftnode.Node) float64 { return float64(s.Applied) })
	gauge("redis_up", "1 if the local redis holds the applied log.", func(_ raftnode.Status, n *raftnode.Node) float64 { return b2f(n.Serving()) })
	gauge("disk_full", "1 while this node waits for free space on the raft log's disk (--min-free-disk): it writes nothing, and its clients get MISCONF.", func(_ raftnode.Status, n *raftnode.Node) float64 {
		full, _ := n.DiskFull()
		return b2f(full)
	})
	gauge("disk_free_bytes", "Free space on the raft log's file system, as last measured before a write.", func(_ raftnode.Status, n *raftnode.Node) float64 { return float64(n.DiskFree()) })
	gauge("clock_offset_seconds", "This node's clock minus the leader's stamp of the last entry it applied live (clock skew plus replication delay). Keys expire by the leader's clock, so skew changes nothing here; a large offset on the leader shows in every TTL.", func(_ raftnode.Status, n *raftnode.Node) float64 { return n.ClockOffset().Seconds() })
	gauge("script_busy", "1 while a script or function has run past busy-reply-threshold on this node: clients get -BUSY until it ends or SCRIPT KILL / FUNCTION KILL.", func(_ raftnode.Status, n *raftnode.Node) float64 {
		_, busy := n.Busy()
		return b2f(busy)
	})
	gauge("voting_members", "Voting members in this node's view of the cluster's configuration.", func(s raftnode.Status, _ *raftnode.Node) float64 {
		n := 0
		for _, m := range s.Nodes {
			if m.Voting {
				n++
			}
		}
		return float64(n)
	})
	gauge("voting_members_unreachable", "Voting members other than this node that its peer transport cannot reach now (RAFT.INFO's state:unreachable).", func(s raftnode.Status, _ *raftnode.Node) float64 {
		n := 0
		for _, m := range s.Nodes {
			if m.Voting && m.State == "unreachable" {
				n++
			}
		}
		return float64(n)
	})
	gauge("apply_halted", "1 while this node applies nothing because it cannot apply a committed log entry (its build is older than the entry's format, or its copy is damaged): it serves nothing until it is upgraded or its data replaced.", func(_ raftnode.Status, n *raftnode.Node) float64 {
		halted, _ := n.Halted()
		return b2f(halted)
	})
	bi := version.Get()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "raftproxy_build_info",
		Help:        "Always 1; the labels name this build: release, commit, Go version and the log entry format it writes.",
		ConstLabels: prometheus.Labels{"version": bi.Release, "commit": bi.CommitShort(), "goversion": bi.Go, "entry_format": strconv.Itoa(bi.EntryFormat)}},
		func() float64 { return 1 }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "raftproxy_proposals_pending_total",
		Help: "Client requests this node proposed, or queued to propose, whose outcome is not known yet (etcd_server_proposals_pending)."},
		func() float64 {
			if n := host.Node(); n != nil {
				return float64(n.PendingProposals())
			}
			return 0
		}))

	counter := func(name, help string, f func(*raftnode.Counters) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "raftproxy_" + name, Help: help}, func() float64 {
			n := host.Node()
			if n == nil {
				return 0
			}
			return float64(f(n.Counters()))
		}))
	}
	counter("proposed_requests_total", "Client requests this node proposed.", func(c *raftnode.Counters) uint64 { return c.Requests.Load() })
	counter("proposed_entries_total", "Log entries (batches of requests) this node proposed.", func(c *raftnode.Counters) uint64 { return c.Batches.Load() })
	counter("ready_total", "Raft Ready structs handled.", func(c *raftnode.Counters) uint64 { return c.Readies.Load() })
	counter("wal_saves_total", "WAL saves of entries or hard state (one fsync each).", func(c *raftnode.Counters) uint64 { return c.PersistRounds.Load() })
	counter("wal_entries_total", "Entries written to the WAL.", func(c *raftnode.Counters) uint64 { return c.Entries.Load() })
	counter("applied_commands_total", "Commands applied to the local redis.", func(c *raftnode.Counters) uint64 { return c.Applied.Load() })
	counter("apply_rounds_total", "Pipelined apply round trips to the local redis.", func(c *raftnode.Counters) uint64 { return c.ApplyRounds.Load() })
	counter("reads_total", "Linearizable reads started on this node.", func(c *raftnode.Counters) uint64 { return c.Reads.Load() })
	counter("read_index_rounds_total", "ReadIndex rounds (one serves every read waiting for it).", func(c *raftnode.Counters) uint64 { return c.ReadRounds.Load() })
	counter("scripts_killed_total", "Scripts and functions this node stopped because their kill was committed (SCRIPT KILL / FUNCTION KILL).", func(c *raftnode.Counters) uint64 { return c.Killed.Load() })
	counter("resent_entries_total", "Batches this node proposed again to a new leader, not yet applied when the leader changed (the first copy to commit is applied, any other skipped).", func(c *raftnode.Counters) uint64 { return c.Resent.Load() })
	counter("kill_rebuilds_total", "Rebuilds of the local redis without a killed script that had run to its end (or written) here.", func(c *raftnode.Counters) uint64 { return c.Rebuilt.Load() })

	for _, reason := range raftnode.PeerRefusalReasons() {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "raftproxy_peer_refused_total", Help: "Peer (raft) requests and TLS handshakes refused, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(host.PeerRefusals().Get(reason)) }))
	}
	reg.MustRegister(newShardCollector(host, shards))
	reg.MustRegister(host.Metrics().Collectors()...)
	reg.MustRegister(extra...)
	reg.MustRegister(etcdRenamed{prometheus.DefaultGatherer})

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, prometheus.DefaultGatherer}, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { readyz(w, r, host, shards) })
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// appliedWait bounds how long /readyz waits for this node to apply what was
// committed when it asked: under load applied trails commit by a moment,
// and a node that keeps up must not flap out of readiness for it.
const appliedWait = time.Second

// readyz: this node is in a cluster, knows a leader, its redis holds the
// applied log, and it has applied what it knew to be committed; so does
// every shard it holds, in a sharded cluster.
func readyz(w http.ResponseWriter, r *http.Request, host *raftnode.Host, shards func() map[int]*raftnode.Host) {
	n := host.Node()
	checks := []check{{"cluster", n != nil}}
	// One wait for every group: a node of many shards answers in time.
	deadline := time.Now().Add(appliedWait)
	if n != nil {
		checks = append(checks, groupChecks(n, "", deadline)...)
	}
	if shards != nil {
		hosts := shards()
		for _, i := range slices.Sorted(maps.Keys(hosts)) {
			if sn := hosts[i].Node(); sn != nil {
				checks = append(checks, groupChecks(sn, fmt.Sprintf("shard %d ", i), deadline)...)
			}
		}
	}
	var b strings.Builder
	ready := true
	for _, c := range checks {
		res := "ok"
		if !c.ok {
			res, ready = "failed", false
		}
		fmt.Fprintf(&b, "[%s] %s\n", res, c.name)
	}
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if _, verbose := r.URL.Query()["verbose"]; verbose || !ready {
		fmt.Fprint(w, b.String())
	}
	if ready {
		fmt.Fprintln(w, "ok")
	}
}

type check struct {
	name string
	ok   bool
}

// groupChecks are the checks of one group's node, named with prefix; it
// waits for the node to apply until deadline at most.
func groupChecks(n *raftnode.Node, prefix string, deadline time.Time) []check {
	s := n.Status()
	serving := n.Serving()
	// Without its redis the node applies nothing: no use waiting.
	applied := s.Applied >= s.Commit || (serving && n.WaitApplied(s.Commit, max(time.Until(deadline), 0)) == nil)
	full, _ := n.DiskFull()
	halted, _ := n.Halted()
	return []check{{prefix + "leader", s.Leader != 0}, {prefix + "redis", serving}, {prefix + "applied", applied},
		{prefix + "disk", !full}, {prefix + "log", !halted}}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
