package proxy

import (
	"context"
	"errors"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// Scripts and functions may run for ever. Every node runs them from the
// log, so each is proposed as a killable request (entry.Request.Killable):
// while one runs past busy-reply-threshold, the node answers what redis
// answers (-BUSY) to everything but the commands redis lets through, and
// SCRIPT KILL or FUNCTION KILL sent to any node kills it on every node
// through the log (raftnode's verdict.go).

// Redis's texts.
const (
	busyScript   = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
	busyFunction = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
	notBusy      = "NOTBUSY No scripts in execution right now."
	killedText   = "ERR Script killed by user with SCRIPT KILL..."
)

// killable is the Killable kind of a data command (after determinize, so
// EVALSHA is EVAL), or 0. raftproxy's own scripts (SPOP, XADD…) are not:
// they are bounded, and no client knows them as scripts.
func killable(name string) uint8 {
	switch name {
	case "eval", "eval_ro":
		return backend.KillScript
	case "fcall", "fcall_ro":
		return backend.KillFunction
	}
	return 0
}

func busyText(kind uint8) string {
	if kind == backend.KillFunction {
		return busyFunction
	}
	return busyScript
}

// busyGate returns the -BUSY reply for a command that may not run while
// this node is busy running a script, or nil.
func (c *conn) busyGate(sp *spec) *op {
	if sp.allowBusy {
		return nil
	}
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return nil
	}
	if kind, busy := n.Busy(); busy {
		return errReply(busyText(kind))
	}
	return nil
}

// killCommand handles SCRIPT KILL and FUNCTION KILL. The reply comes once
// the abort is in the log (or the script ended first), so it is written by
// the connection's writer, as a reply that takes long to come.
func (c *conn) killCommand(name string) *op {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply("NOTBUSY No scripts in execution right now.")
	}
	kind := backend.KillScript
	if name == "function|kill" {
		kind = backend.KillFunction
	}
	timeout := c.s.timeout()
	return &op{kind: opPubSub, act: func() []byte {
		ctx, cancel := context.WithTimeout(c.s.baseContext(), timeout+n.BusyAfter())
		defer cancel()
		err := n.Kill(ctx, kind)
		if err == nil {
			return resp.AppendSimple(nil, "OK")
		}
		return resp.AppendError(nil, killError(err))
	}}
}

func killError(err error) string {
	var be *raftnode.BusyError
	switch {
	case errors.Is(err, raftnode.ErrNotBusy):
		return notBusy
	case errors.As(err, &be):
		return busyText(be.Kind)
	case errors.Is(err, raftnode.ErrTimeout):
		return "TIMEOUT the kill is not known to be committed; the script may still run"
	}
	return errorText(err, false)
}
