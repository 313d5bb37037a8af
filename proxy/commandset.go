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
// password, "" for none). It retries until ctx ends, since the redis may
// still be starting.
func LoadCommands(ctx context.Context, addr, password string, log *slog.Logger) (*Commands, error) {
	for {
		c, err := loadCommands(ctx, addr, password, log)
		if err == nil {
			return c, nil
		}
		log.Warn("waiting for the local redis to read its command table", "addr", addr, "err", err)
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("read command table from redis at %s: %w", addr, err)
		}
	}
}

func loadCommands(ctx context.Context, addr, password string, log *slog.Logger) (*Commands, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := backend.DialAuth(dctx, addr, password)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cmds, err := c.DoValue("COMMAND")
	if err != nil && strings.Contains(err.Error(), "BUSY") {
		// A script left running by this node before it restarted: the node
		// rebuilds redis anyway.
		backend.StopStrayScript(ctx, addr, password, log)
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
	return &Commands{table: t, databases: n, redisVersion: backend.InfoField(info.Str, "redis_version")}, nil
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
