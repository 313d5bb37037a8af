// Package proxy serves Redis clients: it reads their commands, classifies
// each one, and routes it: writes are proposed to raft, reads wait for a
// ReadIndex and run on the local redis, and a few commands are answered by
// the proxy itself. Replies go back in the order the commands came.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

// Config configures a Server.
type Config struct {
	// Cluster holds the node of the Raft group this proxy serves.
	Cluster Cluster
	// Sharding is the node's other shards, for a node that may serve a
	// sharded cluster (nil: never sharded); ShardIndex is this server's
	// shard (0: the primary group, the one RAFT.CLUSTER INIT makes).
	Sharding   Sharding
	ShardIndex int
	// ShardRouting is the routing data as this server's own group's log
	// applied it (apply.Machine.Routing): which slots it serves, imports
	// and moves out, as its applier decides them.
	ShardRouting func() *slotmap.Map
	// Seeded: RAFT.CLUSTER INIT makes the cluster from a seed RDB, whose
	// keys would all be in the primary group: it cannot be sharded.
	Seeded bool
	// Events is the apply layer's feed of what the log wrote (blocked
	// clients, tracking, settings and pauses follow it); Broker holds this
	// node's subscriptions, which the apply layer publishes to.
	Events *apply.Feed
	Broker *pubsub.Broker
	// Commands is the local redis's command table (LoadCommands).
	Commands *Commands
	// RedisAddr is the local redis-server (host:port or unix socket path),
	// and RedisPassword its requirepass ("" for none).
	RedisAddr, RedisPassword string
	// RedisGate continues the local redis-server before a connection uses
	// it, when it may be stopped while idle (backend.Hibernation); nil:
	// it never is.
	RedisGate *backend.Hibernation
	// RunID returns the run_id of the redis the log was last replayed into;
	// reads are refused on a redis with any other run_id.
	RunID func() string
	// Self holds this node's advertised client and peer addresses.
	Self raftnode.Member
	// FollowerProxy switches whether followers serve data commands (else
	// they answer -MOVED to the leader); RAFT.CONFIG SET follower-proxy
	// flips it at run time. Nil: off.
	FollowerProxy *atomic.Bool
	// Timeout returns the request timeout in force (it may change at run time).
	Timeout     func() time.Duration
	JoinTimeout time.Duration
	Logger      *slog.Logger
	// Settings backs RAFT.CONFIG; nil disables it.
	Settings *Settings
	// Scripts finds scripts loaded through the log, to turn EVALSHA into
	// EVAL; nil: every EVALSHA gets NOSCRIPT.
	Scripts ScriptRegistry

	// RequirePass is the default user's password, as redis's requirepass:
	// a client runs nothing but AUTH, HELLO AUTH, QUIT and RESET before it
	// gives it. Empty: no authentication. RAFT.CLUSTER JOIN gives it to the
	// member it contacts, so every member needs the same.
	RequirePass string
	// MaxRequestBytes bounds one bulk string of a command (redis's
	// proto-max-bulk-len); 0: resp.MaxBulkLen.
	MaxRequestBytes int64
	// MaxClients refuses connections beyond it (redis's maxclients); 0: no
	// limit.
	MaxClients int
	// IdleTimeout closes a client that sent nothing for that long, unless
	// it is blocked or subscribed (redis's timeout); 0: never.
	IdleTimeout time.Duration
	// OutputLimit disconnects a client whose replies waiting to be written
	// pass it (redis's client-output-buffer-limit normal, hard); 0: none.
	// PubSubLimit is the same for a subscriber's messages and replies;
	// 0: 32 MiB, redis's default.
	OutputLimit, PubSubLimit int64
	// Volatile says which databases may hold keys with a deadline
	// (proxy/expiry.go); nil: any may.
	Volatile Volatile
	// Memory is the memory limit's state (proxy/memory.go); nil: none.
	Memory Memory
	// Settle waits until what redis did before now is known, and fails if
	// another client changed its data (backend.StateMachine.Settle): the
	// reads that ran are then not answered. Nil: never.
	Settle func(ctx context.Context) error
	// MemberTLS, if set, returns the TLS configuration for connecting to
	// another member's client address (RAFT.CLUSTER JOIN, forwarded admin
	// commands); nil: those connections are in the clear.
	MemberTLS func(addr string) *tls.Config
}

