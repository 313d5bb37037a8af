package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
	"github.com/raftproxy/raftproxy/tlsfiles"
	"github.com/raftproxy/raftproxy/wal"
)

// stack is what a node runs for one raft group: the redis-server behind
// it, the apply layer, the raft host and the proxy that serves its clients
// on a port of its own.
type stack struct {
	index   int
	sup     *backend.Supervisor // nil when redis is the operator's (--redis)
	sm      *backend.StateMachine
	machine *apply.Machine
	host    *raftnode.Host
	srv     *proxy.Server
	ln      net.Listener
	// redisAddr is the redis-server it applies to, and redisPass its
	// password.
	redisAddr, redisPass string
	// gate continues the redis-server before any connection uses it, when
	// it may be stopped while idle (--redis-idle-stop); nil: never.
	gate *backend.Hibernation
	// unhub takes the stack's broker out of the node's pub/sub hub.
	unhub func()
}

// stacks are a node's groups: the primary one (index 0, which RAFT.CLUSTER
// INIT makes, on --listen) and, in a sharded cluster, one per other shard,
// each on the client port its index above --listen's. Their peer traffic
// shares one listener (mux). It is the proxies' view of the other shards
// (proxy.Sharding).
type stacks struct {
	ctx           context.Context
	o             options
	log           *slog.Logger
	lv            *slog.LevelVar
	mux           *raftnode.PeerMux
	peerTLS       transport.TLSInfo
	liveness      *raftnode.Liveness   // nil: groups never quiesce
	walSync       *wal.Syncer          // nil: each WAL fsyncs itself
	heartbeats    *raftnode.Heartbeats // nil: each group's heartbeats go alone
	streams       *raftnode.Streams    // nil: each group's messages go on its own streams
	hub           *pubsub.Hub          // the shards' brokers: PUBLISH reaches every shard's subscribers
	remote        *remotes             // the shards placed on other nodes
	clientTLS     *tlsfiles.Files
	memberTLS     func(string) *tls.Config
	followerProxy *atomic.Bool
	movePause     *atomic.Uint64 // migrate.Movers.Pause
	errc          chan error     // a server that stopped serving

	mu  sync.Mutex
	all map[int]*stack
	// opening serialises Open: two of one shard would both listen.
	opening sync.Mutex
	// sharded is set once routing data was seen (Sharded).
	sharded atomic.Bool
	first   atomic.Pointer[stack] // all[0]
	// settings are the primary's RAFT.CONFIG settings, which every shard's
	// proxy shares, as their hosts share the primary's tunables.
	settings *proxy.Settings
}

// stackSpec is what differs between the primary stack and a shard's.
type stackSpec struct {
	index              int
	dataDir            string
	ln                 net.Listener
	redis, redisPass   string // "" redis: supervise one in dataDir
	seedRDB            string
	forceNewCluster    bool
	listen, advertised string
}

// shardDir is where shard index keeps its data on a node.
func shardDir(dataDir string, index int) string {
	return filepath.Join(dataDir, "shards", strconv.Itoa(index))
}

