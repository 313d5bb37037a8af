// Package pubsub holds a node's subscriptions and delivers messages to
// them: the apply layer publishes each applied PUBLISH here, in log order,
// and the proxy subscribes its clients and writes out what they receive.
package pubsub

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/raftproxy/raftproxy/resp"
)

// Clients subscribe at their node's proxy (the local redis has no
// subscribers); PUBLISH goes through the log, and every node's apply layer
// hands each applied PUBLISH, in log order, to its broker,
// which queues the message on each matching subscriber of this node. The
// PUBLISH reply, like PUBSUB's counts, is about this node only, as in redis
// cluster.

// Limit is how many bytes of messages may wait for one subscriber
// that does not read them, like redis's default client-output-buffer-limit
// for pub/sub clients (32mb hard limit): past it the subscriber is
// disconnected, so a slow one never blocks the applier or grows without bound.
const Limit = 32 << 20

// Kind is the kind of a subscription.
type Kind uint8

const (
	Channel Kind = iota // SUBSCRIBE
	Pattern             // PSUBSCRIBE
	Shard               // SSUBSCRIBE
)

// Broker holds the subscriptions of one group's clients on this node (one
// shard's port). Each records the Marks at which it was made: a message of
// an entry at or below its group's mark was published before the
// subscription (a node applying old entries after a restart must not
// deliver them). In a Hub, a PUBLISH reaches the other brokers too.
type Broker struct {
	mu   sync.Mutex
	subs [3]map[string]map[*Subscriber]*Marks
	hub  atomic.Pointer[Hub]
}

func NewBroker() *Broker {
	b := &Broker{}
	for i := range b.subs {
		b.subs[i] = map[string]map[*Subscriber]*Marks{}
	}
	return b
}

// Marks is where the logs of a node's groups stood when a subscription was
// made: own is the subscriber's group's commit index, and others those of
// the other groups of its Hub, by their brokers (a group missing from it
// began after the subscription).
type Marks struct {
	own    uint64
	others map[*Broker]uint64
}

// Marks returns the marks of a subscription made now, own being the commit
// index of b's group. The subscriptions of one command share them.
func (b *Broker) Marks(own uint64) *Marks {
	if h := b.hub.Load(); h != nil {
		return h.marks(b, own)
	}
	return &Marks{own: own}
}

// mark is the index after which a message of src's log is news to a
// subscription of b with marks m.
func (m *Marks) mark(b, src *Broker) uint64 {
	if m == nil {
		return 0
	}
	if src == b {
		return m.own
	}
	return m.others[src]
}

func (b *Broker) Add(k Kind, name string, s *Subscriber, from *Marks) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.subs[k][name]
	if m == nil {
		m = map[*Subscriber]*Marks{}
		b.subs[k][name] = m
	}
	if _, ok := m[s]; !ok {
		m[s] = from
	}
}

func (b *Broker) Remove(k Kind, name string, s *Subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeLocked(k, name, s)
}

func (b *Broker) removeLocked(k Kind, name string, s *Subscriber) {
	m := b.subs[k][name]
	delete(m, s)
	if len(m) == 0 {
		delete(b.subs[k], name)
	}
}

// DropShard ends the shard-channel subscriptions whose channel lost says
// this broker's shard no longer serves, and returns the channels each
// subscriber lost (the proxy tells its clients).
func (b *Broker) DropShard(lost func(channel string) bool) map[*Subscriber][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out map[*Subscriber][]string
	for name, m := range b.subs[Shard] {
		if !lost(name) {
			continue
		}
		if out == nil {
			out = map[*Subscriber][]string{}
		}
		for s := range m {
			out[s] = append(out[s], name)
		}
		delete(b.subs[Shard], name)
	}
	return out
}

// removeAll drops every subscription of s (a closed connection, RESET).
func (b *Broker) RemoveAll(s *Subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.subs {
		for name, m := range b.subs[k] {
			if _, ok := m[s]; ok {
				b.removeLocked(Kind(k), name, s)
			}
		}
	}
}

// Publish delivers a message of the entry at index of b's group and returns
// how many of b's subscriptions received it (a client subscribed to the
// channel and to a matching pattern counts, and receives it, twice, as in
// redis). A shard message stays with b's subscribers; any other reaches
// the subscribers of every broker of b's Hub, as a Redis Cluster PUBLISH
// reaches every node, and counts those of b only, as redis counts the
// node's own.
func (b *Broker) Publish(index uint64, channel, message []byte, sharded bool) int64 {
	n := b.deliver(b, index, channel, message, sharded)
	if h := b.hub.Load(); h != nil && !sharded {
		h.fanOut(b, index, channel, message)
	}
	return n
}

