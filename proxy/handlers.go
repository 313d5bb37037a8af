package proxy

import (
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// handler answers a command the proxy serves itself (classProxy). It
// returns false when the connection ends. Like redis's redisCommandTable,
// which pairs each command with its proc, the table gives each such spec
// its handler (buildTable), and dispatch calls it.
type handler func(c *conn, name string, args [][]byte) bool

// emits makes a handler of a function that answers with one op.
func emits(f func(c *conn, name string, args [][]byte) *op) handler {
	return func(c *conn, name string, args [][]byte) bool {
		c.emit(f(c, name, args))
		return true
	}
}

// replies makes a handler that answers with a fixed reply.
func replies(raw []byte) handler {
	return func(c *conn, _ string, _ [][]byte) bool {
		c.emit(&op{kind: opReply, reply: raw})
		return true
	}
}

// handlerFor returns the handler of a command the proxy serves, by its name
// (subcommands as "client|id"), or nil.
func handlerFor(name string) handler {
	if h, ok := handlers[name]; ok {
		return h
	}
	if sc, ok := subCommands[name]; ok {
		return func(c *conn, _ string, args [][]byte) bool {
			if sc.unsub {
				c.unsubscribe(sc.kind, sc.msg, args[1:])
			} else {
				c.subscribe(sc.kind, sc.msg, args[1:])
			}
			return true
		}
	}
	switch {
	case strings.HasPrefix(name, "cluster|"):
		return emits((*conn).cluster)
	case strings.HasPrefix(name, "latency|"):
		return emits((*conn).latencyCommand)
	case strings.HasPrefix(name, "pubsub|"):
		return emits((*conn).pubsubCommand)
	}
	return nil
}

// handlers are read only: a table shared by every Server.
var handlers = map[string]handler{
	"ping": emits((*conn).ping),
	"echo": emits(func(c *conn, _ string, args [][]byte) *op {
		return &op{kind: opReply, reply: resp.AppendBulk(nil, args[1])}
	}),
	"quit":   func(c *conn, _ string, _ [][]byte) bool { c.emit(&op{kind: opClose, reply: okRaw}); return false },
	"select": emits((*conn).selectDB),
	"multi": emits(func(c *conn, _ string, _ [][]byte) *op {
		c.tx = &txState{db: c.db, slot: -1, asked: c.asked}
		return okReply()
	}),
	"exec":    emits(func(*conn, string, [][]byte) *op { return errReply("ERR EXEC without MULTI") }),
	"discard": emits(func(*conn, string, [][]byte) *op { return errReply("ERR DISCARD without MULTI") }),
	"watch":   emits(func(c *conn, _ string, args [][]byte) *op { return c.watchKeys(args) }),
	"unwatch": emits(func(c *conn, _ string, _ [][]byte) *op { c.unwatch(); return okReply() }),

	"raft.cluster": emits(func(c *conn, _ string, args [][]byte) *op { return c.raftCluster(args) }),
	"raft.node":    emits(func(c *conn, _ string, args [][]byte) *op { return c.raftNode(args) }),
	"raft.shard":   emits(func(c *conn, _ string, args [][]byte) *op { return c.raftShard(args) }),
	"raft.transfer_leader": emits(func(c *conn, _ string, args [][]byte) *op {
		if len(args) > 2 {
			return errReply("ERR wrong number of arguments for 'raft.transfer_leader' command")
		}
		return c.raftTransferLeader(args)
	}),
	"raft.config": emits(func(c *conn, _ string, args [][]byte) *op { return c.raftConfig(args) }),
	"raft.debug":  emits(func(c *conn, _ string, args [][]byte) *op { return c.raftDebug(args) }),
	"raft.backup": emits(func(c *conn, _ string, args [][]byte) *op { return c.raftBackup(args) }),
	"raft.info": emits(func(c *conn, _ string, _ [][]byte) *op {
		return &op{kind: opReply, reply: resp.AppendBulkString(nil, c.s.raftInfo())}
	}),

	"script|kill":   emits(func(c *conn, name string, _ [][]byte) *op { return c.killCommand(name) }),
	"function|kill": emits(func(c *conn, name string, _ [][]byte) *op { return c.killCommand(name) }),
	"acl|setuser":   emits((*conn).aclCommand),
	"acl|deluser":   emits((*conn).aclCommand),
	"acl|getuser":   emits((*conn).aclCommand),
	"acl|list":      emits((*conn).aclCommand),
	"acl|users":     emits((*conn).aclCommand),
	"acl|whoami":    emits((*conn).aclCommand),
	"acl|dryrun":    emits((*conn).aclCommand),
	"monitor":       emits(func(c *conn, _ string, _ [][]byte) *op { return c.monitorCommand() }),
	"slowlog|get":   emits((*conn).slowlogCommand),
	"slowlog|len":   emits((*conn).slowlogCommand),
	"slowlog|reset": emits((*conn).slowlogCommand),
	"config|resetstat": emits(func(c *conn, _ string, args [][]byte) *op {
		// The local redis's counters are reset too: INFO shows its others.
		c.s.stats.reset()
		return &op{kind: opLocal, args: args, db: c.db}
	}),
	"config|set": emits(func(c *conn, _ string, args [][]byte) *op { return c.configSet(args) }),
	"info":       emits(func(c *conn, _ string, args [][]byte) *op { return c.infoCommand(args) }),
	"role":       emits(func(c *conn, _ string, _ [][]byte) *op { return c.role() }),
	"debug":      emits(func(c *conn, _ string, args [][]byte) *op { return c.debug(args) }),
	"wait":       emits((*conn).wait),
	"waitaof":    emits((*conn).wait),
	"readonly":   emits(func(c *conn, _ string, _ [][]byte) *op { c.readonly = true; return okReply() }),
	"readwrite":  emits(func(c *conn, _ string, _ [][]byte) *op { c.readonly = false; return okReply() }),
	// Slots never migrate (one shard owns them all), so raftproxy never
	// sends -ASK; a client may still send ASKING.
	"asking": emits(func(c *conn, _ string, _ [][]byte) *op { c.asking = true; return okReply() }),

	// The connection's own commands (client.go, hello.go).
	"hello": emits(func(c *conn, _ string, args [][]byte) *op { return c.hello(args) }),
	"auth":  emits(func(c *conn, _ string, args [][]byte) *op { return c.auth(args) }),
	"reset": emits(func(c *conn, _ string, _ [][]byte) *op {
		c.reset()
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "RESET")}
	}),
	"client|id": emits(func(c *conn, _ string, _ [][]byte) *op {
		return &op{kind: opReply, reply: resp.AppendInt(nil, int64(c.id))}
	}),
	"client|getname":  emits(func(c *conn, _ string, _ [][]byte) *op { return &op{kind: opReply, reply: c.nameReply()} }),
	"client|setname":  emits(func(c *conn, _ string, args [][]byte) *op { return c.setName(args) }),
	"client|setinfo":  emits(func(c *conn, _ string, args [][]byte) *op { return c.setInfo(args) }),
	"client|no-evict": emits((*conn).clientFlag),
	"client|no-touch": emits((*conn).clientFlag),
	"client|pause":    emits((*conn).clientPause),
	"client|unpause":  emits((*conn).clientPause),
	"client|reply":    func(c *conn, _ string, args [][]byte) bool { c.clientReply(args); return true },
	"client|info": emits(func(c *conn, _ string, _ [][]byte) *op {
		c.syncInfo()
		return &op{kind: opReply, reply: resp.AppendVerbatim(nil, c.infoLine(time.Now(), true), c.client.resp3)}
	}),
	"client|list": emits(func(c *conn, _ string, args [][]byte) *op { return c.clientList(args) }),
	"client|kill": func(c *conn, _ string, args [][]byte) bool {
		o, self := c.clientKill(args)
		if self {
			// As redis: the reply, then the connection closes.
			o.kind = opClose
			c.emit(o)
			return false
		}
		c.emit(o)
		return true
	},
	"client|getredir": emits(func(c *conn, _ string, _ [][]byte) *op {
		return &op{kind: opReply, reply: resp.AppendInt(nil, c.getRedir())}
	}),
	"client|trackinginfo": emits(func(c *conn, _ string, _ [][]byte) *op { return &op{kind: opReply, reply: c.trackingInfo()} }),
	"client|tracking":     emits(func(c *conn, _ string, args [][]byte) *op { return c.clientTracking(args) }),
	"client|caching":      emits(func(c *conn, _ string, args [][]byte) *op { return c.clientCaching(args) }),
	"client|unblock":      emits(func(c *conn, _ string, args [][]byte) *op { return c.unblock(args) }),
}

