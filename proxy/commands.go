package proxy

import (
	"fmt"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// class is what the proxy does with a command.
type class uint8

const (
	classWrite   class = iota + 1 // proposed to raft, applied on every node
	classRead                     // linearizable read (ReadIndex), run on the local redis
	classLocal                    // run on the local redis only; touches no data
	classProxy                    // answered by the proxy itself
	classRefused                  // never run; reason says why
)

func (c class) String() string {
	switch c {
	case classWrite:
		return "write"
	case classRead:
		return "read"
	case classLocal:
		return "local"
	case classProxy:
		return "proxy"
	case classRefused:
		return "refused"
	}
	return "unknown"
}

// spec is one command (or subcommand) of the table.
type spec struct {
	name   string // lower case; subcommands as "config|get"
	arity  int    // Redis's: n exact, -n at least n (counting the name)
	class  class
	reason string // why it is refused
	subs   map[string]*spec
	// random marks a write whose effect is random (e.g. SPOP): every node
	// would pick differently.
	random bool
	// keySpecs say where the command's keys are (redis 7 key specs).
	keySpecs []keySpec
	// unknown marks a command the local redis does not list (a module's, or
	// a typo): it is proposed as a write and every node's redis answers it.
	unknown bool
	// blocking marks a blocking command raftproxy serves (blocking.go).
	blocking bool
	// allowBusy marks a command redis runs while a script is busy (its
	// allow_busy flag); raftproxy's own commands run then too.
	allowBusy bool
	// fast is redis's fast flag (LATENCY's fast-command event);
	// skipSlowlog and skipMonitor keep the command out of SLOWLOG and
	// MONITOR, as redis's skip_slowlog and skip_monitor flags do.
	fast, skipSlowlog, skipMonitor bool
	// pausedByWrite: CLIENT PAUSE WRITE holds it (redis's write or
	// may_replicate flag); allowPaused: no pause holds it (RAFT.*).
	pausedByWrite, allowPaused bool
	// handle answers a command the proxy serves itself (handlers.go);
	// rewrite makes a data command deterministic (determinism.go).
	handle  handler
	rewrite rewriter
	// noAuth is redis's no_auth flag: no ACL check (AUTH, HELLO...).
	noAuth bool
	// denyOOM is redis's denyoom flag: refused over maxmemory.
	denyOOM bool
}

// table classifies every command the local redis knows, plus raftproxy's.
type table map[string]*spec

// Reasons given to clients; each names why the command cannot run here.
const (
	reasonDiverge     = "would change one node's redis outside the raft log and make nodes diverge"
	reasonReplicas    = "raftproxy manages replication through raft; redis replication would bypass it"
	reasonAdmin       = "is an administrative command of the local redis-server and is not available through raftproxy"
	reasonRandom      = "has a random effect that would differ between nodes"
	reasonNotYet      = "is not supported by raftproxy yet"
	reasonBlocking    = "blocks, and blocking commands are not supported by raftproxy yet"
	reasonACLFile     = "reads or writes the local redis's ACL file; raftproxy's users are replicated through the log and travel in snapshots"
	reasonShutdown    = "would stop one node's redis-server; stop the node with SIGTERM (it stops a redis-server it supervises), and kill a busy script with SCRIPT KILL or FUNCTION KILL"
	reasonSave        = "writes the local redis's own RDB or AOF: raftproxy makes the snapshots itself (RAFT.DEBUG COMPACT), and RAFT.BACKUP or raftproxy backup makes a consistent backup"
	reasonModule      = "would change one node's redis alone: load modules into every node's redis-server through its configuration (loadmodule), the same on all"
	reasonScriptDebug = "would debug a script on one node's redis while every node runs it from the log: debug scripts on a stock redis-server (redis-cli --ldb)"
)

// overrides are raftproxy's own rules, applied after redis's flags.
var overrides = map[string]struct {
	class  class
	reason string
}{
	"ping": {classProxy, ""}, "echo": {classProxy, ""}, "quit": {classProxy, ""},
	"hello": {classProxy, ""}, "select": {classProxy, ""}, "reset": {classProxy, ""}, "auth": {classProxy, ""},
	"command": {classLocal, ""}, "time": {classLocal, ""},
	"info": {classProxy, ""}, "role": {classProxy, ""}, // info.go

	"config|set": {classProxy, ""}, "config|rewrite": {classRefused, reasonConfigRewrite}, // config.go
	"config|resetstat": {classProxy, ""}, "config|get": {classLocal, ""}, "config|help": {classLocal, ""},
	"debug": {classProxy, ""}, "shutdown": {classRefused, reasonShutdown}, // debug.go
	"save": {classRefused, reasonSave}, "bgsave": {classRefused, reasonSave},
	"bgrewriteaof": {classRefused, reasonSave}, "module": {classRefused, reasonModule},
	"module|list": {classLocal, ""}, "module|help": {classLocal, ""},
	"monitor":   {classProxy, ""}, // monitor.go
	"replicaof": {classRefused, reasonReplicas}, "slaveof": {classRefused, reasonReplicas},
	"sync": {classRefused, reasonReplicas}, "psync": {classRefused, reasonReplicas},
	"failover": {classRefused, reasonReplicas}, "replconf": {classRefused, reasonReplicas},
	"wait": {classProxy, ""}, "waitaof": {classProxy, ""}, // wait.go
	"cluster": {classProxy, ""}, "readonly": {classProxy, ""}, "readwrite": {classProxy, ""}, "asking": {classProxy, ""}, // cluster.go

	// CLIENT is about the client's connection to the proxy (proxy/client.go).
	"client|id": {classProxy, ""}, "client|info": {classProxy, ""}, "client|list": {classProxy, ""},
	"client|setname": {classProxy, ""}, "client|getname": {classProxy, ""}, "client|setinfo": {classProxy, ""},
	"client|kill": {classProxy, ""}, "client|reply": {classProxy, ""}, "client|no-evict": {classProxy, ""},
	"client|no-touch": {classProxy, ""}, "client|getredir": {classProxy, ""}, "client|trackinginfo": {classProxy, ""},
	"client|unblock": {classProxy, ""}, "client|help": {classLocal, ""},
	"client|pause": {classProxy, ""}, "client|unpause": {classProxy, ""}, // pause.go
	"client|tracking": {classProxy, ""}, "client|caching": {classProxy, ""}, // tracking.go
	// ACL users: acl.go (the proxy's), the rest on the local redis.
	"acl|setuser": {classProxy, ""}, "acl|deluser": {classProxy, ""}, "acl|getuser": {classProxy, ""},
	"acl|list": {classProxy, ""}, "acl|users": {classProxy, ""}, "acl|whoami": {classProxy, ""}, "acl|dryrun": {classProxy, ""},
	"acl|cat": {classLocal, ""}, "acl|genpass": {classLocal, ""}, "acl|help": {classLocal, ""}, "acl|log": {classLocal, ""},
	"acl|load": {classRefused, reasonACLFile}, "acl|save": {classRefused, reasonACLFile},
	// Statistics in clients' terms (cmdstats.go, slowlog.go).
	"slowlog|get": {classProxy, ""}, "slowlog|len": {classProxy, ""}, "slowlog|reset": {classProxy, ""},
	"latency": {classProxy, ""}, "latency|help": {classLocal, ""}, "memory|doctor": {classLocal, ""}, "memory|stats": {classLocal, ""},
	"memory|malloc-stats": {classLocal, ""}, "memory|purge": {classLocal, ""},

	"multi": {classProxy, ""}, "exec": {classProxy, ""}, "discard": {classProxy, ""},
	"watch": {classProxy, ""}, "unwatch": {classProxy, ""},

	// Scripts, functions and random writes: see scripts.go and random.go.
	"eval": {classWrite, ""}, "evalsha": {classWrite, ""}, "fcall": {classWrite, ""},
	// Read-only scripts run through the log too: a script may run for ever,
	// and one that ran on a node's redis by itself would make the commands
	// the node applies meanwhile fail with -BUSY there only (killing.go).
	"eval_ro": {classWrite, ""}, "evalsha_ro": {classWrite, ""}, "fcall_ro": {classWrite, ""},
	"script|load": {classWrite, ""}, "script|flush": {classWrite, ""}, "script|exists": {classRead, ""},
	"script|kill": {classProxy, ""}, "script|debug": {classRefused, reasonScriptDebug}, "script|help": {classLocal, ""},
	"function|load": {classWrite, ""}, "function|delete": {classWrite, ""}, "function|flush": {classWrite, ""},
	"function|restore": {classWrite, ""},
	"function|list":    {classRead, ""}, "function|dump": {classRead, ""}, "function|stats": {classLocal, ""},
	"function|kill": {classProxy, ""}, "function|help": {classLocal, ""},
	"spop": {classWrite, ""}, "xadd": {classWrite, ""}, "xtrim": {classWrite, ""},
	// Streams: see streams.go. With BLOCK they block (dispatch, streamBlock).
	"xclaim": {classWrite, ""}, "xautoclaim": {classWrite, ""},
	"xreadgroup": {classWrite, ""}, "xread": {classRead, ""},
	"migrate":    {classRefused, "moves keys to another redis-server outside the raft log"},
	"pfselftest": {classLocal, ""}, // tests the local redis's HyperLogLog code; no key

	// Pub/Sub (pubsub.go, broker.go): subscriptions are the proxy's, PUBLISH
	// goes through the log and each node's applier delivers it locally.
	"subscribe": {classProxy, ""}, "psubscribe": {classProxy, ""},
	"ssubscribe": {classProxy, ""}, "unsubscribe": {classProxy, ""},
	"punsubscribe": {classProxy, ""}, "sunsubscribe": {classProxy, ""},
	"publish": {classWrite, ""}, "spublish": {classWrite, ""},
	"pubsub": {classProxy, ""}, "pubsub|help": {classLocal, ""},
}

// raftCommands are raftproxy's own commands, with Redis-style arity. They
// run while the node is busy: an operator must see and manage it then.
var raftCommands = []*spec{
	{name: "raft.cluster", arity: -2, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.node", arity: -3, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.info", arity: 1, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.debug", arity: -2, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.transfer_leader", arity: -1, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.config", arity: -2, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.backup", arity: 1, class: classProxy, allowBusy: true, allowPaused: true},
	{name: "raft.shard", arity: -2, class: classProxy, allowBusy: true, allowPaused: true},
}

// buildTable classifies the reply of COMMAND from the local redis.
func buildTable(commandReply resp.Value) (table, error) {
	if commandReply.Kind != '*' {
		return nil, fmt.Errorf("COMMAND reply is not an array: %q", commandReply.Kind)
	}
	t := table{}
	for _, c := range commandReply.Elems {
		s, err := parseSpec(c, "")
		if err != nil {
			return nil, err
		}
		t[s.name] = s
	}
	for _, s := range raftCommands {
		cp := *s
		t[s.name] = &cp
	}
	addClientSubcommands(t)
	addClusterSubs(t)
	addWaitAOF(t)
	for _, s := range t {
		for _, sp := range append([]*spec{s}, subSpecs(s)...) {
			if sp.class == classProxy {
				sp.handle = handlerFor(sp.name)
			}
			sp.rewrite = rewrites[sp.name]
		}
	}
	return t, nil
}

func parseSpec(v resp.Value, parent string) (*spec, error) {
	if v.Kind != '*' || len(v.Elems) < 3 {
		return nil, fmt.Errorf("malformed COMMAND entry under %q", parent)
	}
	s := &spec{name: strings.ToLower(string(v.Elems[0].Str)), arity: int(v.Elems[1].Int)}
	var write, readonly, admin, blocking, pubsub, random, mayReplicate bool
	for _, f := range v.Elems[2].Elems {
		switch string(f.Str) {
		case "write":
			write = true
		case "readonly":
			readonly = true
		case "admin":
			admin = true
		case "blocking":
			blocking = true
		case "pubsub":
			pubsub = true
		case "allow_busy":
			s.allowBusy = true
		case "fast":
			s.fast = true
		case "skip_slowlog":
			s.skipSlowlog = true
		case "skip_monitor":
			s.skipMonitor = true
		case "may_replicate":
			mayReplicate = true
		case "no_auth":
			s.noAuth = true
		case "denyoom":
			s.denyOOM = true
		}
	}
	if len(v.Elems) > 7 {
		for _, tip := range v.Elems[7].Elems {
			if string(tip.Str) == "nondeterministic_output" {
				random = true
			}
		}
	}
	if len(v.Elems) > 8 {
		s.keySpecs = parseKeySpecs(v.Elems[8])
	}
	// A command redis flags readonly may still rewrite a key's encoding
	// (PFCOUNT caches the cardinality in the HyperLogLog), which its key
	// specs say (RW): run on one node only, it would make that node's data
	// differ, so it goes through the log.
	for _, ks := range s.keySpecs {
		if readonly && ks.write {
			write = true
		}
	}
	s.pausedByWrite = write || mayReplicate
	_, served := blockingCommands[s.name]
	switch {
	case blocking && served:
		s.class, s.blocking = classWrite, true
	case blocking:
		s.class, s.reason = classRefused, reasonBlocking
	case pubsub:
		// Every pub/sub command has its override; a new one is refused.
		s.class, s.reason = classRefused, reasonNotYet
	case write && random:
		s.class, s.reason, s.random = classRefused, reasonRandom, true
	case write:
		s.class = classWrite
	case readonly:
		s.class = classRead
	case admin:
		s.class, s.reason = classRefused, reasonAdmin
	default:
		s.class = classLocal
	}
	// An override of the parent applies to its subcommands unless they
	// have their own.
	if o, ok := overrides[parent]; ok && parent != "" {
		s.class, s.reason = o.class, o.reason
	}
	if o, ok := overrides[s.name]; ok {
		s.class, s.reason = o.class, o.reason
	}
	if len(v.Elems) > 9 && len(v.Elems[9].Elems) > 0 {
		s.subs = map[string]*spec{}
		for _, sv := range v.Elems[9].Elems {
			sub, err := parseSpec(sv, s.name)
			if err != nil {
				return nil, err
			}
			_, name, _ := strings.Cut(sub.name, "|")
			s.subs[name] = sub
		}
	}
	return s, nil
}

// lookup finds the spec for args, or returns the Redis error text. A
// command the local redis does not know is a write (see spec.unknown): a
// module loaded into every node's redis works through raftproxy, and for a
// typo every node's redis gives its own error.
func (t table) lookup(args [][]byte) (*spec, string) {
	var buf [32]byte
	s, ok := t[string(lowerKey(args[0], buf[:0]))]
	if !ok {
		return &spec{name: strings.ToLower(string(args[0])), arity: -1, class: classWrite, unknown: true, pausedByWrite: true}, ""
	}
	// A container command alone (COMMAND) is valid when its own arity
	// allows it; otherwise a subcommand is needed.
	if s.subs != nil && !(len(args) == 1 && s.arity == -1) {
		if len(args) < 2 {
			return nil, fmt.Sprintf("ERR wrong number of arguments for '%s' command", s.name)
		}
		sub, ok := s.subs[string(lowerKey(args[1], buf[:0]))]
		if !ok {
			return nil, fmt.Sprintf("ERR unknown subcommand '%.128s'. Try %s HELP.", args[1], strings.ToUpper(s.name))
		}
		s = sub
	}
	if (s.arity > 0 && len(args) != s.arity) || (s.arity < 0 && len(args) < -s.arity) {
		return nil, fmt.Sprintf("ERR wrong number of arguments for '%s' command", s.name)
	}
	return s, ""
}

// unknownCommand is redis-server's text for a command it does not know.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ERR unknown command '%.128s', with args beginning with: ", args[0])
	for _, a := range args[1:] {
		if b.Len() > 128+64 {
			break
		}
		fmt.Fprintf(&b, "'%.128s' ", a)
	}
	return b.String()
}

// lowerKey returns name in lower case as a map key. Map lookups with
// string(bytes) do not allocate, so with a stack buffer finding a command
// costs no allocation per command.
func lowerKey(name, buf []byte) []byte {
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf
}

func subSpecs(s *spec) []*spec {
	out := make([]*spec, 0, len(s.subs))
	for _, sub := range s.subs {
		out = append(out, sub)
	}
	return out
}
