package proxy

import (
	"bytes"

	"github.com/raftproxy/raftproxy/backend"
)

// Determinism at proposal: every command whose effect would differ from
// node to node (a random pick, the clock, a script's text) is rewritten
// here, before it enters the log, into a form every node runs alike (see
// "Determinism" in docs/SEMANTICS.md). The rewrites made at apply, which
// need the log's time, are backend's (backend/expiry.go prepare); the
// commands that cannot be made deterministic are refused by the table.

// rewriter returns the form of a data command that may enter the log or
// run here, the fixer its reply needs, or a reply of its own (o) when it
// must not run; it may name another spec (EVALSHA becomes EVAL). inTx: the
// command is being queued in MULTI.
type rewriter func(c *conn, sp *spec, args [][]byte, inTx bool) (_ *spec, _ [][]byte, fix fixer, o *op)

// rewrites are read only, and each spec of the table carries its own
// (buildTable).
var rewrites = map[string]rewriter{
	"spop": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		return sp, rewriteSpop(args), nil, nil
	},
	"xadd":       rewriteStream,
	"xread":      rewriteStream,
	"xreadgroup": rewriteStream,
	"xclaim":     rewriteStream,
	"xautoclaim": rewriteStream,
	// Read-only scripts get the prelude too: it answers TIME and the TTL
	// family by the log's time and hides expired keys.
	"eval":       rewriteEval,
	"eval_ro":    rewriteEval,
	"evalsha":    (*conn).rewriteEvalSHA,
	"evalsha_ro": (*conn).rewriteEvalSHA,
	"script|load": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		sha := backend.ScriptSHA(args[2])
		return sp, withArg(args, 2, backend.WrapScript(args[2])), bulkFix(sha), nil
	},
	"script|exists": func(c *conn, sp *spec, args [][]byte, inTx bool) (*spec, [][]byte, fixer, *op) {
		if inTx {
			return sp, args, nil, errReply("ERR 'SCRIPT EXISTS' is not supported inside MULTI by raftproxy")
		}
		return sp, args, nil, c.scriptExists(args[2:])
	},
	"function|load": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		return sp, withArg(args, len(args)-1, backend.WrapLibrary(args[len(args)-1])), nil, nil
	},
	"function|list": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		return sp, args, unwrapFix, nil
	},
	"function|restore": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		payload, err := backend.WrapFunctionPayload(args[2])
		if err != nil {
			return sp, args, nil, errReply("ERR payload version or checksum are wrong")
		}
		return sp, withArg(args, 2, payload), nil, nil
	},
	"function|dump": func(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
		return sp, args, dumpFix, nil
	},
}

// determinize applies sp's rewrite, if it has one.
func (c *conn) determinize(sp *spec, args [][]byte, inTx bool) (*spec, [][]byte, fixer, *op) {
	if sp.rewrite == nil {
		return sp, args, nil, nil
	}
	return sp.rewrite(c, sp, args, inTx)
}

func rewriteStream(c *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
	args, fix, o := determinizeStream(sp.name, args, streamNow(), c.client.resp3)
	return sp, args, fix, o
}

func rewriteEval(_ *conn, sp *spec, args [][]byte, _ bool) (*spec, [][]byte, fixer, *op) {
	return sp, withArg(args, 1, backend.WrapScript(args[1])), nil, nil
}

// rewriteEvalSHA turns EVALSHA into EVAL of the script's wrapped body: the
// log carries scripts, not digests a node may not know.
func (c *conn) rewriteEvalSHA(sp *spec, args [][]byte, inTx bool) (*spec, [][]byte, fixer, *op) {
	body, o := c.scriptBody(args[1])
	if o != nil {
		if !inTx || o.reply == nil || !bytes.HasPrefix(o.reply, []byte("-NOSCRIPT")) {
			return sp, args, nil, o
		}
		// Queued, EVALSHA fails at EXEC, not at queueing.
		return c.s.table["eval"], [][]byte{[]byte("EVAL"), noScriptEval, []byte("0")}, nil, nil
	}
	if sp.name == "evalsha_ro" {
		return c.s.table["eval_ro"], withArg(withArg(args, 0, []byte("EVAL_RO")), 1, backend.WrapScript(body)), nil, nil
	}
	return c.s.table["eval"], withArg(withArg(args, 0, []byte("EVAL")), 1, backend.WrapScript(body)), nil, nil
}
