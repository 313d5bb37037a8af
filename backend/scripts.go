package backend

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"slices"
	"strings"
	"sync"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// Scripts is the registry of script bodies (sha1 → body) that the log has
// loaded: every applied SCRIPT LOAD and EVAL adds its body, SCRIPT FLUSH
// empties it. The proxy turns EVALSHA into EVAL with the body from here,
// because redis's own script cache is not in the RDB and a rebuilt node's
// redis would not have it: the log never holds an EVALSHA. It depends only
// on the log, so it is the same on every node at the same index, and it
// travels in snapshots (see MachineState).
//
// Bodies are kept unwrapped (without the prelude) and keyed by the sha1 the
// client knows, which is that of the unwrapped body.
type Scripts struct {
	mu     sync.RWMutex
	bodies map[string][]byte
}

// NewScripts returns an empty registry.
func NewScripts() *Scripts { return &Scripts{bodies: map[string][]byte{}} }

// ScriptSHA is the sha1 redis names a script by, in lower-case hex.
func ScriptSHA(body []byte) string {
	h := sha1.Sum(body)
	return hex.EncodeToString(h[:])
}

// Script returns the body whose sha1 is sha (any case).
func (r *Scripts) Script(sha string) ([]byte, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b, ok := r.bodies[strings.ToLower(sha)]
	return b, ok
}

func (r *Scripts) add(body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies[ScriptSHA(body)] = body
}

func (r *Scripts) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.bodies)
}

// list returns the bodies in sha order, so a snapshot's state is the same
// bytes on every node.
func (r *Scripts) list() [][]byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	shas := make([]string, 0, len(r.bodies))
	for sha := range r.bodies {
		shas = append(shas, sha)
	}
	slices.Sort(shas)
	out := make([][]byte, len(shas))
	for i, sha := range shas {
		out[i] = r.bodies[sha]
	}
	return out
}

func (r *Scripts) restore(bodies [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.bodies)
	for _, b := range bodies {
		r.bodies[ScriptSHA(b)] = b
	}
}

// observe records what an applied command does to the registry, given its
// raw reply (EXEC's for a transaction).
func (r *Scripts) observe(c fsm.Command, reply []byte) {
	if len(c.Tx) == 0 {
		if scriptCommand(c.Args) {
			var errText []byte
			if len(reply) > 0 && reply[0] == '-' {
				errText = reply[1:]
			}
			r.observeOne(c.Args, errText)
		}
		return
	}
	if !slices.ContainsFunc(c.Tx, scriptCommand) {
		return
	}
	v, _, err := resp.Parse(reply)
	if err != nil || v.Kind != '*' || len(v.Elems) != len(c.Tx) {
		return // EXECABORT or a discarded transaction: nothing ran
	}
	for i, args := range c.Tx {
		if !scriptCommand(args) {
			continue
		}
		var errText []byte
		if v.Elems[i].IsError() {
			errText = v.Elems[i].Str
			if errText == nil {
				errText = []byte{}
			}
		}
		r.observeOne(args, errText)
	}
}

func scriptCommand(args [][]byte) bool {
	return len(args) >= 2 && (bytes.EqualFold(args[0], []byte("eval")) || bytes.EqualFold(args[0], []byte("script")))
}

// observeOne applies one command; errText is nil when it succeeded. As in
// redis, a script that does not compile is not cached, and one that fails
// while running is.
func (r *Scripts) observeOne(args [][]byte, errText []byte) {
	switch {
	case bytes.EqualFold(args[0], []byte("eval")):
		// A killed script never ran, as far as the log is concerned.
		if bytes.HasPrefix(errText, []byte("ERR Error compiling script")) || bytes.HasPrefix(errText, killedPrefix) {
			return
		}
		// Only scripts the proxy wrapped are the clients'; its own (SPOP)
		// are not named by any client.
		if body, ok := Unwrap(args[1]); ok {
			r.add(body)
		}
	case errText != nil:
	case bytes.EqualFold(args[1], []byte("load")) && len(args) == 3:
		if body, ok := Unwrap(args[2]); ok {
			r.add(body)
		}
	case bytes.EqualFold(args[1], []byte("flush")):
		r.flush()
	}
}
