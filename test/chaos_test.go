package test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftproxy/raftproxy/test/chaoscheck"
	"github.com/raftproxy/raftproxy/test/lincheck"
	"github.com/raftproxy/raftproxy/test/netns"
)

// Flags of a chaos campaign (make chaos sets them).
var (
	chaosCampaign = flag.Bool("chaos", false, "run TestChaosCampaign: one long chaos run with the flags below")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of the fault schedule and the clients (0: from the clock)")
	chaosDuration = flag.Duration("chaos.duration", 60*time.Second, "how long faults are injected in each run")
	chaosRuns     = flag.Int("chaos.runs", 1, "runs in a campaign, with seeds seed, seed+1, ...")
	chaosNemesis  = flag.String("chaos.nemesis", "kill,redis,pause,partition,torn,member,compact,script", "comma-separated nemeses")
	chaosNodes    = flag.Int("chaos.nodes", 3, "cluster size")
	chaosClients  = flag.Int("chaos.clients", 10, "concurrent clients")
	chaosNet      = flag.String("chaos.net", "auto", "netns (namespaces, needs root), loopback (no partitions) or auto")
	chaosShards   = flag.Int("chaos.shards", 0, "shards of a sharded cluster (0: a plain one); nemeses kill, pause, partition and compact only")
	chaosPlaced   = flag.Bool("chaos.placed", false, "with -chaos.shards=3 and 6 nodes: shards 1 and 2 placed on the first and the second half of the nodes (RAFT.SHARD ADD <node-id>...)")
	chaosOut      = flag.String("chaos.out", "", "directory for histories and visualizations (default: a temp dir)")
)

type chaosConfig struct {
	Seed     uint64
	Duration time.Duration
	Nemeses  []string
	Nodes    int
	Clients  int
	Net      string // netns, loopback or auto
	// Shards > 0 runs a sharded cluster of that many shards, the
	// workload's keys spread over them.
	Shards int
	// Placed places shards 1 and 2 on halves of the nodes
	// (ClusterOptions.Placed).
	Placed bool
	// Replay says how to run the schedule again; empty: the make chaos
	// line of these settings.
	Replay string
}

func (cfg chaosConfig) String() string {
	s := fmt.Sprintf("seed=%d duration=%v nemesis=%s nodes=%d clients=%d", cfg.Seed, cfg.Duration,
		strings.Join(cfg.Nemeses, ","), cfg.Nodes, cfg.Clients)
	if cfg.Shards > 0 {
		s += fmt.Sprintf(" shards=%d", cfg.Shards)
	}
	if cfg.Placed {
		s += " placed"
	}
	return s
}

// TestChaos is the short adversary every CI run carries: a few ~20 s runs,
// each with its own mix of faults, all three workloads and all checkers.
// Seeds come from the clock, so CI keeps exploring; a failure prints the
// seed and the make chaos line that replays its fault schedule.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: chaos runs take minutes; make test runs them")
	}
	base := uint64(time.Now().UnixNano())
	if *chaosSeed != 0 {
		base = *chaosSeed
	}
	scenarios := []struct {
		name    string
		nemeses string
		net     string
		shards  int
	}{
		{"crashes", "kill,redis,compact,script", "auto", 0},
		{"pauses and membership", "pause,member,script", "auto", 0},
		{"partitions", "partition,member,compact", "netns", 0},
		{"torn WAL", "torn,kill", "auto", 0},
		{"skewed clocks, full disks and lost redis data", "skew,disk,redis-loss,kill", "auto", 0},
		{"three shards", "kill,pause,partition,move", "netns", 3},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			runChaos(t, chaosConfig{Seed: base + uint64(i), Duration: 20 * time.Second,
				Nemeses: strings.Split(sc.nemeses, ","), Nodes: 3, Clients: 8, Net: sc.net, Shards: sc.shards})
		})
	}
}