// deliver hands a message of the entry at index of src's group to b's
// subscriptions made before it.
func (b *Broker) deliver(src *Broker, index uint64, channel, message []byte, sharded bool) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	if sharded {
		for s, from := range b.subs[Shard][string(channel)] {
			if index > from.mark(b, src) && s.Push("smessage", nil, channel, message) {
				n++
			}
		}
		return n
	}
	for s, from := range b.subs[Channel][string(channel)] {
		if index > from.mark(b, src) && s.Push("message", nil, channel, message) {
			n++
		}
	}
	for pat, m := range b.subs[Pattern] {
		if !globMatch([]byte(pat), channel) {
			continue
		}
		for s, from := range m {
			if index > from.mark(b, src) && s.Push("pmessage", []byte(pat), channel, message) {
				n++
			}
		}
	}
	return n
}

// names returns the channels (or shard channels) with subscribers that
// match pattern (all with nil), sorted: PUBSUB CHANNELS.
func (b *Broker) Names(k Kind, pattern []byte) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for name := range b.subs[k] {
		if pattern == nil || globMatch(pattern, []byte(name)) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// count returns the number of subscribers of name: PUBSUB NUMSUB.
func (b *Broker) Count(k Kind, name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[k][name])
}

// numpat returns the number of distinct patterns: PUBSUB NUMPAT.
func (b *Broker) NumPat() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[Pattern])
}

// subscriber is one connection's queue of messages. The applier (through
// the broker) appends without ever waiting; the connection's pusher
// goroutine writes them out.
type Subscriber struct {
	RESP3 atomic.Bool // the connection's protocol: messages are push frames in RESP3
	// Owner is the connection the subscriber belongs to, set once by its
	// maker before the subscriber is shared.
	Owner any
	limit int
	kill  func() // disconnects the client when it falls too far behind
	wake  chan struct{}
	done  chan struct{} // closed by close: the pusher goroutine ends

	mu     sync.Mutex
	queue  [][]byte
	bytes  int
	closed bool
	// late are frames written after the reply being written (tracking
	// invalidations), not before it as messages are.
	late [][]byte
}

func NewSubscriber(limit int, kill func()) *Subscriber {
	return &Subscriber{limit: limit, kill: kill, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push queues a message and reports whether it was queued; a subscriber
// over its limit is closed and disconnected instead.
func (s *Subscriber) Push(kind string, pattern, channel, message []byte) bool {
	resp3 := s.RESP3.Load()
	n := 3
	if pattern != nil {
		n = 4
	}
	f := make([]byte, 0, 40+len(pattern)+len(channel)+len(message))
	f = AppendPushLen(f, n, resp3)
	f = resp.AppendBulkString(f, kind)
	if pattern != nil {
		f = resp.AppendBulk(f, pattern)
	}
	f = resp.AppendBulk(f, channel)
	f = resp.AppendBulk(f, message)
	return s.enqueue(f, false)
}

// pushFrame queues a frame already in the client's protocol (a MONITOR
// line), which the caller may reuse.
func (s *Subscriber) PushFrame(f []byte) bool { return s.enqueue(bytes.Clone(f), false) }

// pushLate queues a frame written after the reply being written now (a
// tracking invalidation).
func (s *Subscriber) PushLate(f []byte) bool { return s.enqueue(f, true) }

// enqueue queues frame f, late or not; false when the subscriber is closed
// or over its limit (it is then closed and disconnected).
func (s *Subscriber) enqueue(f []byte, late bool) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if s.bytes+len(f) > s.limit {
		s.closed, s.queue, s.late, s.bytes = true, nil, nil, 0
		s.mu.Unlock()
		s.kill()
		return false
	}
	if late {
		s.late = append(s.late, f)
	} else {
		s.queue = append(s.queue, f)
	}
	s.bytes += len(f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns the queued messages and empties the queue; with late, the
// late frames too (after them).
func (s *Subscriber) Take(late bool) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	if late {
		q = append(q, s.late...)
		s.late = nil
	}
	s.bytes = 0
	for _, f := range s.late {
		s.bytes += len(f)
	}
	return q
}

// close makes later pushes fail.
func (s *Subscriber) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	s.closed, s.queue, s.late, s.bytes = true, nil, nil, 0
}

// appendPushLen starts a push frame: RESP3's > or, in RESP2, an array.
func AppendPushLen(dst []byte, n int, resp3 bool) []byte {
	if resp3 {
		dst = strconv.AppendInt(append(dst, '>'), int64(n), 10)
		return append(dst, '\r', '\n')
	}
	return resp.AppendArrayLen(dst, n)
}

// subscribed reports whether subscriber s subscribes to channel.
func (b *Broker) Subscribed(channel string, s *Subscriber) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.subs[Channel][channel][s]
	return ok
}

// Wake receives a signal when frames are queued.
func (s *Subscriber) Wake() <-chan struct{} { return s.wake }

// Done is closed by Close: the connection's pusher ends.
func (s *Subscriber) Done() <-chan struct{} { return s.done }
