package backend

import (
	"bytes"
	_ "embed"
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/expiry"
)

// Every script and function library that reaches the log runs behind a Lua
// prelude, so that it cannot make nodes diverge:
//
//   - It shadows the global redis with a local table whose call and pcall
//     refuse commands whose result is random or depends on the node's
//     internals (COMMAND INFO tip nondeterministic_output; XADD only with
//     an auto-generated ID), and sort the replies whose order depends on
//     each redis process's hash seed (tip nondeterministic_output_order), as
//     redis did for scripts before 5.0.
//   - It runs by the log's time, not redis's clock (see package expiry):
//     the applier appends the entry's time to ARGV (to a function's args),
//     the prelude takes it off, and call and pcall answer TIME with it, set
//     deadlines shifted from it (expiry.Rewrite's rules), answer TTL, PTTL,
//     EXPIRETIME and PEXPIRETIME by it, and leave out of KEYS the keys
//     expired by it.
//   - It shadows tostring, which shows table and function addresses.
//   - It reseeds math.random with 0 at every call: redis 7 does not (for
//     EVAL nor FCALL), so each node would draw different numbers.
//
// The prelude is one line placed in front of the user's first line (after
// a "#!" line if there is one), so redis's error line numbers stay the
// user's. It starts with preludeStart and ends with preludeEnd, which
// appear nowhere else in it, so it can be stripped again (registry shas,
// FUNCTION LIST WITHCODE) whatever the user's code contains, and replaced
// by the current one when an entry proposed by an older version applies.
const (
	preludeStart = "local redis, tostring = (function() "
	preludeEnd   = " end)() --[[raftproxy]] "
)

// preludeCore is the part shared by scripts and libraries. It looks the
// global redis up when called, not when built: a library is loaded with a
// restricted redis (no call, no setmetatable) and runs with the full one.
// The line has no comments: one would end it.
//
//go:embed lua/prelude_core.lua
var preludeCoreLua string

var preludeCore = strings.Replace(luaLine(preludeCoreLua), "local SH = SHIFT", "local SH = "+strconv.FormatInt(expiry.Shift, 10), 1)

// scriptPrelude is for EVAL: the script runs at once, with the full redis,
// and the last ARGV is the entry's time.
// Its file names PRELUDE_CORE where preludeCore goes.
//
//go:embed lua/prelude_script.lua
var scriptPreludeLua string

var scriptPrelude = preludeStart + strings.Replace(luaLine(scriptPreludeLua), "PRELUDE_CORE", preludeCore, 1) + preludeEnd

// libraryPrelude is for FUNCTION LOAD: while the library loads, only
// register_function, log and a few constants exist, so the table gets its
// metatable (and math its seed) when a registered function is called,
// which takes the entry's time off its args.
// Its file names PRELUDE_CORE where preludeCore goes.
//
//go:embed lua/prelude_library.lua
var libraryPreludeLua string

var libraryPrelude = preludeStart + strings.Replace(luaLine(libraryPreludeLua), "PRELUDE_CORE", preludeCore, 1) + preludeEnd

// luaLine joins a file's lines into the one line the prelude must be (see
// above): its code comes before the user's first line.
func luaLine(src string) string {
	return strings.Join(strings.Split(strings.TrimSuffix(src, "\n"), "\n"), " ")
}

// WrapScript returns an EVAL body with the prelude in front of its first
// line of code (after a "#!" shebang line, which redis requires first).
func WrapScript(body []byte) []byte { return wrap(body, scriptPrelude) }

// WrapLibrary returns FUNCTION LOAD code with the library prelude after its
// "#!lua name=..." line. Code without that line is left as it is: redis
// refuses it anyway.
func WrapLibrary(code []byte) []byte {
	if !bytes.HasPrefix(code, []byte("#!")) {
		return code
	}
	return wrap(code, libraryPrelude)
}

func wrap(code []byte, prelude string) []byte {
	head, rest := splitShebang(code)
	if len(head) > 0 && head[len(head)-1] != '\n' {
		return code
	}
	out := make([]byte, 0, len(code)+len(prelude))
	out = append(out, head...)
	out = append(out, prelude...)
	return append(out, rest...)
}

// splitShebang splits off a first line starting with "#!", newline included.
func splitShebang(code []byte) (head, rest []byte) {
	if !bytes.HasPrefix(code, []byte("#!")) {
		return nil, code
	}
	i := bytes.IndexByte(code, '\n')
	if i < 0 {
		// Only a shebang: no code to guard, and the prelude must not
		// become part of the shebang's flags.
		return code, nil
	}
	return code[:i+1], code[i+1:]
}

// Unwrap strips the prelude from a wrapped script or library; ok is false
// when code does not start with one (after its shebang line).
func Unwrap(code []byte) (orig []byte, ok bool) {
	head, rest := splitShebang(code)
	if !bytes.HasPrefix(rest, []byte(preludeStart)) {
		return code, false
	}
	i := bytes.Index(rest, []byte(preludeEnd))
	if i < 0 {
		return code, false
	}
	rest = rest[i+len(preludeEnd):]
	out := make([]byte, 0, len(head)+len(rest))
	return append(append(out, head...), rest...), true
}
