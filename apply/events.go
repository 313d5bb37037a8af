package apply

import "sync"

// EventKind is what an Event reports.
type EventKind uint8

const (
	// Written: a command was applied (a transaction's commands one by one).
	Written EventKind = iota + 1
	// Reloaded: redis was reloaded (a snapshot, a rebuild); any key may
	// have changed.
	Reloaded
	// Notice: a notice request (entry.OpNotice, e.g. CLIENT PAUSE) reached
	// the log.
	Notice
)

// Event is one thing the apply layer did, in log order.
type Event struct {
	Kind EventKind
	DB   int
	Args [][]byte
	// Null says a one-command transaction answered null: a blocking
	// command's attempt that found nothing, which wrote nothing.
	Null bool
	// Tag is the tag the command was proposed with on this node, else 0.
	Tag uint64
	// TimeMs is the log's time at a notice.
	TimeMs int64
	// Live is clear while the node applies its log again (restart,
	// rebuild).
	Live bool
}

// Feed carries events from the applier to one subscriber, in order and
// none lost, without the applier ever waiting for the subscriber.
type Feed struct {
	mu     sync.Mutex
	queue  []Event
	count  uint64 // events put so far
	signal chan struct{}
}

func newFeed() *Feed { return &Feed{signal: make(chan struct{}, 1)} }

// put queues events, under one lock and with one signal for all of them.
func (f *Feed) put(events ...Event) {
	if len(events) == 0 {
		return
	}
	f.mu.Lock()
	f.queue = append(f.queue, events...)
	f.count += uint64(len(events))
	f.mu.Unlock()
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// Ready receives a signal when events are waiting.
func (f *Feed) Ready() <-chan struct{} { return f.signal }

// Take returns the waiting events, oldest first, and the count of events
// put so far (the last one's number).
func (f *Feed) Take() ([]Event, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queue
	f.queue = nil
	return q, f.count
}

// Published returns the count of events put so far.
func (f *Feed) Published() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count
}
