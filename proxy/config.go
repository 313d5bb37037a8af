package proxy

import (
	"fmt"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// CONFIG SET goes through the raft log, so every node's redis gets the same
// settings in the same place of the log; the state machine keeps what it
// applied and carries it in snapshots (backend.StateMachine). Only
// parameters known to be safe to replicate are accepted.

const reasonConfigRewrite = "would rewrite the local redis's configuration file; replicated settings travel in raftproxy's snapshots instead"

// configSafe are the parameters CONFIG SET may change, each for a reason:
// they change how redis stores or reports data, never which data it holds
// or how raftproxy reaches and rebuilds it. Names are redis's, aliases
// included.
var configSafe = map[string]string{
	// Encoding thresholds: memory layout only, but the encoding decides the
	// order HGETALL, SMEMBERS, HKEYS... reply in, so every node needs the same.
	"hash-max-listpack-entries": "encoding", "hash-max-listpack-value": "encoding",
	"hash-max-ziplist-entries": "encoding", "hash-max-ziplist-value": "encoding",
	"set-max-intset-entries": "encoding", "set-max-listpack-entries": "encoding", "set-max-listpack-value": "encoding",
	"zset-max-listpack-entries": "encoding", "zset-max-listpack-value": "encoding",
	"zset-max-ziplist-entries": "encoding", "zset-max-ziplist-value": "encoding",
	"list-max-listpack-size": "encoding", "list-max-ziplist-size": "encoding", "list-compress-depth": "encoding",
	"stream-node-max-bytes": "encoding", "stream-node-max-entries": "encoding",
	"hll-sparse-max-bytes": "encoding",
	// Observability: what redis records about itself.
	"slowlog-log-slower-than": "observability", "slowlog-max-len": "observability",
	"latency-monitor-threshold": "observability", "latency-tracking": "observability",
	"latency-tracking-info-percentiles": "observability",
	"notify-keyspace-events":            "keyspace notifications, published alike by every node",
	// A running script's time budget before redis answers BUSY.
	"lua-time-limit": "script time budget", "busy-reply-threshold": "script time budget",
	// Background work: CPU spent on expiry, rehashing and defragmentation;
	// keys that expired are invisible to reads whether freed or not.
	"hz": "background work", "dynamic-hz": "background work", "active-expire-effort": "background work",
	"activerehashing": "background work", "activedefrag": "background work",
	"active-defrag-ignore-bytes": "background work", "active-defrag-threshold-lower": "background work",
	"active-defrag-threshold-upper": "background work", "active-defrag-cycle-min": "background work",
	"active-defrag-cycle-max": "background work", "active-defrag-max-scan-fields": "background work",
	// The memory limit: redis itself keeps maxmemory 0, and the limit is
	// enforced through the log (backend/memory.go, proxy/memory.go).
	"maxmemory": "memory limit", "maxmemory-policy": "memory limit", "maxmemory-samples": "memory limit",
	"maxmemory-eviction-tenacity": "memory limit",
}

// configRefused names why a parameter would take redis out of raftproxy's
// control or make nodes diverge. Prefixes end in '-' or '*'.
var configRefused = []struct{ name, reason string }{
	{"dir", "raftproxy reads the RDB files redis writes there"},
	{"dbfilename", "raftproxy reads the RDB files redis writes there"},
	{"save", "raftproxy turns redis's own saves off and makes snapshots itself"},
	{"appendonly", "the raft log is the durable copy; redis's AOF is not used"},
	{"append*", "the raft log is the durable copy; redis's AOF is not used"},
	{"aof-", "the raft log is the durable copy; redis's AOF is not used"},
	{"rdb*", "snapshots depend on the RDB files redis writes (and checks their CRC)"},
	{"stop-writes-on-bgsave-error", "a failed snapshot must not make one node refuse the writes the others apply"},
	{"replicaof", "raftproxy replicates through raft and loads snapshots as redis's master"},
	{"slaveof", "raftproxy replicates through raft and loads snapshots as redis's master"},
	{"repl-", "raftproxy loads snapshots through redis's replication"},
	{"replica-", "raftproxy loads snapshots through redis's replication"},
	{"slave-", "raftproxy loads snapshots through redis's replication"},
	{"master*", "raftproxy loads snapshots through redis's replication"},
	{"min-replicas-", "redis replication is not used; raft decides when a write is durable"},
	{"min-slaves-", "redis replication is not used; raft decides when a write is durable"},
	{"port", "raftproxy connects to redis there"},
	{"bind", "raftproxy connects to redis there"},
	{"unixsocket*", "raftproxy connects to redis there"},
	{"tls-", "raftproxy connects to redis there"},
	{"protected-mode", "raftproxy connects to redis there"},
	{"requirepass", "raftproxy's own connections to redis would be refused"},
	{"maxclients", "raftproxy's own connections to redis could be refused"},
	{"timeout", "redis would close raftproxy's idle connections"},
	{"tcp-keepalive", "raftproxy's connections to redis are its own"},
	{"client-output-buffer-limit", "redis could close raftproxy's connections"},
	{"client-query-buffer-limit", "redis would close the connection that applies the log on a big command"},
	{"proto-max-bulk-len", "redis would close the connection that applies the log on a big argument, on every node, forever"},
	{"maxmemory-clients", "redis could evict raftproxy's own connections to it"},
	{"lazyfree-", "FLUSHALL and FLUSHDB must stay synchronous through raftproxy"},
	{"databases", "raftproxy learned the number of databases at start"},
	{"cluster-", "raftproxy emulates Redis Cluster itself"},
	{"enable-", "raftproxy decides which administrative commands clients may run"},
	{"loglevel", "is the local redis's own; set it in redis's configuration"},
	{"logfile", "is the local redis's own; set it in redis's configuration"},
}

// configSet handles CONFIG SET: the safe parameters go through the log
// (configSetPlan), with the local redis's current values to tell no-ops.
func (c *conn) configSet(args [][]byte) *op {
	safe, errText, needCurrent := configSetPlan(args, nil)
	if needCurrent {
		current, err := c.localConfig(args)
		if err != nil {
			return errReply(errorText(err, true))
		}
		safe, errText, _ = configSetPlan(args, current)
	}
	switch {
	case errText != "":
		return errReply(errText)
	case len(safe) == 2:
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	}
	return c.data(&spec{name: "config|set", class: classWrite}, safe)
}

// configSetPlan checks the parameters of CONFIG SET (args[2:] as name value
// pairs) and returns the CONFIG SET of the safe ones, which go through the
// log, or the error reply: CONFIG SET is all or nothing. Setting any other
// parameter to the value the local redis already has (save "", appendonly
// no: what raftproxy runs redis with) is accepted and changes nothing, as
// test suites and clients expect; current holds those values (nil: not
// known yet, and needCurrent says they are needed).
func configSetPlan(args [][]byte, current map[string]string) (safe [][]byte, errText string, needCurrent bool) {
	if len(args) < 4 || len(args)%2 != 0 {
		return nil, "ERR wrong number of arguments for 'config|set' command", false
	}
	safe = [][]byte{args[0], args[1]}
	for i := 2; i < len(args); i += 2 {
		name := strings.ToLower(string(args[i]))
		if _, ok := configSafe[name]; ok {
			// Redis only ever sees maxmemory 0 (backend/memory.go): the
			// value is checked here, as redis would.
			if _, err := backend.ParseMemory(string(args[i+1])); name == "maxmemory" && err != nil {
				return nil, "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value", false
			}
			safe = append(safe, args[i], args[i+1])
			continue
		}
		if current == nil {
			return nil, "", true
		}
		if v, ok := current[name]; ok && strings.EqualFold(strings.TrimSpace(string(args[i+1])), strings.TrimSpace(v)) {
			continue
		}
		if reason := configRefusal(name); reason != "" {
			return nil, fmt.Sprintf("ERR CONFIG SET '%.128s' is refused by raftproxy: %s", name, reason), false
		}
		return nil, fmt.Sprintf("ERR CONFIG SET '%.128s' is not supported by raftproxy: only parameters known to be safe to replicate to every node can be set (see docs/SEMANTICS.md)", name), false
	}
	return safe, "", false
}

// localConfig reads the current values of the parameters of a CONFIG SET
// from the local redis.
func (c *conn) localConfig(args [][]byte) (map[string]string, error) {
	rc, err := c.s.dialRedis(nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(2 * time.Second))
	get := [][]byte{[]byte("CONFIG"), []byte("GET")}
	for i := 2; i < len(args); i += 2 {
		get = append(get, args[i])
	}
	raw, err := rc.Do(get...)
	if err != nil {
		return nil, raftnode.ErrLoading
	}
	v, _, err := resp.Parse(raw)
	if err != nil || v.IsError() {
		return nil, raftnode.ErrLoading
	}
	out := map[string]string{}
	for i := 0; i+1 < len(v.Elems); i += 2 {
		out[strings.ToLower(string(v.Elems[i].Str))] = string(v.Elems[i+1].Str)
	}
	return out, nil
}

func configRefusal(name string) string {
	for _, r := range configRefused {
		switch {
		case strings.HasSuffix(r.name, "*"):
			if strings.HasPrefix(name, strings.TrimSuffix(r.name, "*")) {
				return r.reason
			}
		case strings.HasSuffix(r.name, "-"):
			if strings.HasPrefix(name, r.name) {
				return r.reason
			}
		case name == r.name:
			return r.reason
		}
	}
	return ""
}

// isConfigSet reports whether args is a CONFIG SET.
func isConfigSet(args [][]byte) bool {
	return len(args) >= 2 && strings.EqualFold(string(args[0]), "config") && strings.EqualFold(string(args[1]), "set")
}
