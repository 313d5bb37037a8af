package proxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
)

// The reader side of a connection: each command is routed to its class's
// path (conn.dispatch), refused, or turned into an op for the writer.

// dispatch routes one command; it returns false when the connection ends.
func (c *conn) dispatch(args [][]byte) bool {
	c.cls, c.cmdStart = mProxy, c.arrived
	// ASKING holds for the one command after it (a transaction: from MULTI
	// to EXEC, as the command the client retries).
	c.asked, c.asking = c.asking || (c.tx != nil && c.tx.asked), false
	c.viaLog, c.slot = false, -1
	c.stat, c.cmdArgs = c.s.stats.stat(c.s.table, args), args
	if !c.authed {
		if o := c.authGate(args); o != nil {
			o.rejected, o.stat = isErrorReply(o.reply), c.stat
			c.emit(o)
			return true
		}
	}
	if c.tx != nil {
		return c.queue(args)
	}
	sp, errText := c.s.table.lookup(args)
	if sp == nil {
		c.cls = mRefused
		c.emit(c.rejectReply(errText))
		return true
	}
	c.cls = metricClassOf(sp.class)
	c.client.cmd = sp.name
	if o := c.aclCheck(sp, args); o != nil {
		c.emit(o)
		return true
	}
	if o := c.monitorGate(sp); o != nil {
		c.emit(o)
		return true
	}
	c.pauseGate(sp)
	if o := c.busyGate(sp); o != nil {
		c.emit(c.rejectReply(string(o.reply[1 : len(o.reply)-2])))
		return true
	}
	// As redis, MONITOR shows the commands that passed these gates.
	c.feedMonitors(sp, args)
	if c.pubsubGate(sp.name, args) {
		return true
	}
	// XREAD and XREADGROUP block only with BLOCK: by argument, not by name.
	if sp.blocking || ((sp.name == "xread" || sp.name == "xreadgroup") && parseStreamRead(args).block != 0) {
		c.startBlocking(sp, args)
		return true
	}
	switch sp.class {
	case classRefused:
		c.emit(c.rejectReply(fmt.Sprintf("ERR '%s' %s", displayName(sp.name), sp.reason)))
	case classProxy:
		if sp.handle == nil {
			c.emit(errReply(unknownCommand(args)))
			return true
		}
		return sp.handle(c, sp.name, args)
	case classLocal:
		o := &op{kind: opLocal, args: args, db: c.db}
		if sp.name == "config|get" {
			o.fix = c.s.configGetFix
		}
		c.emit(o)
	case classWrite, classRead:
		c.emit(c.data(sp, args))
	}
	return true
}

func displayName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "|", " "))
}

// serving returns the raft node that can take a data command now, or the
// error reply that says why none can. args (the command, or the first of a
// transaction) name the slot of a -MOVED; read says whether it only reads.
func (c *conn) serving(args [][]byte, read bool) (Group, *op) {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return nil, errReply(errNoCluster)
	}
	if n.Removed() {
		return nil, errReply("ERR " + raftnode.ErrRemoved.Error())
	}
	if !c.s.followerProxy.Load() && !n.IsLeader() && !(read && c.readonly) {
		return nil, c.redirect(n, args)
	}
	if !n.Serving() {
		return nil, errReply("LOADING raftproxy is rebuilding this node's redis from the log")
	}
	return n, nil
}

// data starts a command that reads or writes keys.
func (c *conn) data(sp *spec, args [][]byte) *op {
	if o := c.slotGate(sp, args); o != nil {
		return o
	}
	n, refused := c.serving(args, sp.class == classRead)
	if refused != nil {
		return refused
	}
	sp, args, fix, early := c.determinize(sp, args, false)
	if early != nil {
		return early
	}
	o := c.route(n, sp, args)
	o.fix = fix
	return o
}

