// Command raftproxy makes several stock redis-servers one strongly
// consistent Redis: it sits in front of the local redis-server, speaks the
// Redis protocol to clients, and orders every write through Raft.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/raftproxy/raftproxy/migrate"
	"github.com/raftproxy/raftproxy/observe"
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/tlsfiles"
	"github.com/raftproxy/raftproxy/version"
	"github.com/raftproxy/raftproxy/wal"
)

const usage = `raftproxy: strongly consistent Redis from stock redis-servers and Raft.

Usage:
  raftproxy --listen HOST:PORT --peer-listen HOST:PORT --data-dir DIR [flags]

  raftproxy backup --from HOST:PORT --out FILE.rdb    (see raftproxy backup --help)
  raftproxy health --url URL                          exit 0 if URL answers 200 (container healthchecks)
  raftproxy version (or --version)                    release, commit, Go version and log entry format
  raftproxy settings --data-dir DIR [--reset]         the RAFT.CONFIG SET values saved there; --reset forgets them

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
	movePause                          uint64
	metricsListen, logLevel, logFormat string
	pprof                              bool
	requestTimeout, tick               time.Duration
	electionTicks                      int
	quiesce                            bool
	redisIdleStop                      time.Duration
	sharedWALSync                      bool
	coalesceHeartbeats                 bool
	sharePeerStreams                   bool
	snapEntries, snapCatchUp, snapMiB  uint64
	minFreeMiB                         uint64
	snapCatchUpMiB                     uint64
	snapKeep                           int
	forceNewCluster                    bool
	tlsCert, tlsKey, tlsCA             string
	tlsClientAuth                      string
	peerTLSCert, peerTLSKey, peerTLSCA string
	peerSecret, peerSecretFile         string

	configFile                   string
	requirePass, requirePassFile string
	redisPass, redisPassFile     string
	maxClients                   int
	maxRequest, outputLimit      byteSize
	pubsubLimit                  byteSize
	idleTimeout                  time.Duration
	// warnings found while reading the configuration, logged at start.
	warnings []string
	seedRDB  string
}

// parseFlags reads the configuration from args, then the environment
// (environ, os.Environ()'s form), then the config file (config.go).
func parseFlags(args, environ []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("raftproxy", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), configHelp)
	}
	fs.StringVar(&o.configFile, configFlag, "", "config file of \"name = value\" lines, names as the flags' (see below)")
	fs.StringVar(&o.listen, "listen", "", "client (RESP) address to listen on, HOST:PORT (required)")
	fs.StringVar(&o.peerListen, "peer-listen", "", "address for Raft traffic between proxies, HOST:PORT (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for this node's WAL and state (required)")
	fs.StringVar(&o.redis, "redis", "", "local redis-server, HOST:PORT or /path/to.sock; when empty raftproxy starts and supervises its own redis-server from PATH")
	fs.StringVar(&o.advertise, "advertise-addr", "", "client address other nodes and redirected clients use (default: --listen)")
	fs.StringVar(&o.advertisePeer, "advertise-peer-addr", "", "peer address other nodes use (default: --peer-listen)")
	fs.BoolVar(&o.followerProxy, "follower-proxy", true, "followers serve reads and writes themselves; when false they answer -MOVED <slot> <leader>")
	fs.Uint64Var(&o.movePause, "move-pause", 100, "after each batch of keys a slot move copies, wait this percent of the time the batch took (0: none), leaving the shards to their clients meanwhile")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "address for /metrics, /livez and /readyz (empty: off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's /debug/pprof profiles on --metrics-listen (unauthenticated: keep that port private)")
	fs.StringVar(&o.logFormat, "log-format", "text", "text (key=value lines) or json (one JSON object per line, for log collectors)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 5*time.Second, "how long a request waits for commit or a read index before -TIMEOUT")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "raft tick interval (heartbeat = 1 tick)")
	fs.IntVar(&o.electionTicks, "election-ticks", 10, "ticks without a leader before an election")
	fs.BoolVar(&o.quiesce, "quiesce", true, "a raft group idle for an election timeout stops ticking and heartbeating until a request wakes it; its followers watch the leader's process instead (four probes per peer per election timeout, for all groups)")
	fs.DurationVar(&o.redisIdleStop, "redis-idle-stop", 10*time.Second, "stop (SIGSTOP) a redis-server raftproxy runs itself once raftproxy has not used it for this long, and continue it at its next use: an idle redis-server still wakes every second, so idle shards cost nothing (0: never; ignored with --redis)")
	fs.BoolVar(&o.coalesceHeartbeats, "coalesce-heartbeats", true, "with more than one raft group (a sharded cluster), send their heartbeats to each peer process together, once per tick, instead of one message per group")
	fs.BoolVar(&o.sharePeerStreams, "share-peer-streams", true, "with more than one raft group (a sharded cluster), send their raft messages to each peer process on one connection, batched, instead of on each group's own streams")
	fs.BoolVar(&o.sharedWALSync, "shared-wal-sync", true, "with more than one raft group (a sharded cluster), make their WAL saves durable together with one syncfs of the data directory's file system instead of an fdatasync per group (syncfs also waits for other files being written there)")
	fs.Uint64Var(&o.snapEntries, "snapshot-entries", 10000, "make a snapshot (BGSAVE) and compact the log after this many applied entries")
	fs.Uint64Var(&o.snapMiB, "snapshot-mib", 64, "make a snapshot after this many MiB of applied entries")
	fs.Uint64Var(&o.minFreeMiB, "min-free-disk-mib", 80, "write the raft log only while its file system has this many MiB free (a WAL segment is 64); below it the node waits, answering MISCONF, and resumes by itself")
	fs.Uint64Var(&o.snapCatchUp, "snapshot-catchup-entries", 5000, "entries kept in the log after a snapshot, so a slightly lagging follower needs no snapshot")
	fs.Uint64Var(&o.snapCatchUpMiB, "snapshot-catchup-mib", 16, "bytes (MiB) of entries kept in the log after a snapshot, at most")
	fs.BoolVar(&o.forceNewCluster, "force-new-cluster", false, "quorum-loss recovery: restart this node as the only member of its cluster, keeping what it committed; other nodes then join it with empty data dirs")
	fs.IntVar(&o.snapKeep, "snapshot-keep", 2, "snapshot files kept in the data dir")
	fs.StringVar(&o.requirePass, "requirepass", "", "password clients must give with AUTH or HELLO AUTH (user default), as redis's requirepass; every member of a cluster needs the same (empty: no authentication)")
	fs.StringVar(&o.requirePassFile, "requirepass-file", "", "read --requirepass from this file (its trailing newline dropped), so it does not show in ps")
	fs.StringVar(&o.redisPass, "redis-password", "", "password raftproxy gives the local redis-server (--redis) with AUTH; a redis-server raftproxy starts itself gets a random one")
	fs.StringVar(&o.redisPassFile, "redis-password-file", "", "read --redis-password from this file")
	fs.IntVar(&o.maxClients, "max-clients", 10000, "client connections at most; one more gets -ERR max number of clients reached (redis's maxclients)")
	o.maxRequest = 512 << 20
	fs.Var(&o.maxRequest, "max-request-bytes", "largest argument of a command, in bytes (redis's proto-max-bulk-len; units kb, mb, gb)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close a client idle this long, unless it is blocked or subscribed (redis's timeout; 0: never)")
	fs.Var(&o.outputLimit, "client-output-buffer-limit", "bytes of replies waiting to be written to a client (it sent commands but does not read the replies) before it is disconnected (redis's client-output-buffer-limit normal; 0: no limit)")
	o.pubsubLimit = 32 << 20
	fs.Var(&o.pubsubLimit, "pubsub-output-buffer-limit", "bytes of pub/sub messages waiting for a subscriber before it is disconnected (redis's client-output-buffer-limit pubsub hard limit)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for the client port; with --tls-key the client port (--listen) speaks only TLS, and so must every member's. Reloaded when the file changes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA bundle: verifies client certificates, and other members' client ports when this node connects to them (default: system roots)")
	fs.StringVar(&o.tlsClientAuth, "tls-client-auth", "none", "client certificates: none, request (verified when given) or require (signed by --tls-ca)")
	fs.StringVar(&o.peerTLSCert, "peer-tls-cert", "", "PEM certificate for raft traffic, as server and as client; with --peer-tls-key and --peer-tls-ca peers speak mutual TLS. Reloaded when the file changes")
	fs.StringVar(&o.peerTLSKey, "peer-tls-key", "", "PEM key of --peer-tls-cert")
	fs.StringVar(&o.peerTLSCA, "peer-tls-ca", "", "PEM CA bundle that signs every member's peer certificate; peers without one are refused")
	fs.StringVar(&o.peerSecret, "peer-secret", "", "shared secret (at least 16 bytes) for clusters without a peer CA: peers speak mutual TLS with a key derived from it. Visible in ps: prefer --peer-secret-file")
	fs.StringVar(&o.peerSecretFile, "peer-secret-file", "", "read --peer-secret from this file (its trailing newline dropped)")
	fs.StringVar(&o.seedRDB, "seed-rdb", "", "RDB file (a raftproxy backup or a stock redis dump.rdb) that RAFT.CLUSTER INIT makes the new cluster's first state; ignored once the node has a cluster")
	src, warnings, err := loadConfig(fs, args, environ, os.ReadFile)
	if err != nil {
		return o, err
	}
	o.warnings = warnings
	for _, a := range []struct {
		name, v  string
		optional bool
	}{{"listen", o.listen, false}, {"peer-listen", o.peerListen, false}, {"advertise-addr", o.advertise, true},
		{"advertise-peer-addr", o.advertisePeer, true}, {"metrics-listen", o.metricsListen, true}} {
		if err := checkAddr(src, a.name, a.v, a.optional); err != nil {
			return o, err
		}
	}
	if o.dataDir == "" {
		return o, fmt.Errorf("missing required --data-dir (or %s, or \"data-dir\" in the config file)", envName("data-dir"))
	}
	for _, r := range []struct {
		name string
		ok   bool
		want string
	}{
		{"request-timeout", o.requestTimeout >= 100*time.Millisecond, "a duration of at least 100ms"},
		{"tick", o.tick >= time.Millisecond, "a duration of at least 1ms"},
		{"election-ticks", o.electionTicks >= 2, "at least 2"},
		{"snapshot-entries", o.snapEntries > 0, "a positive number"},
		{"snapshot-mib", o.snapMiB > 0, "a positive number"},
		{"min-free-disk-mib", o.minFreeMiB > 0, "a positive number"},
		{"snapshot-keep", o.snapKeep >= 1, "at least 1"},
		{"max-clients", o.maxClients >= 1, "at least 1"},
		{"max-request-bytes", o.maxRequest >= 1024 && o.maxRequest <= 512<<20, "between 1kb and 512mb"},
		{"idle-timeout", o.idleTimeout >= 0, "a duration of 0 (never) or more"},
		{"redis-idle-stop", o.redisIdleStop == 0 || o.redisIdleStop >= time.Second, "0 (never) or a duration of at least 1s"},
		{"pubsub-output-buffer-limit", o.pubsubLimit >= 1024, "at least 1kb"},
	} {
		if !r.ok {
			v := fs.Lookup(r.name).Value.String()
			return o, fmt.Errorf("%s: invalid value %q for --%s: want %s", src.of(r.name), v, r.name, r.want)
		}
	}
	if _, _, err := newLogger(io.Discard, o.logLevel, "text"); err != nil {
		return o, fmt.Errorf("%s: %w", src.of("log-level"), err)
	}
	if _, _, err := newLogger(io.Discard, "info", o.logFormat); err != nil {
		return o, fmt.Errorf("%s: %w", src.of("log-format"), err)
	}
	if o.requirePass, err = readSecret(src, "requirepass", o.requirePass, o.requirePassFile); err != nil {
		return o, err
	}
	if o.redisPass, err = readSecret(src, "redis-password", o.redisPass, o.redisPassFile); err != nil {
		return o, err
	}
	if o.redisPass != "" && o.redis == "" {
		return o, fmt.Errorf("%s: --redis-password is for a redis-server given with --redis (one raftproxy starts gets a random password)", src.of("redis-password"))
	}
	if err := o.checkTLS(); err != nil {
		return o, err
	}
	if o.peerSecret, err = readSecret(src, "peer-secret", o.peerSecret, o.peerSecretFile); err != nil {
		return o, err
	}
	if o.peerSecret != "" && len(o.peerSecret) < tlsfiles.MinSecretLen {
		name := "peer-secret"
		if o.peerSecretFile != "" {
			name = "peer-secret-file"
		}
		return o, fmt.Errorf("%s: the peer secret must be at least %d bytes", src.of(name), tlsfiles.MinSecretLen)
	}
	if o.advertise == "" {
		o.advertise = o.listen
	}
	if o.advertisePeer == "" {
		o.advertisePeer = o.peerListen
	}
	return o, nil
}

// checkTLS refuses half-configured TLS, which would otherwise start a node
// that silently speaks in the clear.
func (o options) checkTLS() error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	auth, err := tlsfiles.ParseClientAuth(o.tlsClientAuth)
	if err != nil {
		return fmt.Errorf("--tls-client-auth: %w", err)
	}
	if auth != tlsfiles.NoClientCert && (o.tlsCert == "" || o.tlsCA == "") {
		return fmt.Errorf("--tls-client-auth %s needs --tls-cert, --tls-key and --tls-ca", o.tlsClientAuth)
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return fmt.Errorf("--tls-ca needs --tls-cert and --tls-key")
	}
	peer := []string{o.peerTLSCert, o.peerTLSKey, o.peerTLSCA}
	if set := len(slices.DeleteFunc(peer, func(s string) bool { return s == "" })); set != 0 && set != 3 {
		return fmt.Errorf("peer TLS needs all of --peer-tls-cert, --peer-tls-key and --peer-tls-ca")
	}
	if (o.peerSecret != "" || o.peerSecretFile != "") && o.peerTLSCert != "" {
		return fmt.Errorf("--peer-secret and --peer-tls-* are alternatives: use one")
	}
	return nil
}

// newLogger makes the process's logger, writing to w in format (text or
// json) from level up; the level can change at run time (lv).
func newLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv := &slog.LevelVar{}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("invalid --log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	}
	return nil, nil, fmt.Errorf("invalid --log-format %q: want text or json", format)
}

// boundShutdown ends the process once limit has passed, or at a second
// SIGINT or SIGTERM, whatever is still running: a stop must not wait for a
// redis busy with a script, a peer that does not answer, or a client. The
// WAL is fsynced at every write, so nothing acknowledged depends on the
// rest of the shutdown.
func boundShutdown(log *slog.Logger, limit time.Duration) {
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		t := time.NewTimer(limit)
		select {
		case <-t.C:
			log.Error("shutdown did not finish in time; exiting", "limit", limit)
		case sig := <-again:
			log.Warn("second signal; exiting now", "signal", sig.String())
		}
		os.Exit(1)
	}()
}

// versionText is what `raftproxy version` prints.
func versionText(i version.Info) string {
	mod := ""
	if i.Modified {
		mod = " (uncommitted changes)"
	}
	return fmt.Sprintf("raftproxy %s\ncommit: %s%s\ngo: %s\nlog entry format: %d (decodes 1-%d)\n",
		i.Release, i.Commit, mod, i.Go, i.EntryFormat, i.EntryFormat)
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Print(versionText(version.Get()))
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "settings" {
		os.Exit(settingsMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(healthMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "backup" {
		os.Exit(backupMain(os.Args[2:]))
	}
	o, err := parseFlags(os.Args[1:], os.Environ())
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy:", err)
		os.Exit(2)
	}
	log, lv, err := newLogger(os.Stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy:", err)
		os.Exit(2)
	}
	for _, w := range o.warnings {
		log.Warn(w)
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
	if o.seedRDB != "" && !wal.Exist(filepath.Join(o.dataDir, "wal")) {
		if err := checkSeedRDB(o.seedRDB); err != nil {
			return err
		}
	}
	clientLn, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen for clients: %w", err)
	}
	peerLn, err := net.Listen("tcp", o.peerListen)
	if err != nil {
		return fmt.Errorf("listen for peers: %w", err)
	}

	var clientTLS *tlsfiles.Files
	if o.tlsCert != "" {
		if clientTLS, err = tlsfiles.Load(o.tlsCert, o.tlsKey, o.tlsCA); err != nil {
			return fmt.Errorf("client TLS: %w", err)
		}
		auth, _ := tlsfiles.ParseClientAuth(o.tlsClientAuth)
		clientLn = tls.NewListener(clientLn, clientTLS.ServerConfig(auth, nil, nil))
	}
	var peerTLS *tlsfiles.Files
	var peerTLSInfo transport.TLSInfo
	if o.peerTLSCert != "" {
		if peerTLS, err = tlsfiles.Load(o.peerTLSCert, o.peerTLSKey, o.peerTLSCA); err != nil {
			return fmt.Errorf("peer TLS: %w", err)
		}
		peerTLSInfo = transport.TLSInfo{CertFile: o.peerTLSCert, KeyFile: o.peerTLSKey, TrustedCAFile: o.peerTLSCA, ClientCertAuth: true}
	}
	if o.peerSecret != "" {
		cert, key, err := tlsfiles.WriteSecretCert([]byte(o.peerSecret), filepath.Join(o.dataDir, "peer-secret"))
		if err != nil {
			return err
		}
		if peerTLS, err = tlsfiles.Load(cert, key, cert); err != nil {
			return fmt.Errorf("peer secret: %w", err)
		}
		peerTLSInfo = transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: cert, ClientCertAuth: true, ServerName: tlsfiles.SecretServerName}
	}

	var memberTLS func(string) *tls.Config
	if clientTLS != nil {
		memberTLS = clientTLS.ClientConfigFor
	}
	followerProxy := new(atomic.Bool)
	followerProxy.Store(o.followerProxy)
	movePause := new(atomic.Uint64)
	movePause.Store(o.movePause)
	errc := make(chan error, 3)
	var live *raftnode.Liveness
	if o.quiesce {
		if live, err = raftnode.NewLiveness(peerTLSInfo, o.tick, o.electionTicks); err != nil {
			return err
		}
		defer live.Close()
	}
	// The groups' WALs live under the data directory (each shard's in
	// shards/<index>), so one syncfs of its file system makes them all
	// durable once there are several.
	var walSync *wal.Syncer
	if o.sharedWALSync {
		if walSync, err = wal.NewSyncer(o.dataDir); err != nil {
			return err
		}
		defer walSync.Close()
	}
	var heartbeats *raftnode.Heartbeats
	if o.coalesceHeartbeats {
		if heartbeats, err = raftnode.NewHeartbeats(peerTLSInfo, o.tick); err != nil {
			return err
		}
		defer heartbeats.Close()
	}
	var streams *raftnode.Streams
	if o.sharePeerStreams {
		if streams, err = raftnode.NewStreams(peerTLSInfo); err != nil {
			return err
		}
		defer streams.Close()
	}
	ss := &stacks{ctx: ctx, o: o, log: log, lv: lv, mux: raftnode.NewPeerMux(), peerTLS: peerTLSInfo, clientTLS: clientTLS,
		memberTLS: memberTLS, followerProxy: followerProxy, movePause: movePause, errc: errc, all: map[int]*stack{}, liveness: live, walSync: walSync, heartbeats: heartbeats, streams: streams,
		hub: pubsub.NewHub()}
	ss.remote = &remotes{ss: ss}
	ss.mux.Handle(keysPath, http.HandlerFunc(ss.remote.serveKeys))
	ss.mux.Handle(proposePath, http.HandlerFunc(ss.remote.serveProposal))
	primary, err := ss.start(stackSpec{index: 0, dataDir: o.dataDir, ln: clientLn, redis: o.redis, redisPass: o.redisPass,
		seedRDB: o.seedRDB, forceNewCluster: o.forceNewCluster, listen: o.listen, advertised: o.advertise})
	defer ss.stopAll(context.Background())
	if err != nil {
		return err
	}
	host, srv := primary.host, primary.srv
	if peerTLS != nil {
		// Every peer must present a certificate the peer CA signed; the
		// ones turned away are counted with the host's other refusals.
		peerLn = tls.NewListener(peerLn, peerTLS.ServerConfig(tlsfiles.RequireClientCert, host.PeerRefusals().Add, []string{"http/1.1"}))
	}
	overrides, err := ss.settings.Load()
	if err != nil {
		return err
	}
	for _, ov := range overrides {
		log.Warn("a setting saved by RAFT.CONFIG SET overrides the command line (RAFT.CONFIG RESET, or raftproxy settings --reset, forgets it)",
			"setting", ov.Name, "saved", ov.Saved, "command_line", ov.Flag, "file", proxy.SettingsFile(o.dataDir))
	}
	if _, err := host.Restart(); err != nil {
		return fmt.Errorf("resume node from %s: %w", o.dataDir, err)
	}
	if err := ss.restoreShards(); err != nil {
		return err
	}
	ss.serve(primary)
	go ss.balanceLeaders(ctx)
	movers := migrate.New(moverNode{ss}, log.With("component", "mover"))
	movers.Pause = ss.movePause
	go movers.Run(ctx)
	go ss.reconcileShards(ctx)

	// Refused handshakes are counted; logging each one at info would let a
	// scanner fill the log.
	peerSrv := &http.Server{Handler: ss.mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	if o.metricsListen != "" {
		mln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			return fmt.Errorf("listen for metrics: %w", err)
		}
		collectors := srv.Metrics().Collectors()
		if heartbeats != nil {
			collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "raftproxy_coalesced_heartbeats_total",
				Help: "Heartbeats and heartbeat responses of this process's raft groups sent to peers coalesced (--coalesce-heartbeats), in batches the peer answered."},
				func() float64 { return float64(heartbeats.Sent()) }))
		}
		if streams != nil {
			collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "raftproxy_stream_messages_total",
				Help: "Raft messages of this process's groups sent on its one stream per peer process (--share-peer-streams)."},
				func() float64 { return float64(streams.Sent()) }))
		}
		if o.redisIdleStop > 0 {
			collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "raftproxy_redis_stopped",
				Help: "redis-servers of this process stopped for being idle now (--redis-idle-stop)."},
				func() float64 { return float64(ss.redisStopped()) }))
			collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "raftproxy_redis_stops_total",
				Help: "Times this process stopped one of its current shards' redis-servers for being idle (--redis-idle-stop)."},
				func() float64 { return float64(ss.redisStops()) }))
		}
		msrv := &http.Server{Handler: observe.ShardedHandler(host, ss.shardHosts, o.pprof, collectors...), ReadHeaderTimeout: 5 * time.Second}
		defer msrv.Close()
		go func() { errc <- msrv.Serve(mln) }()
	}
	go func() { errc <- peerSrv.Serve(peerLn) }()
	log.Info("raftproxy serving", "version", version.Get().String(), "listen", o.listen, "client_tls", clientTLS != nil, "peer_tls", peerTLS != nil, "peer_listen", o.peerListen, "redis", primary.redisAddr, "data_dir", o.dataDir)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	boundShutdown(log, host.Tunables().Timeout()+5*time.Second)
	sctx, cancel := context.WithTimeout(context.Background(), host.Tunables().Timeout())
	defer cancel()
	// A leader hands over before it goes, so the cluster does not wait out
	// an election timeout; in-flight requests then finish through the new
	// leader, or get -TIMEOUT. Every group this node leads does, at once.
	var wg sync.WaitGroup
	for _, st := range ss.list() {
		n := st.host.Node()
		if n == nil || !n.IsLeader() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if to, err := n.TransferLeadership(sctx, 0, 0); err != nil {
				log.Warn("could not hand leadership over before stopping", "shard", st.index, "err", err)
			} else {
				log.Info("handed leadership over before stopping", "shard", st.index, "to", raftnode.IDString(to))
			}
		}()
	}
	wg.Wait()
	for _, st := range ss.list() {
		st.srv.Shutdown(sctx)
	}
	peerSrv.Close()
	return nil
}

// testClockOffset reads RAFTPROXY_TEST_CLOCK_OFFSET (a duration such as
// "30s" or "-1m"): fault tests shift a node's clock with it, as a skewed
// machine's would be. Nothing else should set it.
func testClockOffset(log *slog.Logger) time.Duration {
	v := os.Getenv("RAFTPROXY_TEST_CLOCK_OFFSET")
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		log.Warn("ignoring RAFTPROXY_TEST_CLOCK_OFFSET", "value", v, "err", err)
		return 0
	}
	log.Warn("this node's clock is shifted for a test", "offset", d)
	return d
}
