// Command raftproxy makes several stock redis-servers one strongly
// consistent Redis: it sits in front of the local redis-server, speaks the
// Redis protocol to clients, and orders every write through Raft.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/observe"
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
)

const usage = `raftproxy: strongly consistent Redis from stock redis-servers and Raft.

Usage:
  raftproxy --listen HOST:PORT --peer-listen HOST:PORT --data-dir DIR [flags]

Then form a cluster over RESP (redis-cli works):
  RAFT.CLUSTER INIT                      on the first node
  RAFT.CLUSTER JOIN HOST:PORT [...]      on each other node (client address of a member)
A node restarted with the same --data-dir resumes its cluster without INIT/JOIN.

Flags:
`

type options struct {
	listen, peerListen, dataDir, redis string
	advertise, advertisePeer           string
	followerProxy                      bool
	metricsListen, logLevel            string
	requestTimeout, tick               time.Duration
	electionTicks                      int
	snapEntries, snapCatchUp, snapMiB  uint64
	snapCatchUpMiB                     uint64
	snapKeep                           int
	forceNewCluster                    bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("raftproxy", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.listen, "listen", "", "client (RESP) address to listen on, HOST:PORT (required)")
	fs.StringVar(&o.peerListen, "peer-listen", "", "address for Raft traffic between proxies, HOST:PORT (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for this node's WAL and state (required)")
	fs.StringVar(&o.redis, "redis", "", "local redis-server, HOST:PORT or /path/to.sock; when empty raftproxy starts and supervises its own redis-server from PATH")
	fs.StringVar(&o.advertise, "advertise-addr", "", "client address other nodes and redirected clients use (default: --listen)")
	fs.StringVar(&o.advertisePeer, "advertise-peer-addr", "", "peer address other nodes use (default: --peer-listen)")
	fs.BoolVar(&o.followerProxy, "follower-proxy", true, "followers serve reads and writes themselves; when false they answer -MOVED <slot> <leader>")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "address for /metrics, /livez and /readyz (empty: off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 5*time.Second, "how long a request waits for commit or a read index before -TIMEOUT")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "raft tick interval (heartbeat = 1 tick)")
	fs.IntVar(&o.electionTicks, "election-ticks", 10, "ticks without a leader before an election")
	fs.Uint64Var(&o.snapEntries, "snapshot-entries", 10000, "make a snapshot (BGSAVE) and compact the log after this many applied entries")
	fs.Uint64Var(&o.snapMiB, "snapshot-mib", 64, "make a snapshot after this many MiB of applied entries")
	fs.Uint64Var(&o.snapCatchUp, "snapshot-catchup-entries", 5000, "entries kept in the log after a snapshot, so a slightly lagging follower needs no snapshot")
	fs.Uint64Var(&o.snapCatchUpMiB, "snapshot-catchup-mib", 16, "bytes (MiB) of entries kept in the log after a snapshot, at most")
	fs.BoolVar(&o.forceNewCluster, "force-new-cluster", false, "quorum-loss recovery: restart this node as the only member of its cluster, keeping what it committed; other nodes then join it with empty data dirs")
	fs.IntVar(&o.snapKeep, "snapshot-keep", 2, "snapshot files kept in the data dir")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var missing []string
	for name, v := range map[string]string{"--listen": o.listen, "--peer-listen": o.peerListen, "--data-dir": o.dataDir} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return o, fmt.Errorf("missing required flags: %s (see --help)", strings.Join(missing, ", "))
	}
	if o.advertise == "" {
		o.advertise = o.listen
	}
	if o.advertisePeer == "" {
		o.advertisePeer = o.peerListen
	}
	return o, nil
}

