package proxy

import (
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// proxyCommand answers the commands the proxy handles itself. It returns
// false when the connection ends.
func (c *conn) proxyCommand(name string, args [][]byte) bool {
	switch name {
	case "ping":
		switch len(args) {
		case 1:
			c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "PONG")})
		case 2:
			c.emit(&op{kind: opReply, reply: resp.AppendBulk(nil, args[1])})
		default:
			c.emit(errReply("ERR wrong number of arguments for 'ping' command"))
		}
	case "echo":
		c.emit(&op{kind: opReply, reply: resp.AppendBulk(nil, args[1])})
	case "quit":
		c.emit(&op{kind: opClose, reply: resp.AppendSimple(nil, "OK")})
		return false
	case "select":
		db, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			c.emit(errReply(errNotInteger))
		case db < 0 || db >= c.s.databases:
			c.emit(errReply("ERR DB index is out of range"))
		default:
			c.db = db
			c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
		}
	case "multi":
		c.tx = &txState{db: c.db}
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "exec":
		c.emit(errReply("ERR EXEC without MULTI"))
	case "discard":
		c.emit(errReply("ERR DISCARD without MULTI"))
	case "watch":
		c.emit(c.watchKeys(args))
	case "unwatch":
		c.unwatch()
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "raft.cluster":
		c.emit(c.raftCluster(args))
	case "raft.node":
		c.emit(c.raftNode(args))
	case "raft.transfer_leader":
		if len(args) > 2 {
			c.emit(errReply("ERR wrong number of arguments for 'raft.transfer_leader' command"))
			break
		}
		c.emit(c.raftTransferLeader(args))
	case "raft.config":
		c.emit(c.raftConfig(args))
	case "raft.debug":
		c.emit(c.raftDebug(args))
	case "raft.backup":
		c.emit(c.raftBackup(args))
	case "script|kill", "function|kill":
		c.emit(c.killCommand(name))
	case "acl|setuser", "acl|deluser", "acl|getuser", "acl|list", "acl|users", "acl|whoami", "acl|dryrun":
		c.emit(c.aclCommand(name, args))
	case "monitor":
		c.emit(c.monitorCommand())
	case "slowlog|get", "slowlog|len", "slowlog|reset":
		c.emit(c.slowlogCommand(name, args))
	case "config|resetstat":
		// The local redis's counters are reset too: INFO shows its others.
		c.s.stats.reset()
		c.emit(&op{kind: opLocal, args: args, db: c.db})
	case "raft.info":
		c.emit(&op{kind: opReply, reply: resp.AppendBulkString(nil, c.s.raftInfo())})
	case "info":
		c.emit(c.infoCommand(args))
	case "role":
		c.emit(c.role())
	case "debug":
		c.emit(c.debug(args))
	case "wait", "waitaof":
		c.emit(c.wait(name, args))
	case "config|set":
		c.emit(c.configSet(args))
	case "readonly", "readwrite":
		c.readonly = name == "readonly"
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "asking":
		// Slots never migrate (one shard owns them all), so raftproxy never
		// sends -ASK; a client may still send ASKING.
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	default:
		if strings.HasPrefix(name, "cluster|") {
			c.emit(c.cluster(name, args))
			break
		}
		if strings.HasPrefix(name, "latency|") {
			c.emit(c.latencyCommand(name, args))
			break
		}
		c.emit(errReply(unknownCommand(args)))
	}
	return true
}