// start builds the stack of sp and starts serving its clients; its host
// has no node until it is restarted, initialised or joined.
func (ss *stacks) start(sp stackSpec) (st *stack, err error) {
	log := ss.log
	if sp.index != 0 {
		log = log.With("shard", sp.index)
	}
	st = &stack{index: sp.index, ln: sp.ln}
	defer func() {
		if err != nil {
			st.stop(context.Background())
		}
	}()
	redisAddr, redisPass := sp.redis, sp.redisPass
	if redisAddr == "" {
		sup, err := backend.StartSupervisor(sp.dataDir, log)
		if err != nil {
			return st, err
		}
		st.sup = sup
		redisAddr, redisPass = sup.Socket, sup.Password
		if ss.o.redisIdleStop > 0 {
			st.gate = sup.Hibernate(ss.o.redisIdleStop)
		}
	}
	st.redisAddr, st.redisPass = redisAddr, redisPass
	// The command table comes first: the applier asks it which keys a
	// command touches, and the proxy routes by it.
	cmds, err := proxy.LoadCommands(ss.ctx, st.gate, redisAddr, redisPass, log)
	if err != nil {
		return st, err
	}
	o := ss.o
	sm := backend.NewStateMachine(redisAddr, log.With("component", "applier"))
	sm.SetPassword(redisPass)
	sm.SetGate(st.gate)
	sm.SetDefaultPassword(o.requirePass)
	sm.SetKeys(cmds.AccessedKeys)
	sm.SetDenyOOM(cmds.DenyOOM)
	st.sm = sm
	self := raftnode.Member{Addr: sp.advertised, PeerAddr: o.advertisePeer}
	// The apply layer runs committed commands on redis: it publishes to the
	// node's subscribers, and its events (what the log wrote) are followed
	// by the proxy.
	broker := pubsub.NewBroker()
	st.machine = apply.New(sm, cmds, broker)
	cfg := raftnode.Config{
		DataDir:        sp.dataDir,
		Self:           self,
		StateMachine:   st.machine,
		Logger:         log,
		TickInterval:   o.tick,
		ElectionTicks:  o.electionTicks,
		RequestTimeout: o.requestTimeout,
		ClockOffset:    testClockOffset(log),

		SnapshotEntries:        o.snapEntries,
		SnapshotBytes:          o.snapMiB << 20,
		MinFreeDisk:            o.minFreeMiB << 20,
		SnapshotCatchUpEntries: o.snapCatchUp,
		SnapshotCatchUpBytes:   o.snapCatchUpMiB << 20,
		SnapshotKeep:           o.snapKeep,
		ForceNewCluster:        sp.forceNewCluster,
		PeerTLS:                ss.peerTLS,
		Liveness:               ss.liveness,
		WALSync:                ss.walSync,
		Heartbeats:             ss.heartbeats,
		Streams:                ss.streams,
		SeedRDB:                sp.seedRDB,
	}
	if sp.index != 0 {
		cfg.Tunables = ss.primary().host.Tunables()
	}
	st.host = raftnode.NewHost(cfg)
	host := st.host
	// The applier decides by the shard's id from the first entry it
	// applies, a replay's included: before the node is handed out.
	st.machine.SetShard(func() string {
		if id := host.ClusterID(); id != 0 {
			return raftnode.IDString(id)
		}
		return ""
	})
	// A redis written by another client, or restarted by its supervisor,
	// is rebuilt at once, not at the next health check.
	check := func() {
		if n := host.Node(); n != nil {
			n.CheckStateMachine()
		}
	}
	sm.SetOnTaint(check)
	if st.sup != nil {
		st.sup.SetOnRestart(check)
	}
	sets := ss.settings
	if sp.index == 0 {
		sets = settings(sp.dataDir, ss.followerProxy, ss.movePause, host, ss.lv)
	}
	st.srv, err = proxy.New(ss.ctx, proxy.Config{
		Settings:      sets,
		Cluster:       hostCluster{host},
		Sharding:      ss,
		ShardIndex:    sp.index,
		ShardRouting:  st.machine.Routing,
		Seeded:        sp.seedRDB != "",
		Events:        st.machine.Events(),
		Broker:        broker,
		Commands:      cmds,
		RedisAddr:     redisAddr,
		RedisGate:     st.gate,
		RunID:         sm.RunID,
		Self:          self,
		FollowerProxy: ss.followerProxy,
		Timeout:       host.Tunables().Timeout,
		Logger:        log,
		Scripts:       sm.Scripts(),
		Volatile:      sm.Volatile,
		Settle:        sm.Settle,
		Memory:        sm,
		MemberTLS:     ss.memberTLS,

		RedisPassword:   redisPass,
		RequirePass:     o.requirePass,
		MaxRequestBytes: int64(o.maxRequest),
		MaxClients:      o.maxClients,
		IdleTimeout:     o.idleTimeout,
		OutputLimit:     int64(o.outputLimit),
		PubSubLimit:     int64(o.pubsubLimit),
	})
	if err != nil {
		return st, err
	}
	if sp.index == 0 {
		ss.settings = sets
		ss.first.Store(st)
	}
	ss.hub.Join(broker, func() uint64 {
		if n := host.Node(); n != nil {
			return n.CommitIndex()
		}
		return 0
	})
	st.unhub = func() { ss.hub.Leave(broker) }
	ss.mux.Add(host)
	ss.mu.Lock()
	ss.all[sp.index] = st
	ss.mu.Unlock()
	return st, nil
}

// serve serves the stack's clients, once its host resumed what it had.
func (ss *stacks) serve(st *stack) {
	go func() {
		if err := st.srv.Serve(st.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			ss.errc <- fmt.Errorf("shard %d: %w", st.index, err)
		}
	}()
}

// stop stops what start started, in reverse; srv was shut down before
// (or never served, and then its listener is closed here).
func (st *stack) stop(ctx context.Context) {
	if st.unhub != nil {
		st.unhub()
	}
	if st.ln != nil {
		st.ln.Close()
	}
	if st.host != nil {
		st.host.Stop()
	}
	if st.sup != nil {
		// redis keeps nothing of its own (it is rebuilt from the log), and
		// a busy one ignores SIGTERM: it is killed after 2 s.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st.sup.Stop(sctx)
	}
}

// stopAll stops every stack, the shards' together and then the primary's
// (which the shards ask for routing data while they stop). Each waits up
// to 2 s for its redis-server, which acts on SIGTERM at its next cron
// tick, up to a second away at hz 1: one after another, a node of 16
// shards would outlast a container's stop grace period.
func (ss *stacks) stopAll(ctx context.Context) {
	var primary *stack
	var wg sync.WaitGroup
	for _, st := range ss.list() {
		if st.index == 0 {
			primary = st
			continue
		}
		wg.Go(func() { st.stop(ctx) })
	}
	wg.Wait()
	if primary != nil {
		primary.stop(ctx)
	}
}

