package proxy

import (
	"time"

	"github.com/raftproxy/raftproxy/backend"
)

// Leader work: what only a group's leader does, on a timer (active expiry,
// the memory limit). One loop runs every task of a group, and it sleeps
// while its node follows, and while no task has work until something is
// applied (what gives a task work, a deadline or a memory limit, comes
// through the log): a process hosting many idle groups wakes for none.
const (
	// leaderPeriod is how often the tasks run while any has work.
	leaderPeriod = 100 * time.Millisecond
	// idleWait is how often, at most, idle tasks are asked again while
	// entries are applied.
	idleWait = time.Second
)

// leaderTask is one kind of leader work.
type leaderTask struct {
	// rc is the redis connection the task keeps: closed after a failed
	// round (the next one dials again), when leadership is lost, and at
	// stop.
	rc **backend.Conn
	// idle says a round would have nothing to do on node n.
	idle  func(n Group) bool
	round func(Group) error
	// wake, when set, says how long until an idle task has work by time
	// alone (0: not until something is applied).
	wake func() time.Duration
}

// quiet is a task's finding that nothing changes for it until node
// applies an entry: applied is node's AppliedChanged, taken before the
// task looked. A node that replaces it applies on channels of its own.
type quiet struct {
	node    Group
	applied <-chan struct{}
}

// quietOn takes n's AppliedChanged, before a task looks.
func quietOn(n Group) quiet { return quiet{node: n, applied: n.AppliedChanged()} }

// holds says nothing was applied on n since q was taken.
func (q quiet) holds(n Group) bool {
	if q.applied == nil || q.node != n {
		return false
	}
	select {
	case <-q.applied:
		return false
	default:
		return true
	}
}

// wakeIn is the soonest of the tasks' wakes, 0 for none.
func wakeIn(ts []*leaderTask) time.Duration {
	var d time.Duration
	for _, t := range ts {
		if t.wake == nil {
			continue
		}
		if w := t.wake(); w > 0 && (d == 0 || w < d) {
			d = w
		}
	}
	return d
}

// whileLeader runs the tasks' rounds every leaderPeriod while this node
// leads and some task has work, until stop. Not leading, it sleeps until
// the leader changes; with no work, until something is applied (and then
// idleWait more) or a task's wake. Nil tasks are left out.
func (s *Server) whileLeader(stop <-chan struct{}, tasks ...*leaderTask) {
	var ts []*leaderTask
	for _, t := range tasks {
		if t != nil {
			ts = append(ts, t)
		}
	}
	closeRC := func(t *leaderTask) {
		if *t.rc != nil {
			(*t.rc).Close()
			*t.rc = nil
		}
	}
	closeAll := func() {
		for _, t := range ts {
			closeRC(t)
		}
	}
	defer closeAll()
	timer := time.NewTimer(leaderPeriod)
	defer timer.Stop()
	// pause waits d, or until or is closed (nil: never); false at stop.
	pause := func(d time.Duration, or <-chan struct{}) bool {
		timer.Reset(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-or:
		case <-stop:
			return false
		}
		return true
	}
	for {
		var n Group
		if s.cfg.Cluster != nil {
			n = s.cfg.Cluster.Node()
		}
		if n == nil { // not initialised or joined yet, or removed
			if !pause(idleWait, nil) {
				return
			}
			continue
		}
		changed := n.LeaderChanged() // before IsLeader, so no change is missed
		if !n.IsLeader() {
			closeAll()
			select {
			case <-changed:
				continue
			case <-n.Done():
				// A stopped node, which its host may replace: look again
				// in a while, not at once (Node may return it until then).
			case <-stop:
				return
			}
			if !pause(idleWait, nil) {
				return
			}
			continue
		}
		applied := n.AppliedChanged() // before the tasks look, so no entry is missed
		idle := true
		for _, t := range ts {
			idle = idle && t.idle(n)
		}
		if idle {
			var due <-chan time.Time
			if d := wakeIn(ts); d > 0 {
				timer.Reset(d)
				due = timer.C
			}
			select {
			case <-applied:
				timer.Stop()
			case <-due:
				continue
			case <-changed:
				timer.Stop()
				continue
			case <-n.Done():
				// Replaced (its Ready loop revived): the new node's
				// channels are the ones to wait on.
				timer.Stop()
				if !pause(idleWait, nil) {
					return
				}
				continue
			case <-stop:
				return
			}
			if !pause(idleWait, changed) {
				return
			}
			continue
		}
		if !pause(leaderPeriod, changed) {
			return
		}
		if !n.IsLeader() {
			continue
		}
		for _, t := range ts {
			if t.idle(n) {
				continue
			}
			if t.round(n) != nil {
				closeRC(t)
			}
		}
	}
}
