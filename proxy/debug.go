package proxy

import (
	"fmt"
	"strings"
)

// DEBUG subcommands that only observe are served; the rest would change or
// stop one node's redis outside the log (RELOAD, FLUSHALL-like POPULATE,
// SET-ACTIVE-EXPIRE, CRASH-AND-RECOVER...) and are refused. Redis still
// applies its own enable-debug-command setting to those it runs.
var debugClass = map[string]class{
	// About keys or the dataset: reads at a ReadIndex, like GET.
	"object": classRead, "sdslen": classRead, "ziplist": classRead, "listpack": classRead,
	"quicklist": classRead, "digest": classRead, "digest-value": classRead,
	"htstats": classRead, "htstats-key": classRead,
	// About nothing replicated.
	"help": classLocal, "log": classLocal, "protocol": classLocal, "stringmatch-len": classLocal,
	"sleep": classLocal,
}

const reasonDebug = "would change or stop this node's redis outside the raft log; only DEBUG OBJECT, SDSLEN, LISTPACK, ZIPLIST, QUICKLIST, DIGEST, DIGEST-VALUE, HTSTATS, HTSTATS-KEY, HELP, LOG, PROTOCOL, STRINGMATCH-LEN and SLEEP 0 are served"

// debug routes DEBUG by its subcommand.
func (c *conn) debug(args [][]byte) *op {
	sub := strings.ToLower(string(args[1]))
	cl, ok := debugClass[sub]
	// DEBUG SLEEP blocks the whole redis, the applier included: a long one
	// would make this node fall behind and rebuild its redis.
	if sub == "sleep" && (len(args) != 3 || string(args[2]) != "0") {
		ok = false
	}
	if !ok {
		return errReply(fmt.Sprintf("ERR 'DEBUG %.128s' %s", strings.ToUpper(sub), reasonDebug))
	}
	if cl == classLocal {
		return &op{kind: opLocal, args: args, db: c.db}
	}
	return c.data(&spec{name: "debug", class: classRead}, args)
}
