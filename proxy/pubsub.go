package proxy

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// pubsubState is a connection's subscriptions as its reader sees them: the
// reader answers (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE from it, and applies
// each change to the broker from the writer, as the confirmation is written
// (an opPubSub op), so no message of a channel is written before the
// confirmation of its subscription.
type pubsubState struct {
	// mu guards names: the reader changes them, and so does its shard
	// losing a slot (dropShardChannels, on the events goroutine).
	mu    sync.Mutex
	names [3]map[string]struct{}
	// sub is the connection's message queue, made at its first
	// subscription; the writer reads it, hence atomic.
	sub atomic.Pointer[pubsub.Subscriber]
}

// count is the number redis puts in a confirmation: channels plus
// patterns, or shard channels. The caller holds mu.
func (p *pubsubState) count(k pubsub.Kind) int {
	if k == pubsub.Shard {
		return len(p.names[pubsub.Shard])
	}
	return len(p.names[pubsub.Channel]) + len(p.names[pubsub.Pattern])
}

// active reports whether the connection is in subscribed mode.
func (p *pubsubState) active() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.activeLocked()
}

func (p *pubsubState) activeLocked() bool {
	return len(p.names[pubsub.Channel])+len(p.names[pubsub.Pattern])+len(p.names[pubsub.Shard]) > 0
}

// setSubs reports the counts to CLIENT LIST; the caller holds mu.
func (c *conn) setSubs() {
	c.info.setSubs(len(c.ps.names[pubsub.Channel]), len(c.ps.names[pubsub.Pattern]), len(c.ps.names[pubsub.Shard]))
}

// allowedSubscribed is what redis lets a RESP2 client in subscribed mode run.
var allowedSubscribed = map[string]bool{
	"subscribe": true, "psubscribe": true, "ssubscribe": true,
	"unsubscribe": true, "punsubscribe": true, "sunsubscribe": true,
	"ping": true, "quit": true, "reset": true,
}

