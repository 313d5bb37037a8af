package pubsub

import "sync"

// Hub joins the brokers of a node's groups (a sharded node's shards, one
// broker per shard port), so that a PUBLISH applied by any group reaches the
// channel's subscribers on every shard: Redis Cluster forwards PUBLISH to
// every node, and cluster clients subscribe on the node of the channel's
// slot while they publish on any. SPUBLISH stays within its shard.
//
// Every node applies every group's log, so each node hands each message to
// its own subscribers once, whichever group carried it.
type Hub struct {
	mu      sync.Mutex
	members map[*Broker]func() uint64 // each broker's group's commit index
}

func NewHub() *Hub { return &Hub{members: map[*Broker]func() uint64{}} }

// Join adds b, whose group's commit index commit reads, to the hub.
func (h *Hub) Join(b *Broker, commit func() uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.members[b] = commit
	b.hub.Store(h)
}

// Leave takes b out of the hub (its group stopped on this node).
func (h *Hub) Leave(b *Broker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.members, b)
	b.hub.CompareAndSwap(h, nil)
}

// marks are the marks of a subscription made now to self, whose group's
// commit index is own.
func (h *Hub) marks(self *Broker, own uint64) *Marks {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := &Marks{own: own, others: make(map[*Broker]uint64, len(h.members))}
	for b, commit := range h.members {
		if b != self {
			m.others[b] = commit()
		}
	}
	return m
}

// fanOut delivers a message of src's group to the other brokers, one at a
// time: a broker's lock is never held while another's is taken, since
// their groups publish concurrently.
func (h *Hub) fanOut(src *Broker, index uint64, channel, message []byte) {
	h.mu.Lock()
	if len(h.members) < 2 {
		h.mu.Unlock()
		return // a node of one group
	}
	others := make([]*Broker, 0, len(h.members)-1)
	for b := range h.members {
		if b != src {
			others = append(others, b)
		}
	}
	h.mu.Unlock()
	for _, b := range others {
		b.deliver(src, index, channel, message, false)
	}
}
