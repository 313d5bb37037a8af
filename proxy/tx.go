package proxy

import (
	"math/rand/v2"
	"time"

	"github.com/raftproxy/raftproxy/entry"
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
	// fixes rewrite the replies of some commands (by index) in EXEC's reply.
	fixes map[int]fixer
	// killable is the Killable kind of the first script queued, or 0.
	killable uint8
	// stats are the queued commands' counters: EXEC counts them as calls.
	stats []*cmdStat
	// writes: a queued command is held by CLIENT PAUSE WRITE.
	writes bool
	// slot is the hash slot of the keys queued so far, -1 before any: in a
	// sharded cluster a transaction runs in one shard, and its keys are
	// in one slot, as in Redis Cluster.
	slot int
	// asked: MULTI came after ASKING.
	asked bool
}

var queuedReply = resp.AppendSimple(nil, "QUEUED")

// queue handles a command received inside MULTI, with Redis's replies and
// its rule that a command refused at queue time makes EXEC abort.
func (c *conn) queue(args [][]byte) bool {
	tx := c.tx
	// A queued command is counted when EXEC runs it; one refused now is
	// counted as rejected.
	st := c.stat
	c.stat = nil
	reject := func(o *op) *op {
		o.rejected, o.stat = isErrorReply(o.reply), st
		return o
	}
	sp, errText := c.s.table.lookup(args)
	if sp != nil {
		c.feedMonitors(sp, args)
	}
	if sp != nil && sp.unknown {
		// Queued, a command raftproxy does not know would only fail at EXEC
		// time; redis refuses it when it is queued, and so does raftproxy.
		sp, errText = nil, unknownCommand(args)
	}
	if sp == nil {
		tx.dirty = true
		c.emit(reject(errReply(errText)))
		return true
	}
	if o := c.aclCheck(sp, args); o != nil {
		tx.dirty = true
		c.emit(o)
		return true
	}
	if o := c.busyGate(sp); o != nil {
		tx.dirty = true
		c.emit(reject(o))
		return true
	}
	switch sp.name {
	case "exec":
		c.pauseGate(&spec{pausedByWrite: tx.writes})
		c.tx = nil
		c.stat = st
		o := c.exec(tx)
		if !isErrorReply(o.reply) {
			o.inner = tx.stats
		}
		c.emit(o)
		return true
	case "discard":
		c.tx = nil
		c.stat = st
		c.unwatch()
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
		return true
	case "multi":
		c.emit(errReply("ERR MULTI calls can not be nested"))
		return true
	case "watch":
		c.emit(errReply("ERR WATCH inside MULTI is not allowed"))
		return true
	case "quit", "reset":
		// Not queued: QUIT closes, RESET ends the transaction at once, as
		// in redis.
		return sp.handle(c, sp.name, args)
	case "ping", "echo":
		// Redis runs them inside the transaction; so does every node.
		tx.cmds = append(tx.cmds, args)
		tx.stats = append(tx.stats, st)
		c.emit(&op{kind: opReply, reply: queuedReply})
		return true
	}
	switch sp.class {
	case classRefused:
		tx.dirty = true
		c.emit(reject(errReply("ERR '" + displayName(sp.name) + "' " + sp.reason)))
	case classProxy:
		// SELECT would change the database of the commands after it, and
		// raftproxy's own commands are not redis commands at all.
		tx.dirty = true
		c.emit(reject(errReply("ERR '" + displayName(sp.name) + "' is not allowed inside MULTI by raftproxy")))
	default:
		if o := refuseAsync(sp, args); o != nil {
			tx.dirty = true
			c.emit(reject(o))
			return true
		}
		if o := c.oomRefusal(sp); o != nil {
			tx.dirty = true
			c.emit(reject(o))
			return true
		}
		if o := c.txSlotGate(tx, sp, args); o != nil {
			tx.dirty = true
			c.emit(reject(o))
			return true
		}
		sp, args, fix, early := c.determinize(sp, args, true)
		if early != nil {
			tx.dirty = true
			c.emit(reject(early))
			return true
		}
		if tx.killable == 0 {
			tx.killable = killable(sp.name)
		}
		if fix != nil {
			if tx.fixes == nil {
				tx.fixes = map[int]fixer{}
			}
			tx.fixes[len(tx.cmds)] = fix
		}
		tx.cmds = append(tx.cmds, args)
		tx.stats = append(tx.stats, st)
		tx.writes = tx.writes || sp.pausedByWrite
		c.emit(&op{kind: opReply, reply: queuedReply})
	}
	return true
}

// exec proposes a queued transaction as one log entry. With a watch, every
// node's applier runs it only if none of the watched keys was written since
// the WATCH (see raftnode's watches); EXEC ends the watch either way.
func (c *conn) exec(tx *txState) *op {
	watch := c.watch
	c.watch = 0
	if tx.dirty {
		c.forgetWatch(watch)
		return errReply("EXECABORT Transaction discarded because of previous errors.")
	}
	if len(tx.cmds) == 0 && watch == 0 {
		return &op{kind: opReply, reply: resp.AppendArrayLen(nil, 0)}
	}
	var first [][]byte
	if len(tx.cmds) > 0 {
		first = tx.cmds[0]
	}
	n, refused := c.serving(first, false)
	if refused != nil {
		c.forgetWatch(watch)
		return refused
	}
	now := time.Now()
	c.waitReads()
	c.pendingWrites.Add(1)
	req := entry.Request{DB: tx.db, Op: entry.OpTx, Tx: tx.cmds, Watch: watch, RESP3: c.client.resp3, Killable: tx.killable, Asking: tx.asked || c.asked}
	o := &op{kind: opWrite, fut: n.ProposeRequest(proposalContext(), req), start: now}
	if tx.fixes != nil {
		o.fix = txFix(tx.fixes)
	}
	return o
}

// watchKeys handles WATCH: the keys join this connection's watch through
// the log, so that every node knows from which point on a write to them
// aborts the connection's next EXEC. The reply comes once the watch is
// applied here: a read after it sees at least that point.
func (c *conn) watchKeys(args [][]byte) *op {
	if sp, _ := c.s.table.lookup(args); sp != nil {
		// A sharded cluster's shard watches only keys of its own slots.
		if o := c.slotGate(sp, args); o != nil {
			return o
		}
	}
	n, refused := c.serving(args, false)
	if refused != nil {
		return refused
	}
	if c.watch == 0 {
		for c.watch == 0 {
			c.watch = rand.Uint64()
		}
	}
	now := time.Now()
	c.pendingWrites.Add(1)
	req := entry.Request{DB: c.db, Op: entry.OpWatch, Watch: c.watch, Args: args[1:], Asking: c.asked}
	return &op{kind: opWrite, fut: n.ProposeRequest(proposalContext(), req), start: now}
}

// unwatch ends the connection's watch (UNWATCH, DISCARD, a closed
// connection).
func (c *conn) unwatch() {
	w := c.watch
	c.watch = 0
	c.forgetWatch(w)
}

// forgetWatch asks every node to drop watch w. Nobody waits for it: the
// connection has forgotten w already, and if the request is lost the
// applier drops the watch once it holds too many.
func (c *conn) forgetWatch(w uint64) {
	if w == 0 {
		return
	}
	n := c.s.cfg.Cluster.Node()
	if n == nil || n.Removed() {
		return
	}
	// In its own goroutine: without a leader, proposing waits for one, and
	// neither the client nor a closing connection should wait for that.
	go n.ProposeRequest(proposalContext(), entry.Request{Op: entry.OpUnwatch, Watch: w})
}