// pubsubGate applies redis's rule for a RESP2 client in subscribed mode: only
// the subscription commands, PING (answered as a message), QUIT and RESET.
// It reports whether it answered the command.
func (c *conn) pubsubGate(name string, args [][]byte) bool {
	if c.client.resp3 || !c.ps.active() {
		return false
	}
	if !allowedSubscribed[name] {
		c.emit(errReply(fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", name)))
		return true
	}
	if name != "ping" || len(args) > 2 {
		return false
	}
	b := resp.AppendArrayLen(nil, 2)
	b = resp.AppendBulkString(b, "pong")
	if len(args) == 2 {
		b = resp.AppendBulk(b, args[1])
	} else {
		b = resp.AppendBulkString(b, "")
	}
	c.emit(&op{kind: opReply, reply: b})
	return true
}

var subCommands = map[string]struct {
	kind  pubsub.Kind
	unsub bool
	msg   string
}{
	"subscribe": {pubsub.Channel, false, "subscribe"}, "psubscribe": {pubsub.Pattern, false, "psubscribe"},
	"ssubscribe": {pubsub.Shard, false, "ssubscribe"}, "unsubscribe": {pubsub.Channel, true, "unsubscribe"},
	"punsubscribe": {pubsub.Pattern, true, "punsubscribe"}, "sunsubscribe": {pubsub.Shard, true, "sunsubscribe"},
}

// pubsubCommand answers PUBSUB's subcommands.
func (c *conn) pubsubCommand(name string, args [][]byte) *op {
	b := c.s.broker
	var act func() []byte
	switch name {
	case "pubsub|channels", "pubsub|shardchannels":
		k := pubsub.Channel
		if name == "pubsub|shardchannels" {
			k = pubsub.Shard
		}
		var pat []byte
		if len(args) > 2 {
			pat = args[2]
		}
		act = func() []byte {
			names := b.Names(k, pat)
			r := resp.AppendArrayLen(nil, len(names))
			for _, n := range names {
				r = resp.AppendBulkString(r, n)
			}
			return r
		}
	case "pubsub|numsub", "pubsub|shardnumsub":
		k := pubsub.Channel
		if name == "pubsub|shardnumsub" {
			k = pubsub.Shard
		}
		chans := args[2:]
		act = func() []byte {
			r := resp.AppendArrayLen(nil, 2*len(chans))
			for _, ch := range chans {
				r = resp.AppendBulk(r, ch)
				r = resp.AppendInt(r, int64(b.Count(k, string(ch))))
			}
			return r
		}
	case "pubsub|numpat":
		act = func() []byte { return resp.AppendInt(nil, int64(b.NumPat())) }
	default:
		return errReply(unknownCommand(args))
	}
	return &op{kind: opPubSub, act: act}
}

// subscriber returns the connection's message queue, making it (and its
// pusher goroutine) at the first subscription.
// Another connection's reader may make it (CLIENT TRACKING REDIRECT), so
// it is made at most once whoever asks.
func (c *conn) subscriber() *pubsub.Subscriber {
	if s := c.ps.sub.Load(); s != nil {
		return s
	}
	s := pubsub.NewSubscriber(c.s.pubsubLimit, func() {
		c.s.log.Warn("disconnecting a subscriber that does not keep up with its messages", "client", c.info.addr, "limit_bytes", c.s.pubsubLimit)
		c.nc.Close()
	})
	s.RESP3.Store(c.resp3.Load())
	s.Owner = c
	if !c.ps.sub.CompareAndSwap(nil, s) {
		return c.ps.sub.Load()
	}
	go c.pushLoop(s)
	return s
}

// subscribeFrom is the commit index a subscription made now starts after.
func (c *conn) subscribeFrom() uint64 {
	if c.s.cfg.Cluster == nil {
		return 0
	}
	if n := c.s.cfg.Cluster.Node(); n != nil {
		return n.CommitIndex()
	}
	return 0
}

func (c *conn) subscribe(k pubsub.Kind, msg string, names [][]byte) {
	c.ps.mu.Lock()
	if c.ps.names[k] == nil {
		c.ps.names[k] = map[string]struct{}{}
	}
	s := c.subscriber()
	var reply []byte
	for _, n := range names {
		c.ps.names[k][string(n)] = struct{}{}
		reply = c.confirm(reply, msg, n, c.ps.count(k))
	}
	c.setSubs()
	c.ps.mu.Unlock()
	added := slices.Clone(names)
	b := c.s.broker
	c.emit(&op{kind: opPubSub, act: func() []byte {
		from := b.Marks(c.subscribeFrom())
		for _, n := range added {
			b.Add(k, string(n), s, from)
		}
		return reply
	}})
}

func (c *conn) unsubscribe(k pubsub.Kind, msg string, names [][]byte) {
	c.ps.mu.Lock()
	if len(names) == 0 {
		for n := range c.ps.names[k] {
			names = append(names, []byte(n))
		}
		slices.SortFunc(names, func(a, b []byte) int { return compareBytes(a, b) })
	}
	var reply []byte
	if len(names) == 0 {
		reply = pubsub.AppendPushLen(reply, 3, c.client.resp3)
		reply = resp.AppendBulkString(reply, msg)
		reply = resp.AppendNull(reply, c.client.resp3)
		reply = resp.AppendInt(reply, int64(c.ps.count(k)))
	}
	for _, n := range names {
		delete(c.ps.names[k], string(n))
		reply = c.confirm(reply, msg, n, c.ps.count(k))
	}
	c.setSubs()
	c.ps.mu.Unlock()
	s := c.ps.sub.Load()
	removed := slices.Clone(names)
	b := c.s.broker
	c.emit(&op{kind: opPubSub, act: func() []byte {
		if s != nil {
			for _, n := range removed {
				b.Remove(k, string(n), s)
			}
		}
		return reply
	}})
}

// confirm appends a (un)subscription confirmation.
func (c *conn) confirm(dst []byte, msg string, name []byte, count int) []byte {
	dst = pubsub.AppendPushLen(dst, 3, c.client.resp3)
	dst = resp.AppendBulkString(dst, msg)
	dst = resp.AppendBulk(dst, name)
	return resp.AppendInt(dst, int64(count))
}

func compareBytes(a, b []byte) int {
	switch {
	case string(a) < string(b):
		return -1
	case string(a) > string(b):
		return 1
	}
	return 0
}

// pubsubReset drops every subscription without confirmations (RESET).
func (c *conn) pubsubReset() {
	c.ps.mu.Lock()
	if !c.ps.activeLocked() {
		c.ps.mu.Unlock()
		return
	}
	for k := range c.ps.names {
		c.ps.names[k] = nil
	}
	c.info.setSubs(0, 0, 0)
	c.ps.mu.Unlock()
	s := c.ps.sub.Load()
	b := c.s.broker
	c.emit(&op{kind: opPubSub, act: func() []byte {
		b.RemoveAll(s)
		return nil
	}})
}

// pubsubClose ends the connection's subscriptions; the writer has stopped.
func (c *conn) pubsubClose() {
	s := c.ps.sub.Load()
	if s == nil {
		return
	}
	c.s.broker.RemoveAll(s)
	s.Close()
}

// syncPushProtocol makes later messages follow a protocol change (HELLO).
func (c *conn) syncPushProtocol() {
	c.resp3.Store(c.client.resp3)
	if s := c.ps.sub.Load(); s != nil {
		s.RESP3.Store(c.client.resp3)
	}
}

// writePushes writes the messages queued so far (with late, the late
// frames too); the caller holds outMu. The writer calls it before each
// reply, so a message the applier queued before a reply was ready comes
// first, as in redis's output buffer, and with late after it.
func (c *conn) writePushes(late bool) {
	s := c.ps.sub.Load()
	if s == nil {
		return
	}
	for _, f := range s.Take(late) {
		c.w.Write(f)
	}
}

// pushLoop writes messages to a subscriber that is waiting for them and
// sends no commands, until the connection closes.
func (c *conn) pushLoop(s *pubsub.Subscriber) {
	for {
		select {
		case <-s.Wake():
		case <-s.Done():
			return
		}
		c.outMu.Lock()
		c.writePushes(true)
		err := c.w.Flush()
		c.outMu.Unlock()
		if err != nil {
			c.nc.Close()
			return
		}
	}
}

// dropShardChannels ends the shard-channel subscriptions of this server's
// clients whose slot its shard no longer serves (a move took the slot
// away), as redis does when a slot leaves a node: each client gets
// "sunsubscribe <channel> <count>" and a cluster client subscribes again
// where the slot went. SPUBLISH of those channels now reaches the new
// owner's subscribers only, so a subscription left here would hear nothing.
func (s *Server) dropShardChannels() {
	if s.cfg.ShardRouting == nil || s.cfg.Cluster == nil {
		return
	}
	own, n := s.cfg.ShardRouting(), s.cfg.Cluster.Node()
	if own == nil || n == nil {
		return
	}
	self := raftnode.IDString(n.ClusterID())
	lost := func(channel string) bool {
		slot := slotmap.KeySlot([]byte(channel))
		if _, moving := own.Moving(slot); moving {
			return false // served here until the move ends
		}
		return own.Owner(slot) != self
	}
	for sub, chans := range s.broker.DropShard(lost) {
		if c, ok := sub.Owner.(*conn); ok {
			c.shardChannelsDropped(sub, chans)
		}
	}
}

// shardChannelsDropped tells the client that the server ended its
// subscriptions of chans (removed from the broker already).
func (c *conn) shardChannelsDropped(sub *pubsub.Subscriber, chans []string) {
	c.ps.mu.Lock()
	defer c.ps.mu.Unlock()
	slices.Sort(chans)
	var f []byte
	for _, ch := range chans {
		if _, ok := c.ps.names[pubsub.Shard][ch]; !ok {
			continue
		}
		delete(c.ps.names[pubsub.Shard], ch)
		f = pubsub.AppendPushLen(f, 3, sub.RESP3.Load())
		f = resp.AppendBulkString(f, "sunsubscribe")
		f = resp.AppendBulkString(f, ch)
		f = resp.AppendInt(f, int64(c.ps.count(pubsub.Shard)))
	}
	c.setSubs()
	if len(f) > 0 {
		sub.PushFrame(f)
	}
}