// route sends a data command to the log or queues it as a read.
func (c *conn) route(n Group, sp *spec, args [][]byte) *op {
	now := c.cmdStart
	if sp.class == classRead {
		untrack := c.trackRead(args)
		if c.pendingWrites.Load() > 0 || c.viaLog {
			// Ordered after this connection's writes by the log itself; every
			// node runs it, and only this one replies.
			c.pendingWrites.Add(1)
			return &op{kind: opLogRead, fut: n.ProposeTagged(proposalContext(), c.request(sp, args), c.id), start: now, untrack: untrack}
		}
		c.pendingReads.Add(1)
		return &op{kind: opRead, read: n.StartRead(), node: n, args: args, slot: c.slot, db: c.db, start: now, untrack: untrack}
	}
	if o := refuseAsync(sp, args); o != nil {
		return o
	}
	if o := c.oomRefusal(sp); o != nil {
		return o
	}
	c.waitReads()
	c.pendingWrites.Add(1)
	n = c.publishGroup(n, sp)
	// Propose bounds its own waits (for a leader, for room in its queue).
	// The tag tells this connection's own writes (CLIENT TRACKING NOLOOP).
	// node, args, db and asked let a write refused while its key was being
	// copied to another shard be proposed again (conn.retryLocked).
	return &op{kind: opWrite, fut: n.ProposeTagged(proposalContext(), c.request(sp, args), c.id), start: now,
		node: n, args: args, db: c.db, asked: c.asked}
}

// request is the log request of a data command.
func (c *conn) request(sp *spec, args [][]byte) entry.Request {
	return entry.Request{DB: c.db, Args: args, RESP3: c.client.resp3, Killable: killable(sp.name), Asking: c.asked}
}

// refuseAsync refuses FLUSHALL/FLUSHDB ASYNC: redis would free memory in
// the background, and a read could see the keys half gone on one node only.
func refuseAsync(sp *spec, args [][]byte) *op {
	if (sp.name == "flushall" || sp.name == "flushdb") && len(args) > 1 && strings.EqualFold(string(args[1]), "async") {
		return errReply(fmt.Sprintf("ERR '%s ASYNC' is not supported by raftproxy: use %s or %s SYNC",
			strings.ToUpper(sp.name), strings.ToUpper(sp.name), strings.ToUpper(sp.name)))
	}
	return nil
}

// waitReads waits until the reads queued before a write have run: once
// proposed, the write may be applied at any moment.
func (c *conn) waitReads() {
	for c.pendingReads.Load() > 0 {
		<-c.readsRan
	}
}

// errorText maps a raft outcome to the reply a Redis client understands.
func errorText(err error, read bool) string {
	switch {
	case errors.Is(err, raftnode.ErrNoLeader):
		return errNoLeader
	case errors.Is(err, raftnode.ErrTimeout):
		if read {
			return "TIMEOUT no quorum for read"
		}
		return "TIMEOUT not known to be committed; the write may or may not take effect"
	case errors.Is(err, raftnode.ErrLoading):
		return "LOADING raftproxy is rebuilding this node's redis from the log"
	case errors.Is(err, raftnode.ErrStopped):
		return "CLUSTERDOWN raft node is stopping"
	case errors.Is(err, raftnode.ErrKilled):
		return killedText
	case errors.Is(err, raftnode.ErrReordered):
		return "TRYAGAIN " + err.Error()
	case errors.Is(err, raftnode.ErrHalted):
		return "CLUSTERDOWN " + err.Error()
	case errors.Is(err, raftnode.ErrDiskFull):
		return "MISCONF raftproxy: " + err.Error()
	case errors.Is(err, errExpiryChurn):
		return err.Error()
	case errors.As(err, new(*raftnode.BusyError)):
		var be *raftnode.BusyError
		errors.As(err, &be)
		return busyText(be.Kind)
	case errors.Is(err, raftnode.ErrTransferTimeout), errors.Is(err, raftnode.ErrOtherLeader), errors.Is(err, raftnode.ErrNoSuchMember):
		return "ERR " + err.Error()
	}
	return "ERR " + err.Error()
}