// Server is the client-facing RESP server of one node.
type Server struct {
	cfg           Config
	log           *slog.Logger
	table         table
	databases     int
	redisVersion  string
	followerProxy *atomic.Bool
	// stats are the command statistics in clients' terms (cmdstats.go).
	stats *statsKeeper
	// monitors are the connections in MONITOR (monitor.go).
	monitors monitors
	// pause is CLIENT PAUSE's state on this node (pause.go).
	pause pauseState
	// tracker is CLIENT TRACKING's invalidation table (tracking.go).
	tracker tracker
	// acl caches what redis says of the client users (acl.go).
	acl aclCache

	nextID atomic.Uint64
	// joinID is the raft id this process joins with, chosen once (see join).
	joinID atomic.Uint64
	// joiningShards serialises joinShards: a JOIN and the joining of
	// shards added since (JoinMissingShards) may overlap.
	joiningShards sync.Mutex
	mu            sync.Mutex
	lns           map[net.Listener]struct{}
	conns         map[*conn]struct{}
	closed        bool
	wg            sync.WaitGroup

	reads     *readPipe
	stopReads chan struct{}
	// quitting is closed when Shutdown begins: a reply that may take for
	// ever (a running script's) is not waited for any longer.
	quitting chan struct{}
	// base is the context of the server's own longer work (joins, kills,
	// backups, expiry and memory rounds, settings); it ends when Shutdown
	// begins, as net/http's BaseContext. The per-batch deadlines of reads
	// hang off Background instead: a cancelable parent would take a lock
	// for every batch of every connection, and their deadline (the request
	// timeout) bounds them anyway.
	base       context.Context
	cancelBase context.CancelFunc
	// blocked are the connections waiting in a blocking command.
	blocked *blockers

	// broker holds this node's pub/sub subscriptions (broker.go);
	// pubsubLimit bounds the messages waiting for one subscriber.
	broker      *pubsub.Broker
	pubsubLimit int
	// events follows what the log wrote (events.go).
	events *events

	metrics *Metrics
}

// New returns a server ready to Serve.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Commands == nil {
		return nil, errors.New("proxy: Config.Commands is required (LoadCommands)")
	}
	if cfg.Timeout == nil {
		cfg.Timeout = func() time.Duration { return 5 * time.Second }
	}
	if cfg.JoinTimeout == 0 {
		cfg.JoinTimeout = 30 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, lns: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}, stopReads: make(chan struct{}), quitting: make(chan struct{}),
		broker: cfg.Broker, pubsubLimit: pubsub.Limit, blocked: newBlockers(), events: newEvents(cfg.Events)}
	if s.broker == nil {
		s.broker = pubsub.NewBroker()
	}
	if cfg.PubSubLimit > 0 {
		s.pubsubLimit = int(cfg.PubSubLimit)
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.followerProxy = cfg.FollowerProxy
	if s.followerProxy == nil {
		s.followerProxy = new(atomic.Bool)
	}
	s.metrics = NewMetrics(s.connCount)
	s.table, s.databases, s.redisVersion = cfg.Commands.table, cfg.Commands.databases, cfg.Commands.redisVersion
	s.stats = newStatsKeeper(s.table)
	s.refreshSettings(ctx)
	s.reads = newReadPipe(s)
	go s.reads.run(s.stopReads)
	go s.whileLeader(s.stopReads, s.expiryTask(), s.memoryTask())
	go s.followEvents(s.stopReads)
	return s, nil
}

func (s *Server) timeout() time.Duration { return s.cfg.Timeout() }

// dialRedis connects to the local redis for reads. With n, it checks that
// the redis is the one the log was replayed into, and asks n's applier to
// check its redis when it is not reachable or not that one.
func (s *Server) dialRedis(n Group) (*backend.Conn, error) {
	ctx, cancel := context.WithTimeout(s.baseContext(), 2*time.Second)
	defer cancel()
	rc, err := s.cfg.RedisGate.Dial(ctx, s.cfg.RedisAddr, s.cfg.RedisPassword)
	if err != nil {
		if n != nil {
			n.CheckStateMachine()
		}
		return nil, raftnode.ErrLoading
	}
	if n != nil {
		if id, err := rc.RunID(); err != nil || id != s.cfg.RunID() {
			rc.Close()
			n.CheckStateMachine()
			return nil, raftnode.ErrLoading
		}
	}
	return rc, nil
}

// tainted settles (cfg.Settle) and reports whether the reads that ran on
// the local redis until now must not be answered.
func (s *Server) tainted() bool {
	if s.cfg.Settle == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout())
	defer cancel()
	return s.cfg.Settle(ctx) != nil
}

// Serve accepts clients on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		if s.tooMany() {
			s.mu.Unlock()
			go refuse(nc)
			continue
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// isClosed reports whether Shutdown has begun.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// byID returns the open client connection with id, or nil.
func (s *Server) byID(id uint64) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.id == id {
			return c
		}
	}
	return nil
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting clients, lets connections finish the commands
// they have sent until ctx ends, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		close(s.quitting)
		s.cancelBase()
	}
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(s.stopReads); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// proposalContext is the context of a proposal: never cancelled, because a
// request handed to raft cannot be taken back and its client must hear its
// real outcome (a write reported failed must not commit). raftnode bounds
// the wait by the request timeout.
func proposalContext() context.Context { return context.Background() }

// baseContext is the server's base context (a Server built without New,
// in tests, has none and gets Background's).
func (s *Server) baseContext() context.Context {
	if s.base == nil {
		return context.Background()
	}
	return s.base
}
