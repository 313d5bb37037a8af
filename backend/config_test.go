package backend

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNoteConfig(t *testing.T) {
	var rc replicatedConfig
	for _, tc := range []struct {
		cmd, reply string
	}{
		{"SET k v", "+OK\r\n"},
		{"CONFIG SET hash-max-ziplist-entries 10", "+OK\r\n"},
		{"config set Slowlog-Max-Len 5 hash-max-listpack-entries 20", "+OK\r\n"},
		{"CONFIG SET zset-max-listpack-entries nope", "-ERR Invalid argument\r\n"},
		{"CONFIG SET hash-max-ziplist-entries 30", "+OK\r\n"},
		{"CONFIG GET hash-max-ziplist-entries", "*2\r\n"},
	} {
		var args [][]byte
		for _, f := range strings.Fields(tc.cmd) {
			args = append(args, []byte(f))
		}
		rc.note(args, []byte(tc.reply))
	}
	// Aliases keep the order they were set in, so the last one set wins
	// when they are set again.
	want := []configParam{{"slowlog-max-len", "5"}, {"hash-max-listpack-entries", "20"}, {"hash-max-ziplist-entries", "30"}}
	got, _ := json.Marshal(rc.list())
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("recorded %s, want %s", got, exp)
	}
}