// primary is the primary group's stack; every keyed command of a shard
// asks it for the routing data, so it is read without the lock.
func (ss *stacks) primary() *stack { return ss.first.Load() }

// list returns the stacks, the primary first.
// redisStopped counts the stacks' redis-servers stopped for being idle.
func (ss *stacks) redisStopped() (n int) {
	for _, st := range ss.list() {
		if st.gate.Stopped() {
			n++
		}
	}
	return n
}

// redisStops counts the times the stacks' redis-servers were stopped.
func (ss *stacks) redisStops() (n uint64) {
	for _, st := range ss.list() {
		n += st.gate.Stops()
	}
	return n
}

func (ss *stacks) list() []*stack {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stack, 0, len(ss.all))
	if p := ss.all[0]; p != nil {
		out = append(out, p)
	}
	for i, st := range ss.all {
		if i != 0 {
			out = append(out, st)
		}
	}
	return out
}

// shardHosts returns the hosts of the shards other than the primary, by
// index (for /readyz).
func (ss *stacks) shardHosts() map[int]*raftnode.Host {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make(map[int]*raftnode.Host, len(ss.all))
	for i, st := range ss.all {
		if i != 0 {
			out[i] = st.host
		}
	}
	return out
}

// Routing implements proxy.Sharding: the primary group's routing data,
// once its node serves (a node rebuilding or replaying its log holds a
// part of it, or none).
func (ss *stacks) Routing() *slotmap.Map {
	p := ss.primary()
	if p == nil {
		return nil
	}
	n := p.host.Node()
	if n == nil || !n.Serving() {
		return nil
	}
	rt := p.machine.Routing()
	if rt != nil {
		ss.sharded.Store(true)
	}
	return rt
}

// Sharded implements proxy.Sharding: this node holds a shard beside the
// primary group, or saw routing data since it started.
func (ss *stacks) Sharded() bool {
	if ss.sharded.Load() {
		return true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.all) > 1
}

// Group implements proxy.Sharding.
func (ss *stacks) Group(id string) proxy.Group {
	for _, st := range ss.list() {
		if n := st.host.Node(); n != nil && raftnode.IDString(n.ClusterID()) == id {
			return n
		}
	}
	return nil
}

// GroupRouting implements proxy.Sharding.
func (ss *stacks) GroupRouting(id string) *slotmap.Map {
	for _, st := range ss.list() {
		if n := st.host.Node(); n != nil && raftnode.IDString(n.ClusterID()) == id {
			return st.machine.Routing()
		}
	}
	return nil
}

// Elsewhere implements proxy.Sharding.
func (ss *stacks) Elsewhere(id string) (proxy.RemoteShard, bool) { return ss.remote.Elsewhere(id) }

// Open implements proxy.Sharding: it starts the stack of shard index, on
// the client port index above --listen's, with its data in
// --data-dir/shards/<index>.
func (ss *stacks) Open(index int) (*proxy.Server, error) {
	if index <= 0 {
		return nil, fmt.Errorf("invalid shard index %d", index)
	}
	ss.opening.Lock()
	defer ss.opening.Unlock()
	ss.mu.Lock()
	st := ss.all[index]
	ss.mu.Unlock()
	if st != nil {
		return st.srv, nil
	}
	st, err := ss.startShard(index)
	if err != nil {
		return nil, err
	}
	ss.serve(st)
	return st.srv, nil
}

func (ss *stacks) startShard(index int) (*stack, error) {
	dir := shardDir(ss.o.dataDir, index)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	listen := proxy.ShardAddr(ss.o.listen, index)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen for the clients of shard %d on %s (the port %d above --listen's): %w", index, listen, index, err)
	}
	if ss.clientTLS != nil {
		auth, _ := tlsfiles.ParseClientAuth(ss.o.tlsClientAuth)
		ln = tls.NewListener(ln, ss.clientTLS.ServerConfig(auth, nil, nil))
	}
	return ss.start(stackSpec{index: index, dataDir: dir, ln: ln, listen: listen, advertised: proxy.ShardAddr(ss.o.advertise, index)})
}

// restoreShards starts the stacks of the shards this node held when it
// stopped, from their data directories.
func (ss *stacks) restoreShards() error {
	entries, err := os.ReadDir(filepath.Join(ss.o.dataDir, "shards"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		index, err := strconv.Atoi(e.Name())
		if err != nil || index <= 0 || !wal.Exist(filepath.Join(shardDir(ss.o.dataDir, index), "wal")) {
			continue
		}
		st, err := ss.startShard(index)
		if err != nil {
			return err
		}
		if _, err := st.host.Restart(); err != nil {
			return fmt.Errorf("resume shard %d from %s: %w", index, shardDir(ss.o.dataDir, index), err)
		}
		ss.serve(st)
	}
	return nil
}