// TestChaosCampaign is one long run configured by flags: make chaos.
func TestChaosCampaign(t *testing.T) {
	if !*chaosCampaign {
		t.Skip("a long campaign runs only with -chaos (make chaos SEED=... DURATION=... NEMESIS=...)")
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := 0; i < *chaosRuns; i++ {
		cfg := chaosConfig{Seed: seed + uint64(i), Duration: *chaosDuration, Nemeses: strings.Split(*chaosNemesis, ","),
			Nodes: *chaosNodes, Clients: *chaosClients, Net: *chaosNet, Shards: *chaosShards, Placed: *chaosPlaced}
		t.Run(fmt.Sprintf("seed=%d", cfg.Seed), func(t *testing.T) { runChaos(t, cfg) })
	}
}

func runChaos(t *testing.T, cfg chaosConfig) {
	for _, k := range cfg.Nemeses {
		if !contains(faultNemeses, k) && !contains(instantNemeses, k) {
			t.Fatalf("unknown nemesis %q; known: %s, %s", k, strings.Join(faultNemeses, ","), strings.Join(instantNemeses, ","))
		}
		if cfg.Shards > 0 && !contains([]string{"kill", "pause", "partition", "compact", "move"}, k) {
			// The others act on the primary group's redis or membership
			// alone, which a sharded node does not have to itself.
			t.Fatalf("nemesis %q does not run on a sharded cluster; use kill, pause, partition, compact and move", k)
		}
		if cfg.Placed && (cfg.Shards != 3 || cfg.Nodes < 6 || cfg.Nodes%2 != 0) {
			t.Fatalf("placed shards need SHARDS=3 and an even NODES of at least 6")
		}
		if cfg.Shards == 0 && k == "move" {
			t.Fatalf("the move nemesis moves slots between shards: give SHARDS=n")
		}
	}
	ctx := testContext(t, cfg.Duration+4*time.Minute)
	var topo *netns.Topology
	useNetns := cfg.Net == "netns" || (cfg.Net == "auto" && contains(cfg.Nemeses, "partition"))
	if useNetns {
		if err := netns.Available(); err != nil {
			t.Skipf("partitions need network namespaces, which this machine does not give: %v (run as root, or use -chaos.net=loopback without the partition nemesis)", err)
		}
		var err error
		// Spare namespaces for nodes that join in place of removed ones.
		topo, err = netns.New(ctx, "rpchs", cfg.Nodes+6)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Logf("removing the network namespaces: %v", err)
			}
		})
	} else if contains(cfg.Nemeses, "partition") {
		t.Fatalf("the partition nemesis needs -chaos.net=netns")
	}
	netName := "loopback"
	if topo != nil {
		netName = "netns"
	}
	t.Logf("chaos: %s net=%s", cfg, netName)

	opts := ClusterOptions{
		Nodes:          cfg.Nodes,
		Network:        topo,
		RequestTimeout: 2 * time.Second,
		// Snapshots (and so snapshot transfers to lagging nodes) happen
		// during the run, not only when the compact nemesis asks.
		ExtraArgs:  []string{"--snapshot-entries", "3000", "--snapshot-catchup-entries", "1000"},
		SkewClocks: contains(cfg.Nemeses, "skew"),
		Shards:     cfg.Shards,
		Placed:     cfg.Placed,
		PortRun:    cfg.Shards,
	}
	if contains(cfg.Nemeses, "disk") {
		if os.Geteuid() != 0 {
			t.Skip("the disk nemesis mounts a small tmpfs for each data directory, which needs root")
		}
		// Room for the WAL's two preallocated segments, snapshots and the
		// reserve (--min-free-disk-mib 80), which the nemesis fills.
		opts.DataDirMiB = 400
	}
	c := StartCluster(ctx, t, opts)
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	if contains(cfg.Nemeses, "script") {
		if err := prepareScripts(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr)
	}
	var router *slotRouter
	if cfg.Shards > 0 {
		var err error
		if router, err = shardRouter(ctx, c, c.Nodes[0]); err != nil {
			t.Fatal(err)
		}
	}
	var filler map[string]string
	if contains(cfg.Nemeses, "move") {
		filler = seedFiller(ctx, t, c)
	}
	w := startWorkload(cfg.Seed, cfg.Clients, addrs, router)
	nm := &nemesis{c: c, topo: topo, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e656d)), kinds: cfg.Nemeses, w: w, size: cfg.Nodes,
		logf: func(format string, args ...any) {
			t.Logf("%6.2fs nemesis: %s", time.Since(w.start).Seconds(), fmt.Sprintf(format, args...))
		}}
	nemErr := nm.run(ctx, time.Now().Add(cfg.Duration))
	healErr := nm.healAll(ctx)
	// Clients keep going a little after healing, so the end of the history
	// shows the cluster serving again.
	sleep(ctx, 3*time.Second)
	w.Stop()
	stopped := time.Now()
	if nemErr != nil || healErr != nil {
		t.Errorf("chaos %s: fault injection failed: %v %v", cfg, nemErr, healErr)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatalf("chaos %s: no stable cluster after healing: %v", cfg, err)
	}
	if cfg.Shards > 0 {
		// Moves end by themselves once the cluster is whole; the final
		// reads go to the slots' owners then.
		waitMovesDone(ctx, t, c, 2*time.Minute)
		// The shards are read through their proxies, where keys expire by
		// the read's time: the workload's deadlines (at most 2.7 s ahead)
		// must all be past, or a key could expire between two nodes' dumps.
		sleep(ctx, time.Until(stopped.Add(3*time.Second)))
		if err := router.reload(ctx, c.Nodes[0]); err != nil {
			t.Fatal(err)
		}
		dumps := c.AssertShardsIdentical(ctx)
		checkFiller(t, filler, dumps)
		for k, dump := range dumps {
			assertNoScriptWrites(t, dump)
			t.Logf("shard %d: %d keys, identical on every node that holds it", k, len(dump))
			if len(dump) == 0 {
				t.Errorf("shard %d holds no key: the workload did not spread over the shards", k)
			}
		}
	} else {
		assertNoScriptWrites(t, c.AssertRedisIdentical(ctx))
	}
	lists, ctrs, err := w.finalReads(ctx, c.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	reportChaos(t, cfg, netName, nm.count, w, lists, ctrs)
}

