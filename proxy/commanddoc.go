package proxy

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// CommandDoc is one row of docs/COMMANDS.md: what raftproxy does with a
// command, taken from the same table that routes commands, so the document
// and the code cannot disagree.
type CommandDoc struct {
	Name     string // "get", "config|set"
	Group    string // redis's group: string, list, server ...
	Summary  string
	Behavior string // replicated write, linearizable read, ...
	Notes    string // raftproxy's rule for it, or why it is refused
}

// notes are the commands raftproxy changes or handles in a particular way,
// beyond their class. Keep them short; docs/SEMANTICS.md has the why.
var notes = map[string]string{
	"expire":                  "relative time counted from the entry's time (the leader's clock); keys expire by the log's time, never a node's clock",
	"pexpire":                 "relative time counted from the entry's time (the leader's clock)",
	"setex":                   "relative time counted from the entry's time (the leader's clock)",
	"psetex":                  "relative time counted from the entry's time (the leader's clock)",
	"set":                     "EX/PX counted from the entry's time (the leader's clock)",
	"getex":                   "EX/PX counted from the entry's time (the leader's clock)",
	"restore":                 "a relative TTL is counted from the entry's time (the leader's clock)",
	"ttl":                     "by the read's time (the leader's clock when it confirmed the read index), the same through every node",
	"pttl":                    "by the read's time, the same through every node",
	"expiretime":              "the deadline the log set",
	"pexpiretime":             "the deadline the log set",
	"keys":                    "without the keys expired by the read's time",
	"scan":                    "without the keys expired by the read's time",
	"randomkey":               "a key not expired by the read's time",
	"cluster|countkeysinslot": "a linearizable read of this shard's keys (KEYS *): O(keys in the shard), not O(1)",
	"cluster|getkeysinslot":   "a linearizable read of this shard's keys (KEYS *): O(keys in the shard), not O(log n)",
	"flushall":                "ASYNC refused (would free memory in the background, unevenly between nodes); SYNC and no option work",
	"flushdb":                 "ASYNC refused (would free memory in the background, unevenly between nodes); SYNC and no option work",
	"multi":                   "queued by the proxy; EXEC proposes the whole transaction as one log entry",
	"exec":                    "one log entry, run between MULTI and EXEC on every node",
	"discard":                 "",
	"watch":                   "through the log: every node's applier tracks the watched keys and aborts EXEC identically",
	"unwatch":                 "",
	"select":                  "per connection; each request carries its database",
	"ping":                    "",
	"echo":                    "",
	"quit":                    "",
	"eval":                    "killable: past busy-reply-threshold the node answers -BUSY; SCRIPT KILL on any node kills it on every node through the log",
	"eval_ro":                 "through the log like EVAL (a script may run for ever on every node's redis); killable",
	"evalsha":                 "turned into EVAL of the body the log registered; killable",
	"evalsha_ro":              "turned into EVAL_RO of the body the log registered; through the log; killable",
	"fcall":                   "killable: past busy-reply-threshold the node answers -BUSY; FUNCTION KILL on any node kills it on every node through the log",
	"fcall_ro":                "through the log like FCALL; killable",
	"script|kill":             "kills the running script on every node through the log (one that wrote too: those redis-servers are restarted and rebuilt without it)",
	"function|kill":           "kills the running function on every node through the log, as SCRIPT KILL",
	"function|dump":           "the payload's libraries without raftproxy's prelude: it restores into any redis as the code loaded",
	"function|restore":        "through the log, each library of the payload put under raftproxy's prelude (as FUNCTION LOAD)",
	"config|set":              "safe parameters through the log (maxmemory too, enforced through the log); any other one set to the value the local redis has (save \"\", appendonly no) is accepted and changes nothing",
	"config|get":              "the local redis's values, maxmemory the log's",
	"monitor":                 "the commands this node's clients send, as they arrive, with their own arguments",
	"client|pause":            "cluster-wide, through the log: every node holds its clients' writes (or all commands) until the end, counted from the proposal",
	"client|unpause":          "cluster-wide, through the log",
	"slowlog|get":             "the commands clients sent to this node, timed from arrival to reply, with their own arguments",
	"latency|histogram":       "latencies of the commands clients sent to this node, from arrival to reply",
	"latency|latest":          "command and fast-command events of the commands clients sent to this node",
	"client|tracking":         "kept by this node's proxy: every write applied here, whichever node proposed it, invalidates; RESP3 push or REDIRECT, BCAST, PREFIX, OPTIN, OPTOUT, NOLOOP",
	"client|caching":          "",
	"acl|setuser":             "through the log: users are replicated, kept in every node's redis (as raftproxy:<name>) and in snapshots",
	"acl|deluser":             "through the log; the user's connections are closed",
	"acl|getuser":             "linearizable read of the replicated users",
	"acl|list":                "linearizable read of the replicated users",
	"acl|users":               "linearizable read of the replicated users",
	"acl|dryrun":              "linearizable read of the replicated users",
	"acl|whoami":              "the connection's user",
	"auth":                    "checked against the replicated users (after a read barrier); permissions enforced by the proxy with redis's -NOPERM texts",
	"spop":                    "rewritten at proposal into a script seeded from the log (sorted members, seeded shuffle)",
	"xadd":                    "`*` rewritten at proposal into a script: ID `max(proposal ms, last ms)-*`",
	"xreadgroup":              "a script stamps deliveries with the proposal time (XCLAIM ... TIME JUSTID); BLOCK waits at the proxy, each attempt through the log with a fresh proposal time",
	"xread":                   "BLOCK waits at the proxy: `$` resolved through the log when it arrives, then each attempt is a one-command transaction through the log",
	"xclaim":                  "rewritten into a script: min-idle-time checked at the proposal time, IDLE/TIME made absolute",
	"xautoclaim":              "rewritten into a script: the PEL scan with min-idle-time checked at the proposal time",
	"raft.cluster":            "INIT / JOIN addr... [CLUSTER id]",
	"raft.node":               "ADD / REMOVE / UPDATE members",
	"raft.info":               "the node's raft state",
	"raft.shard":              "LIST: the shards, their slots, members, leaders and moves; MOVE-SLOTS first last shard-id: move slots live; CANCEL-MOVE id: move them back; ADD [node-id ...]: a new empty shard, on every node or on those named; REMOVE id: an empty shard",
	"raft.config":             "GET / SET / RESET runtime settings",
	"raft.debug":              "COMPACT: snapshot now",
	"raft.backup":             "a consistent snapshot: [index, term, sha256, cluster id, RDB]",
	"raft.transfer_leader":    "hand leadership to a member (or the most up-to-date one)",
	"blpop":                   "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"brpop":                   "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"brpoplpush":              "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"blmove":                  "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"blmpop":                  "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"bzpopmin":                "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"bzpopmax":                "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"bzmpop":                  "waits at the proxy; each attempt is a one-command transaction through the log, retried when a write to its keys is applied here",
	"client|unblock":          "unblocks a connection of this node waiting in a blocking command",
	"subscribe":               "subscriptions are held by this node's proxy; messages as redis (RESP2 subscribed mode, RESP3 push)",
	"psubscribe":              "held by this node's proxy; patterns matched as redis's stringmatch",
	"ssubscribe":              "held by this node's proxy",
	"unsubscribe":             "",
	"punsubscribe":            "",
	"sunsubscribe":            "",
	"publish":                 "through the log; every node delivers it to its own subscribers; replies this node's count (as redis cluster)",
	"spublish":                "through the log; every node delivers it to its own subscribers; replies this node's count",
	"pubsub|channels":         "this node's subscriptions (as redis cluster)",
	"pubsub|numsub":           "this node's subscriptions (as redis cluster)",
	"pubsub|numpat":           "this node's subscriptions (as redis cluster)",
	"pubsub|shardchannels":    "this node's subscriptions",
	"pubsub|shardnumsub":      "this node's subscriptions",
}

