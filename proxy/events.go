package proxy

import (
	"strings"
	"sync"
	"time"

	"github.com/raftproxy/raftproxy/apply"
)

// events follows the apply layer's feed (apply.Feed) on one goroutine: what
// the log wrote wakes blocked clients, invalidates tracked keys and reloads
// settings and users; notices pause clients. handled is the number of the
// last event handled.
type events struct {
	feed    *apply.Feed
	mu      sync.Mutex
	handled uint64
	changed chan struct{} // closed and replaced when handled moves
}

func newEvents(feed *apply.Feed) *events {
	return &events{feed: feed, changed: make(chan struct{})}
}

// followEvents handles the feed's events until stop is closed.
func (s *Server) followEvents(stop <-chan struct{}) {
	ev := s.events
	if ev.feed == nil {
		return
	}
	for {
		select {
		case <-ev.feed.Ready():
		case <-stop:
			return
		}
		batch, last := ev.feed.Take()
		for _, e := range batch {
			switch e.Kind {
			case apply.Written:
				s.written(e.DB, e.Args, e.Null, e.Tag, e.Live)
			case apply.Reloaded:
				// Also put when a slot move starts or ends in this
				// shard's log.
				s.written(0, nil, false, 0, false)
				s.dropShardChannels()
			case apply.Notice:
				s.notice(e.Args, e.TimeMs, e.Live)
			}
		}
		ev.mu.Lock()
		ev.handled = last
		close(ev.changed)
		ev.changed = make(chan struct{})
		ev.mu.Unlock()
	}
}

// caughtUp waits, at most timeout, until every event put by now is handled:
// a reply that must find its effect in force on this node (CLIENT PAUSE)
// waits for it.
func (ev *events) caughtUp(timeout time.Duration) {
	if ev.feed == nil {
		return
	}
	want := ev.feed.Published()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ev.mu.Lock()
		done, ch := ev.handled >= want, ev.changed
		ev.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		}
	}
}

// written handles an apply.Written event (nil args: apply.Reloaded): a
// command was applied to the local redis. Settings and users are read
// again when it may have changed them, tracked keys are invalidated, and
// blocked connections on the keys it may have modified try again. live is
// clear for a command the node applies again (restart, rebuild): it changes
// what redis holds, but what it did to clients happened when it was first
// applied.
func (s *Server) written(db int, args [][]byte, null bool, tag uint64, live bool) {
	if args == nil || isConfigSet(args) {
		// The slow log and latency settings may have changed.
		go s.refreshSettings(s.baseContext())
	}
	if args == nil {
		s.acl.gen.Add(1) // users came back from a snapshot
	} else if len(args) >= 2 && strings.EqualFold(string(args[0]), "acl") {
		s.aclChanged(args, live)
	}
	if s.tracker.n.Load() > 0 {
		if args == nil {
			s.invalidate(nil, true, 0)
		} else if keys, all := s.table.writtenKeys(args); all || len(keys) > 0 {
			s.invalidate(keys, all, tag)
		}
	}
	s.wakeBlocked(db, args, null)
}
