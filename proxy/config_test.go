package proxy

import (
	"strings"
	"testing"
)

func TestConfigSetPlan(t *testing.T) {
	args := [][]byte{[]byte("CONFIG"), []byte("SET"), []byte("save"), {}, []byte("hz"), []byte("20"), []byte("appendonly"), []byte("no")}
	safe, errText, _ := configSetPlan(args, map[string]string{"save": "", "appendonly": "no"})
	if errText != "" || len(safe) != 4 || string(safe[2]) != "hz" {
		t.Errorf("no-op parameters are dropped, safe ones kept: %q %q", safe, errText)
	}
	if _, _, need := configSetPlan(fields("CONFIG SET hz 20"), nil); need {
		t.Error("only safe parameters: the local values are not needed")
	}
	if _, _, need := configSetPlan(fields("CONFIG SET hz 20 save x"), nil); !need {
		t.Error("a parameter that is not safe: the local value is needed")
	}
}

func TestConfigSetError(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want string // substring of the error; "" for accepted
	}{
		{"CONFIG SET hash-max-listpack-entries 10", ""},
		{"CONFIG SET HASH-MAX-ZIPLIST-ENTRIES 10", ""},
		{"CONFIG SET slowlog-max-len 5 zset-max-listpack-value 32 list-max-listpack-size -2", ""},
		{"CONFIG SET notify-keyspace-events KEA", ""},
		{"CONFIG SET busy-reply-threshold 5000", ""},
		{"CONFIG SET dir /tmp", "'dir' is refused by raftproxy: raftproxy reads the RDB files"},
		{"CONFIG SET dbfilename x.rdb", "'dbfilename' is refused"},
		{"CONFIG SET save 60_1", "'save' is refused"},
		{"CONFIG SET appendonly yes", "'appendonly' is refused"},
		{"CONFIG SET appendfsync always", "'appendfsync' is refused"},
		{"CONFIG SET rdbchecksum no", "'rdbchecksum' is refused"},
		{"CONFIG SET port 1", "'port' is refused"},
		{"CONFIG SET bind 0.0.0.0", "'bind' is refused"},
		{"CONFIG SET unixsocketperm 700", "'unixsocketperm' is refused"},
		{"CONFIG SET requirepass x", "'requirepass' is refused"},
		{"CONFIG SET masterauth x", "'masterauth' is refused"},
		{"CONFIG SET maxmemory 1mb", ""},
		{"CONFIG SET maxmemory 100GB", ""},
		{"CONFIG SET maxmemory -5", "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"},
		{"CONFIG SET maxmemory 1.5mb", "argument must be a memory value"},
		{"CONFIG SET maxmemory-policy allkeys-lru", ""},
		{"CONFIG SET maxmemory-clients 10mb", "'maxmemory-clients' is refused"},
		{"CONFIG SET repl-diskless-load swapdb", "'repl-diskless-load' is refused"},
		{"CONFIG SET replica-read-only no", "'replica-read-only' is refused"},
		{"CONFIG SET proto-max-bulk-len 1mb", "'proto-max-bulk-len' is refused"},
		{"CONFIG SET lazyfree-lazy-user-flush yes", "'lazyfree-lazy-user-flush' is refused"},
		{"CONFIG SET timeout 5", "'timeout' is refused"},
		{"CONFIG SET databases 4", "'databases' is refused"},
		{"CONFIG SET no-such-param 1", "'no-such-param' is not supported by raftproxy"},
		// All or nothing: one refused parameter refuses the whole command.
		{"CONFIG SET hash-max-listpack-entries 10 dir /tmp", "'dir' is refused"},
		// A value redis already has is no change (current below).
		{"CONFIG SET maxmemory 0", ""}, {"CONFIG SET appendonly NO", ""},
		{"CONFIG SET hz 20 save 1_1", "'save' is refused"},
		{"CONFIG SET hash-max-listpack-entries", "wrong number of arguments"},
		{"CONFIG SET hash-max-listpack-entries 10 slowlog-max-len", "wrong number of arguments"},
	} {
		current := map[string]string{"save": "", "appendonly": "no", "dir": "/data", "maxmemory": "0"}
		_, got, _ := configSetPlan(fields(tc.cmd), current)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.cmd, got, tc.want)
		}
	}
}