// listSearchTime bounds porcupine's search of the list-append history.
const listSearchTime = 15 * time.Second

// reportChaos checks the three histories and prints the verdict line; on
// failure it keeps the histories and visualizations and says how to replay.
func reportChaos(t *testing.T, cfg chaosConfig, netName string, faults int, w *workload,
	lists []chaoscheck.FinalRead, ctrs []chaoscheck.CounterFinal) {
	regOps := w.registers.Operations()
	kept, unknown, dropped := w.registers.Stats()
	_, regErr := lincheck.Check(regOps, 60*time.Second)
	ttlOps := w.ttl.Operations()
	var ttlErr error
	var ttlInfo porcupine.LinearizationInfo
	switch res, info := porcupine.CheckOperationsVerbose(lincheck.TTLModel, ttlOps, 60*time.Second); res {
	case porcupine.Illegal:
		ttlErr, ttlInfo = fmt.Errorf("the history of keys with deadlines is not linearizable against the wall clock"), info
	case porcupine.Unknown:
		ttlErr = fmt.Errorf("porcupine gave no verdict on the %d operations on keys with deadlines within 60 s", len(ttlOps))
	}
	listRes := chaoscheck.CheckListAppend(w.appends, lists)
	ctrRes := chaoscheck.CheckCounter(w.counters, ctrs)

	var listLinErr error
	listOps := chaoscheck.ListAppendOperations(w.appends)
	// The search keeps a copy of the lists for every state it visits: on a
	// history with many operations of unknown outcome it has grown past
	// this machine's 24 GiB within a minute (the kernel killed the test).
	// Its verdict is a second opinion beside the anomaly checker's, so it
	// gets less time, and with it less memory.
	res, info := porcupine.CheckOperationsVerbose(chaoscheck.ListAppendModel(), listOps, listSearchTime)
	switch res {
	case porcupine.Illegal:
		listLinErr = fmt.Errorf("list-append history is not linearizable (porcupine)")
	case porcupine.Unknown:
		t.Logf("porcupine gave no verdict on the list-append history within %v; the anomaly checker's verdict stands", listSearchTime)
	}

	total := len(regOps) + dropped + len(w.appends) + len(w.counters) + len(ttlOps) + w.ttl.Dropped()
	valid := regErr == nil && listRes.Valid && ctrRes.Valid && listLinErr == nil && ttlErr == nil
	verdict := "VALID"
	if !valid {
		verdict = "INVALID"
	}
	t.Logf("register: %d ops kept (%d unknown), %d dropped; %v", kept, unknown, dropped, errOr(regErr, "linearizable"))
	t.Logf("%s", listRes.Summary())
	t.Logf("%s", ctrRes.Summary())
	t.Logf("ttl: %d ops kept, %d dropped; %v", len(ttlOps), w.ttl.Dropped(), errOr(ttlErr, "linearizable against the wall clock"))
	line := fmt.Sprintf("chaos verdict: %s %s net=%s faults=%d ops=%d", verdict, cfg, netName, faults, total)
	fmt.Println(line)
	t.Log(line)
	if valid {
		return
	}
	dir := *chaosOut
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", fmt.Sprintf("raftproxy-chaos-%d-", cfg.Seed)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(dir, "list-append.json"), w.appends)
	writeJSON(t, filepath.Join(dir, "counter.json"), w.counters)
	writeJSON(t, filepath.Join(dir, "register.json"), regOps)
	writeJSON(t, filepath.Join(dir, "ttl.json"), ttlOps)
	if ttlInfo.PartialLinearizations() != nil {
		if f, err := os.Create(filepath.Join(dir, "ttl.html")); err == nil {
			_ = porcupine.Visualize(lincheck.TTLModel, ttlInfo, f)
			f.Close()
		}
	}
	writeJSON(t, filepath.Join(dir, "finals.json"), map[string]any{"lists": lists, "counters": ctrs})
	if listLinErr != nil {
		f, err := os.Create(filepath.Join(dir, "list-append.html"))
		if err == nil {
			_ = porcupine.Visualize(chaoscheck.ListAppendModel(), info, f)
			f.Close()
		}
	}
	if regErr != nil {
		t.Errorf("register: %v", regErr)
	}
	if ttlErr != nil {
		t.Errorf("ttl: %v (visualization %s)", ttlErr, filepath.Join(dir, "ttl.html"))
	}
	if listLinErr != nil {
		t.Errorf("%v: visualization %s", listLinErr, filepath.Join(dir, "list-append.html"))
	}
	for _, r := range []chaoscheck.Result{listRes, ctrRes} {
		for i, a := range r.Anomalies {
			if i == 20 {
				t.Errorf("%s: ... %d more anomalies", r.Workload, len(r.Anomalies)-i)
				break
			}
			t.Errorf("%s: %v", r.Workload, a)
		}
	}
	replay := cfg.Replay
	if replay == "" {
		replay = fmt.Sprintf("make chaos SEED=%d DURATION=%v NEMESIS=%s NODES=%d SHARDS=%d", cfg.Seed, cfg.Duration, strings.Join(cfg.Nemeses, ","), cfg.Nodes, cfg.Shards)
		if cfg.Placed {
			replay += " PLACED=1"
		}
	}
	t.Errorf("histories kept in %s; replay the fault schedule with: %s", dir, replay)
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func writeJSON(t *testing.T, path string, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Logf("writing %s: %v", path, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
