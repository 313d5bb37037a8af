package proxy

import (
	"context"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// txState is a transaction being queued between MULTI and EXEC. The proxy
// queues it itself and proposes it whole at EXEC as one log entry, which
// every node runs between MULTI and EXEC on its redis: so it is atomic on
// every node, and its reads (inside the entry) are linearizable.
type txState struct {
	db    int
	cmds  [][][]byte
	dirty bool // a command was refused while queueing: EXEC aborts
}

var queuedReply = resp.AppendSimple(nil, "QUEUED")

// queue handles a command received inside MULTI, with Redis's replies and
// its rule that a command refused at queue time makes EXEC abort.
func (c *conn) queue(args [][]byte) bool {
	tx := c.tx
	sp, errText := c.s.table.lookup(args)
	if sp == nil {
		tx.dirty = true
		c.emit(errReply(errText))
		return true
	}
	switch sp.name {
	case "exec":
		c.tx = nil
		c.emit(c.exec(tx))
		return true
	case "discard":
		c.tx = nil
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
		return true
	case "multi":
		c.emit(errReply("ERR MULTI calls can not be nested"))
		return true
	case "watch":
		c.emit(errReply("ERR WATCH inside MULTI is not allowed"))
		return true
	case "quit":
		return c.proxyCommand(sp.name, args)
	case "reset":
		// RESET is not queued: it ends the transaction at once, as in redis.
		_, open := c.clientCommand(sp.name, args)
		return open
	case "ping", "echo":
		// Redis runs them inside the transaction; so does every node.
		tx.cmds = append(tx.cmds, args)
		c.emit(&op{kind: opReply, reply: queuedReply})
		return true
	}
	switch sp.class {
	case classRefused:
		tx.dirty = true
		c.emit(errReply("ERR '" + displayName(sp.name) + "' " + sp.reason))
	case classProxy:
		// SELECT would change the database of the commands after it, and
		// raftproxy's own commands are not redis commands at all.
		tx.dirty = true
		c.emit(errReply("ERR '" + displayName(sp.name) + "' is not allowed inside MULTI by raftproxy"))
	default:
		if o := refuseAsync(sp, args); o != nil {
			tx.dirty = true
			c.emit(o)
			return true
		}
		tx.cmds = append(tx.cmds, absoluteTimes(sp.name, args, time.Now().UnixMilli()))
		c.emit(&op{kind: opReply, reply: queuedReply})
	}
	return true
}

// exec proposes a queued transaction as one log entry.
func (c *conn) exec(tx *txState) *op {
	if tx.dirty {
		return errReply("EXECABORT Transaction discarded because of previous errors.")
	}
	if len(tx.cmds) == 0 {
		return &op{kind: opReply, reply: resp.AppendArrayLen(nil, 0)}
	}
	n, refused := c.serving()
	if refused != nil {
		return refused
	}
	now := time.Now()
	c.waitReads()
	c.pendingWrites.Add(1)
	return &op{kind: opWrite, fut: n.ProposeTx(context.Background(), tx.db, tx.cmds, c.client.resp3), start: now}
}
