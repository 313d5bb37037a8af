package backend

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/fsm"
)

// Killing a script the log decided to abort (fsm.Killer). Redis stops a
// running script with SCRIPT KILL (FUNCTION KILL for a function) only if it
// has not written yet: then it is as if it never ran. One that wrote cannot
// be undone in place, so redis is shut down (SHUTDOWN NOSAVE, the only
// other command a busy redis takes) and the node rebuilds it from the log
// without the script. A script sent down the replication stream of a held
// redis is its master's, which redis never kills: the same.

// Kinds of killable requests, as the proxy marks them in the log.
const (
	KillScript   uint8 = 1 // EVAL, EVAL_RO (SCRIPT KILL)
	KillFunction uint8 = 2 // FCALL, FCALL_RO (FUNCTION KILL)
)

// killedPrefix starts the error redis answers a killed script with; a
// script's own error with this text is not registered either, alike on
// every node.
var killedPrefix = []byte("ERR Script killed by user with")

// BusyAfter implements fsm.Killer: redis's busy-reply-threshold.
func (s *StateMachine) BusyAfter() time.Duration {
	return time.Duration(s.busyMs.Load()) * time.Millisecond
}

// noteBusyThreshold keeps BusyAfter in step with a CONFIG SET that redis
// accepted (busy-reply-threshold, or its old name lua-time-limit).
func (s *StateMachine) noteBusyThreshold(args [][]byte, reply []byte) {
	if !isConfigSet(args) || len(reply) == 0 || reply[0] != '+' {
		return
	}
	for i := 2; i+1 < len(args); i += 2 {
		name := strings.ToLower(string(args[i]))
		if name != "busy-reply-threshold" && name != "lua-time-limit" {
			continue
		}
		if ms, err := strconv.ParseInt(string(args[i+1]), 10, 64); err == nil && ms >= 0 {
			s.busyMs.Store(ms)
		}
	}
}

// learnBusyThreshold reads busy-reply-threshold from a new connection.
func (s *StateMachine) learnBusyThreshold(c *Conn) {
	v, err := c.DoValue("CONFIG", "GET", "busy-reply-threshold")
	if err != nil || len(v.Elems) != 2 {
		return
	}
	if ms, err := strconv.ParseInt(string(v.Elems[1].Str), 10, 64); err == nil && ms >= 0 {
		s.busyMs.Store(ms)
	}
}

// Kill implements fsm.Killer on a connection of its own: the apply
// connection is waiting for the script's reply. Redis reads the kill only
// once the script has run past its busy threshold, so this may wait that
// long.
func (s *StateMachine) Kill(ctx context.Context, kind uint8) (fsm.KillResult, error) {
	return StopScript(ctx, s.gate, s.addr, s.password, kind, s.BusyAfter()+5*time.Second, s.log)
}

// StopScript stops the script of kind (KillScript, KillFunction) the redis
// at addr (gated by gate, hibernate.go) runs: SCRIPT KILL or FUNCTION KILL, or SHUTDOWN NOSAVE when redis
// cannot kill it (it wrote, or came from a master). It gives up after wait.
func StopScript(ctx context.Context, gate *Hibernation, addr, password string, kind uint8, wait time.Duration, log *slog.Logger) (fsm.KillResult, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := gate.Dial(ctx, addr, password)
	if err != nil {
		return fsm.KillNotRunning, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	cmd := killCommand(kind)
	for range 2 {
		raw, err := c.Do([]byte(cmd), []byte("KILL"))
		if err != nil {
			return fsm.KillNotRunning, fmt.Errorf("%s KILL: %w", cmd, err)
		}
		switch {
		case bytes.HasPrefix(raw, []byte("+OK")):
			return fsm.KillClean, nil
		case bytes.HasPrefix(raw, []byte("-NOTBUSY")):
			return fsm.KillNotRunning, nil
		case bytes.HasPrefix(raw, []byte("-UNKILLABLE")):
			log.Warn("the script to kill had written (or came from the replication stream): shutting the local redis down to rebuild it without the script", "reply", strings.TrimSpace(string(raw[1:])))
			c.Write([][]byte{[]byte("SHUTDOWN"), []byte("NOSAVE")})
			c.Flush()
			c.ReadReply(nil) // redis closes the connection as it exits
			return fsm.KillUnclean, nil
		case bytes.HasPrefix(raw, []byte("-BUSY")):
			// A transaction's running script is of the other kind.
			cmd = otherKill(cmd)
			continue
		default:
			return fsm.KillNotRunning, fmt.Errorf("%s KILL: unexpected reply %q", cmd, raw)
		}
	}
	return fsm.KillNotRunning, nil
}

// StopStrayScript stops whatever script the redis at addr runs, for a
// caller about to replace its content (a node starting, or rebuilding it):
// SCRIPT KILL or FUNCTION KILL, else SHUTDOWN NOSAVE (redis then comes back
// empty, restarted by whatever manages it). A script may be left running
// by a raftproxy that was killed while it applied one.
func StopStrayScript(ctx context.Context, gate *Hibernation, addr, password string, log *slog.Logger) {
	for _, kind := range []uint8{KillScript, KillFunction} {
		res, err := StopScript(ctx, gate, addr, password, kind, 10*time.Second, log)
		if err == nil && res != fsm.KillNotRunning {
			log.Warn("stopped a script the local redis was running before raftproxy took it over", "how", map[fsm.KillResult]string{fsm.KillClean: "killed", fsm.KillUnclean: "shut down"}[res])
			return
		}
	}
}

func killCommand(kind uint8) string {
	if kind == KillFunction {
		return "FUNCTION"
	}
	return "SCRIPT"
}

func otherKill(cmd string) string {
	if cmd == "FUNCTION" {
		return "SCRIPT"
	}
	return "FUNCTION"
}