func (c class) behavior() string {
	switch c {
	case classWrite:
		return "replicated write"
	case classRead:
		return "linearizable read"
	case classLocal:
		return "local redis"
	case classProxy:
		return "answered by raftproxy"
	case classRefused:
		return "refused"
	}
	return "unknown"
}

// DescribeCommands lists every command and subcommand of the local redis
// (its COMMAND and COMMAND DOCS replies) and raftproxy's own, with what
// raftproxy does with each.
func DescribeCommands(commandReply, docsReply resp.Value) ([]CommandDoc, error) {
	t, err := buildTable(commandReply)
	if err != nil {
		return nil, err
	}
	docs := map[string][2]string{} // name -> group, summary
	readDocs(docsReply, docs)
	var out []CommandDoc
	add := func(s *spec) {
		d := docs[s.name]
		row := CommandDoc{Name: s.name, Group: d[0], Summary: d[1], Behavior: s.class.behavior(), Notes: notes[s.name]}
		if strings.HasPrefix(s.name, "raft.") {
			row.Group = "raftproxy"
		}
		if s.class == classRefused {
			row.Notes = s.reason
		}
		out = append(out, row)
	}
	for _, s := range t {
		if s.subs == nil || s.arity == -1 && s.name == "command" {
			add(s)
		}
		for _, sub := range s.subs {
			add(sub)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// readDocs reads COMMAND DOCS's flat name/doc pairs, subcommands included.
func readDocs(v resp.Value, into map[string][2]string) {
	for i := 0; i+1 < len(v.Elems); i += 2 {
		name := strings.ToLower(string(v.Elems[i].Str))
		var group, summary string
		d := v.Elems[i+1]
		for j := 0; j+1 < len(d.Elems); j += 2 {
			switch string(d.Elems[j].Str) {
			case "group":
				group = string(d.Elems[j+1].Str)
			case "summary":
				summary = string(d.Elems[j+1].Str)
			case "subcommands":
				readDocs(d.Elems[j+1], into)
			}
		}
		into[name] = [2]string{group, summary}
	}
}

// WriteCommandsMarkdown writes docs/COMMANDS.md.
func WriteCommandsMarkdown(w io.Writer, rows []CommandDoc, redisVersion string) error {
	count := map[string]int{}
	for _, r := range rows {
		count[r.Behavior]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Commands\n\n")
	fmt.Fprintf(&b, "Generated by `make docs` (`go run ./cmd/commanddoc`) from raftproxy's command table, built from\n")
	fmt.Fprintf(&b, "redis-server %s's `COMMAND` and `COMMAND DOCS` with raftproxy's own rules. Do not edit by hand.\n\n", redisVersion)
	fmt.Fprintf(&b, "| behaviour | meaning | commands |\n|---|---|---|\n")
	for _, c := range []struct{ name, meaning string }{
		{"replicated write", "proposed to the raft log; runs on every node's redis in log order; the reply comes once a majority has it on disk and this node applied it"},
		{"linearizable read", "runs on this node's redis once it has applied everything committed when the read arrived (ReadIndex); no log entry"},
		{"local redis", "runs on this node's redis only; touches no data"},
		{"answered by raftproxy", "the proxy answers it itself"},
		{"refused", "never runs; the error names the reason"},
	} {
		fmt.Fprintf(&b, "| %s | %s | %d |\n", c.name, c.meaning, count[c.name])
	}
	fmt.Fprintf(&b, "\nCommands redis does not list (a module's) are replicated writes; inside MULTI they are refused.\n")
	group := ""
	for _, r := range rows {
		if r.Group != group {
			group = r.Group
			fmt.Fprintf(&b, "\n## %s\n\n| command | behaviour | notes | summary |\n|---|---|---|---|\n", groupTitle(group))
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", displayName(r.Name), r.Behavior, mdCell(r.Notes), mdCell(r.Summary))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func groupTitle(g string) string {
	if g == "" {
		return "other"
	}
	return g
}

func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
