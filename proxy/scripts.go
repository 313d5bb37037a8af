package proxy

import (
	"bytes"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// ScriptRegistry finds the body of a script loaded through the log by its
// sha1 (backend.Scripts, kept by the applier).
type ScriptRegistry interface {
	Script(sha string) ([]byte, bool)
}

// fixer rewrites a command's raw reply before the client gets it.
type fixer func(raw []byte) []byte

const noScript = "NOSCRIPT No matching script. Please use EVAL."

// noScriptEval is queued in a transaction in place of an EVALSHA of an
// unknown script: like redis, EXEC then reports NOSCRIPT for that command.
var noScriptEval = []byte("return redis.error_reply('" + noScript + "')")

// withArg returns args with args[i] replaced, leaving the caller's slice
// (which may be queued elsewhere) alone.
func withArg(args [][]byte, i int, v []byte) [][]byte {
	out := append([][]byte(nil), args...)
	out[i] = v
	return out
}

// scriptBody finds a script by sha1. A script loaded through another node
// may be committed but not yet applied here: a read barrier (everything
// committed before it is applied once it is ready) settles that.
func (c *conn) scriptBody(sha []byte) ([]byte, *op) {
	if body, ok := c.lookupScript(sha); ok {
		return body, nil
	}
	if o := c.barrier(); o != nil {
		return nil, o
	}
	if body, ok := c.lookupScript(sha); ok {
		return body, nil
	}
	return nil, errReply(noScript)
}

func (c *conn) lookupScript(sha []byte) ([]byte, bool) {
	if c.s.cfg.Scripts == nil || len(sha) != 40 {
		return nil, false
	}
	return c.s.cfg.Scripts.Script(string(sha))
}

// barrier waits until this node has applied everything committed before
// now; it returns the error reply when it cannot.
func (c *conn) barrier() *op {
	n, refused := c.serving(nil, false)
	if refused != nil {
		return refused
	}
	deadline := time.Now().Add(c.s.timeout())
	// This connection's own writes come first (a pipelined SCRIPT LOAD then
	// EVALSHA): they may not be committed yet, so the barrier alone would
	// not cover them. Misses are rare, so polling is enough.
	for c.pendingWrites.Load() > 0 {
		if time.Now().After(deadline) {
			return errReply(errorText(raftnode.ErrTimeout, true))
		}
		time.Sleep(time.Millisecond)
	}
	rw := n.StartRead()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-rw.Ready():
	case <-t.C:
		return errReply(errorText(raftnode.ErrTimeout, true))
	}
	if err := rw.Err(); err != nil {
		return errReply(errorText(err, true))
	}
	return nil
}

// scriptExists answers SCRIPT EXISTS from the registry after a barrier:
// redis's own cache holds the wrapped bodies under other shas.
func (c *conn) scriptExists(shas [][]byte) *op {
	if o := c.barrier(); o != nil {
		return o
	}
	b := resp.AppendArrayLen(nil, len(shas))
	for _, sha := range shas {
		_, ok := c.lookupScript(sha)
		b = resp.AppendInt(b, map[bool]int64{false: 0, true: 1}[ok])
	}
	return &op{kind: opReply, reply: b}
}

// bulkFix replaces a bulk string reply (SCRIPT LOAD's sha1 of the wrapped
// body) with s (that of the client's body); errors pass unchanged.
func bulkFix(s string) fixer {
	return func(raw []byte) []byte {
		if len(raw) == 0 || raw[0] != '$' {
			return raw
		}
		return resp.AppendBulkString(nil, s)
	}
}

// unwrapFix strips the prelude from the library code in FUNCTION LIST
// WITHCODE, so clients see the code they loaded.
func unwrapFix(raw []byte) []byte {
	out, rest, ok := mapBulks(nil, raw, func(b []byte) []byte {
		if u, ok := backend.Unwrap(b); ok {
			return u
		}
		return b
	}, 0)
	if !ok || len(rest) != 0 {
		return raw
	}
	return out
}

// dumpFix strips the prelude from the libraries in FUNCTION DUMP's payload,
// so it restores into any redis as the code its client loaded.
func dumpFix(raw []byte) []byte {
	v, rest, err := resp.Parse(raw)
	if err != nil || len(rest) != 0 || v.Kind != '$' || v.Null {
		return raw
	}
	payload, err := backend.UnwrapFunctionPayload(v.Str)
	if err != nil {
		return raw
	}
	return resp.AppendBulk(nil, payload)
}

// mapBulks copies one RESP value from raw to dst with every bulk string
// passed through f. It returns the rest of raw, and false on anything it
// does not understand (the caller then keeps raw as it was).
func mapBulks(dst, raw []byte, f func([]byte) []byte, depth int) ([]byte, []byte, bool) {
	return rewriteBulks(dst, raw, func(dst, bulk []byte, null bool) []byte {
		if null {
			return append(dst, "$-1\r\n"...)
		}
		return resp.AppendBulk(dst, f(bulk))
	}, depth)
}

// rewriteBulks copies one RESP value from raw to dst, letting f append what
// replaces each bulk string (null says it is the null bulk). It returns the
// rest of raw, and false on anything it does not understand.
func rewriteBulks(dst, raw []byte, f func(dst, bulk []byte, null bool) []byte, depth int) ([]byte, []byte, bool) {
	i := bytes.Index(raw, []byte("\r\n"))
	if i < 1 || depth > 64 {
		return dst, raw, false
	}
	kind, line, rest := raw[0], raw[:i+2], raw[i+2:]
	n, err := strconv.Atoi(string(raw[1:i]))
	switch kind {
	case '$':
		if err == nil && n == -1 {
			return f(dst, nil, true), rest, true
		}
		if err != nil || n < 0 || len(rest) < n+2 {
			return dst, raw, false
		}
		return f(dst, rest[:n], false), rest[n+2:], true
	case '*', '~', '>', '%', '|':
		if err != nil {
			return dst, raw, false
		}
		dst = append(dst, line...)
		if kind == '%' || kind == '|' {
			n *= 2
		}
		for range max(n, 0) {
			var ok bool
			if dst, rest, ok = rewriteBulks(dst, rest, f, depth+1); !ok {
				return dst, raw, false
			}
		}
		return dst, rest, true
	case '=', '!':
		if err != nil || n < 0 || len(rest) < n+2 {
			return dst, raw, false
		}
		return append(dst, raw[:i+2+n+2]...), rest[n+2:], true
	}
	return append(dst, line...), rest, true
}

// txFix applies per-command fixers to the elements of EXEC's array reply.
func txFix(fixes map[int]fixer) fixer {
	// EXECABORT, or nil (nothing ran), is not an array: MapArray keeps it.
	return func(raw []byte) []byte {
		return resp.MapArray(raw, func(k int, elem []byte) []byte {
			if f := fixes[k]; f != nil {
				return f(elem)
			}
			return elem
		})
	}
}