func newLogger(level string) (*slog.Logger, *slog.LevelVar, error) {
	lv := &slog.LevelVar{}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("invalid --log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})), lv, nil
}

// settings are what RAFT.CONFIG GET/SET reads and changes at run time.
func settings(dataDir string, srv **proxy.Server, host *raftnode.Host, lv *slog.LevelVar) *proxy.Settings {
	uintSetting := func(name string, v *atomic.Uint64, scale uint64) proxy.Setting {
		return proxy.Setting{
			Name: name,
			Get:  func() string { return strconv.FormatUint(v.Load()/scale, 10) },
			Set: func(s string) error {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil || n == 0 {
					return fmt.Errorf("want a positive integer")
				}
				v.Store(n * scale)
				return nil
			},
		}
	}
	tu := host.Tunables()
	return proxy.NewSettings(proxy.SettingsFile(dataDir), []proxy.Setting{
		{
			Name: "follower-proxy",
			Get:  func() string { return map[bool]string{true: "yes", false: "no"}[(*srv).FollowerProxy()] },
			Set: func(s string) error {
				switch strings.ToLower(s) {
				case "yes", "true":
					(*srv).SetFollowerProxy(true)
				case "no", "false":
					(*srv).SetFollowerProxy(false)
				default:
					return fmt.Errorf("want yes or no")
				}
				return nil
			},
		},
		{
			Name: "log-level",
			Get:  func() string { return strings.ToLower(lv.Level().String()) },
			Set:  func(s string) error { return lv.UnmarshalText([]byte(s)) },
		},
		{
			Name: "request-timeout",
			Get:  func() string { return tu.Timeout().String() },
			Set: func(s string) error {
				d, err := time.ParseDuration(s)
				if err != nil || d < 100*time.Millisecond {
					return fmt.Errorf("want a duration of at least 100ms, such as 5s")
				}
				tu.RequestTimeout.Store(int64(d))
				return nil
			},
		},
		uintSetting("snapshot-entries", &tu.SnapshotEntries, 1),
		uintSetting("snapshot-mib", &tu.SnapshotBytes, 1<<20),
	})
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(healthMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy:", err)
		os.Exit(2)
	}
	log, lv, err := newLogger(o.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy:", err)
		os.Exit(2)
	}
	if err := run(o, log, lv); err != nil {
		log.Error("raftproxy failed", "err", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger, lv *slog.LevelVar) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	clientLn, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen for clients: %w", err)
	}
	peerLn, err := net.Listen("tcp", o.peerListen)
	if err != nil {
		return fmt.Errorf("listen for peers: %w", err)
	}

	redisAddr := o.redis
	if redisAddr == "" {
		sup, err := backend.StartSupervisor(o.dataDir, log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sup.Stop(sctx)
		}()
		redisAddr = sup.Socket
	}

	sm := backend.NewStateMachine(redisAddr, log.With("component", "applier"))
	self := raftnode.Member{Addr: o.advertise, PeerAddr: o.advertisePeer}
	// The proxy reads the command table from redis; the node starts (and
	// applies) only after it is set, below.
	var srv *proxy.Server
	host := raftnode.NewHost(raftnode.Config{
		WriteKeys: func(args [][]byte) ([][]byte, bool) { return srv.WriteKeys(args) },
		Written:   func(db int, args [][]byte, null bool) { srv.Written(db, args, null) },
		Publish: func(index uint64, channel, message []byte, sharded bool) int64 {
			return srv.Publish(index, channel, message, sharded)
		},
		DataDir:        o.dataDir,
		Self:           self,
		StateMachine:   sm,
		Logger:         log,
		TickInterval:   o.tick,
		ElectionTicks:  o.electionTicks,
		RequestTimeout: o.requestTimeout,

		SnapshotEntries:        o.snapEntries,
		SnapshotBytes:          o.snapMiB << 20,
		SnapshotCatchUpEntries: o.snapCatchUp,
		SnapshotCatchUpBytes:   o.snapCatchUpMiB << 20,
		SnapshotKeep:           o.snapKeep,
		ForceNewCluster:        o.forceNewCluster,
	})
	sets := settings(o.dataDir, &srv, host, lv)
	srv, err = proxy.New(ctx, proxy.Config{
		Settings:      sets,
		Host:          host,
		RedisAddr:     redisAddr,
		RunID:         sm.RunID,
		Self:          self,
		FollowerProxy: o.followerProxy,
		Timeout:       host.Tunables().Timeout,
		Logger:        log,
		Scripts:       sm.Scripts(),
	})
	if err != nil {
		return err
	}
	if err := sets.Load(); err != nil {
		return err
	}
	if _, err := host.Restart(); err != nil {
		return fmt.Errorf("resume node from %s: %w", o.dataDir, err)
	}
	defer host.Stop()

	peerSrv := &http.Server{Handler: host, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 3)
	if o.metricsListen != "" {
		mln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			return fmt.Errorf("listen for metrics: %w", err)
		}
		msrv := &http.Server{Handler: observe.Handler(host), ReadHeaderTimeout: 5 * time.Second}
		defer msrv.Close()
		go func() { errc <- msrv.Serve(mln) }()
	}
	go func() { errc <- peerSrv.Serve(peerLn) }()
	go func() { errc <- srv.Serve(clientLn) }()
	log.Info("raftproxy serving", "listen", o.listen, "peer_listen", o.peerListen, "redis", redisAddr, "data_dir", o.dataDir)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), host.Tunables().Timeout())
	defer cancel()
	// A leader hands over before it goes, so the cluster does not wait out
	// an election timeout; in-flight requests then finish through the new
	// leader, or get -TIMEOUT.
	if n := host.Node(); n != nil && n.IsLeader() {
		if to, err := n.TransferLeadership(sctx, 0, 0); err != nil {
			log.Warn("could not hand leadership over before stopping", "err", err)
		} else {
			log.Info("handed leadership over before stopping", "to", raftnode.IDString(to))
		}
	}
	srv.Shutdown(sctx)
	peerSrv.Close()
	return nil
}
