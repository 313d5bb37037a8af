package proxy

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raftproxy/raftproxy/entry"
)

// CLIENT PAUSE and CLIENT UNPAUSE act on the whole cluster: a redis client
// pauses "the server", and here the server is every node (a failover
// playbook pauses writes to stop them everywhere, not on one node while the
// others take them). The pause goes through the log as a notice
// (entry.OpNotice): every node, when it applies it, holds its clients'
// commands (writes and may-replicate commands with WRITE, all with ALL)
// until the pause's end, counted from the time it was proposed, or until
// CLIENT UNPAUSE is applied. Like redis, a later end or a stricter mode wins.
// Writes from a node that has not applied the pause yet can still land
// during it; RAFT.* commands are never held.

type pauseState struct {
	mu   sync.Mutex
	end  time.Time
	all  bool          // ALL rather than WRITE
	done chan struct{} // closed when the pause ends or is lifted early
}

// clientPause proposes CLIENT PAUSE or CLIENT UNPAUSE.
func (c *conn) clientPause(name string, args [][]byte) *op {
	var notice [][]byte
	if name == "client|unpause" {
		notice = [][]byte{[]byte("CLIENT"), []byte("UNPAUSE")}
	} else {
		ms, err := strconv.ParseInt(string(args[2]), 10, 64)
		if err != nil || ms < 0 {
			return errReply("ERR timeout is not an integer or out of range")
		}
		mode := "ALL"
		if len(args) > 3 {
			mode = strings.ToUpper(string(args[3]))
			if (mode != "WRITE" && mode != "ALL") || len(args) > 4 {
				return errReply(errSyntax)
			}
		}
		notice = [][]byte{[]byte("CLIENT"), []byte("PAUSE"), []byte(strconv.FormatInt(ms, 10)), []byte(mode)}
	}
	n, refused := c.serving(nil, false)
	if refused != nil {
		return refused
	}
	c.pendingWrites.Add(1)
	timeout := c.s.timeout()
	// Its client hears OK once the pause is in force on this node.
	caughtUp := func(raw []byte) []byte { c.s.events.caughtUp(timeout); return raw }
	return &op{kind: opWrite, fut: n.ProposeRequest(proposalContext(), entry.Request{Op: entry.OpNotice, Args: notice}), start: c.cmdStart, fix: caughtUp}
}

// notice applies a notice request on this node (an apply.Notice event).
func (s *Server) notice(args [][]byte, timeMs int64, live bool) {
	if len(args) < 2 || !strings.EqualFold(string(args[0]), "client") {
		return
	}
	p := &s.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	switch strings.ToLower(string(args[1])) {
	case "unpause":
		p.lift()
	case "pause":
		if len(args) < 4 {
			return
		}
		ms, _ := strconv.ParseInt(string(args[2]), 10, 64)
		end := time.UnixMilli(timeMs).Add(time.Duration(ms) * time.Millisecond)
		if !live || !time.Now().Before(end) {
			return // a pause replayed after it ended
		}
		if p.done == nil || !time.Now().Before(p.end) {
			p.end, p.all, p.done = end, false, make(chan struct{})
			done := p.done
			time.AfterFunc(time.Until(end), func() { p.expire(done) })
		} else if end.After(p.end) {
			p.end = end
			done := p.done
			time.AfterFunc(time.Until(end), func() { p.expire(done) })
		}
		p.all = p.all || strings.EqualFold(string(args[3]), "all")
	}
}

// lift ends the pause; the caller holds mu.
func (p *pauseState) lift() {
	if p.done != nil {
		close(p.done)
		p.done = nil
	}
}

// expire ends the pause whose channel is done once its end has come (a
// later pause may have moved it).
func (p *pauseState) expire(done chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != done {
		return
	}
	if wait := time.Until(p.end); wait > 0 {
		time.AfterFunc(wait, func() { p.expire(done) })
		return
	}
	p.lift()
}

// pauseGate holds the reader while a pause holds the command, as redis
// holds a paused client: it reads nothing more until the pause ends.
func (c *conn) pauseGate(sp *spec) {
	p := &c.s.pause
	for {
		p.mu.Lock()
		done, all := p.done, p.all
		p.mu.Unlock()
		if done == nil || sp.allowPaused || (!all && !sp.pausedByWrite) {
			return
		}
		<-done
	}
}
