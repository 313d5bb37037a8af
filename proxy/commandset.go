package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/backend"
)

// Commands is what raftproxy knows of the local redis's commands: its
// command table with raftproxy's classes (commands.go), its number of
// databases and its version. It is read once at start (LoadCommands) and
// shared: the proxy routes by it, and the applier asks it which keys a
// command touches.
type Commands struct {
	table        table
	databases    int
	redisVersion string
}

// LoadCommands reads the command table of the redis at addr (requirepass
// password, "" for none; gate, when it may be stopped while idle). It retries until ctx ends, since the redis may
// still be starting.
//
// A redis-server raftproxy has just started answers within milliseconds,
// so the first retries come soon (a node making 64 shards starts 64), and
// only a wait of over a second is worth a warning.
func LoadCommands(ctx context.Context, gate *backend.Hibernation, addr, password string, log *slog.Logger) (*Commands, error) {
	began := time.Now()
	wait := 10 * time.Millisecond
	for {
		c, err := loadCommands(ctx, gate, addr, password, log)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrUnsupportedRedis) {
			return nil, err
		}
		if time.Since(began) > time.Second {
			log.Warn("waiting for the local redis to read its command table", "addr", addr, "err", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("read command table from redis at %s: %w", addr, err)
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

func loadCommands(ctx context.Context, gate *backend.Hibernation, addr, password string, log *slog.Logger) (*Commands, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := gate.Dial(dctx, addr, password)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cmds, err := c.DoValue("COMMAND")
	if err != nil && strings.Contains(err.Error(), "BUSY") {
		// A script left running by this node before it restarted: the node
		// rebuilds redis anyway.
		backend.StopStrayScript(ctx, gate, addr, password, log)
	}
	if err != nil {
		return nil, err
	}
	t, err := buildTable(cmds)
	if err != nil {
		return nil, err
	}
	dbs, err := c.DoValue("CONFIG", "GET", "databases")
	if err != nil {
		return nil, err
	}
	if len(dbs.Elems) != 2 {
		return nil, errors.New("CONFIG GET databases: unexpected reply")
	}
	n, err := strconv.Atoi(string(dbs.Elems[1].Str))
	if err != nil {
		return nil, fmt.Errorf("CONFIG GET databases: %w", err)
	}
	info, err := c.DoValue("INFO", "server")
	if err != nil {
		return nil, err
	}
	v := backend.InfoField(info.Str, "redis_version")
	if err := SupportedRedis(v); err != nil {
		return nil, fmt.Errorf("redis at %s: %w", addr, err)
	}
	return &Commands{table: t, databases: n, redisVersion: v}, nil
}

// supportedRedis is the redis release series raftproxy's command table is
// made for: the commands it rewrites to keep every node's redis identical
// (random results, server times, deadlines) are that series'.
const supportedRedis = "7.0"

// ErrUnsupportedRedis: the local redis is of a release raftproxy cannot
// keep deterministic.
var ErrUnsupportedRedis = errors.New("unsupported redis version")

// SupportedRedis returns an error naming the supported series unless
// version (INFO's redis_version) belongs to it. A newer redis has
// commands the table does not know how to replay identically (7.4's
// HEXPIRE sets deadlines by redis's own clock) and writes RDB files an
// older one cannot load, so a cluster of mixed redis versions cannot even
// ship snapshots.
func SupportedRedis(version string) error {
	if version == supportedRedis || strings.HasPrefix(version, supportedRedis+".") {
		return nil
	}
	return fmt.Errorf("%w %q: raftproxy's command table is made for redis %s.x (it rewrites that release's non-deterministic commands); run redis %s.x (redis:7.0.15 in deploy/docker-compose.yml)",
		ErrUnsupportedRedis, version, supportedRedis, supportedRedis)
}

// WriteKeys returns the keys a write command may modify, or all when that
// cannot be told from its arguments (apply.Keys).
func (c *Commands) WriteKeys(args [][]byte) (keys [][]byte, all bool) {
	return c.table.writtenKeys(args)
}

// DenyOOM reports whether a command is refused over maxmemory (redis's
// denyoom flag; backend.StateMachine.SetDenyOOM).
func (c *Commands) DenyOOM(args [][]byte) bool {
	sp, _ := c.table.lookup(args)
	return sp != nil && sp.denyOOM
}

// AccessedKeys returns the keys a command reads or writes, as far as its
// key specs tell (backend.StateMachine.SetKeys).
func (c *Commands) AccessedKeys(args [][]byte) [][]byte { return c.table.accessedKeys(args) }