var okRaw = resp.AppendSimple(nil, "OK")

func (c *conn) ping(_ string, args [][]byte) *op {
	switch len(args) {
	case 1:
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "PONG")}
	case 2:
		return &op{kind: opReply, reply: resp.AppendBulk(nil, args[1])}
	}
	return errReply("ERR wrong number of arguments for 'ping' command")
}

func (c *conn) selectDB(_ string, args [][]byte) *op {
	db, err := strconv.Atoi(string(args[1]))
	switch {
	case err != nil:
		return errReply(errNotInteger)
	case db < 0 || db >= c.s.databases:
		return errReply("ERR DB index is out of range")
	}
	if rt, _ := c.s.routing(); db != 0 && (rt != nil || (c.s.cfg.Sharding != nil && c.s.cfg.Sharding.Sharded())) {
		return errReply("ERR SELECT is not allowed in cluster mode")
	}
	c.db = db
	return okReply()
}

func (c *conn) setName(args [][]byte) *op {
	if msg := checkClientName(args[2]); msg != "" {
		return errReply(msg)
	}
	c.client.name = string(args[2])
	return okReply()
}

// clientFlag answers CLIENT NO-EVICT and NO-TOUCH: accepted, and shown in
// CLIENT LIST's flags, but with no effect: the proxy's clients are not
// redis clients, so redis's client eviction (NO-EVICT) never applies to
// them; and key access times (NO-TOUCH) are each node's local redis
// bookkeeping, touched by the shared read and apply connections, not
// replicated data.
func (c *conn) clientFlag(name string, args [][]byte) *op {
	on, ok := onOff(args[2])
	if !ok {
		return errReply(errSyntax)
	}
	if name == "client|no-evict" {
		c.client.noEvict = on
	} else {
		c.client.noTouch = on
	}
	return okReply()
}
