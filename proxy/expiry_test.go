package proxy

import (
	"fmt"
	"testing"
)

func TestAddCheckMergesByDatabase(t *testing.T) {
	// Two reads' arguments in one backing array, as a pipelined batch's
	// may be: merging must not write over the second read's arguments.
	args := [][]byte{[]byte("GET"), []byte("a"), []byte("GET"), []byte("b"), []byte("GET"), []byte("c")}
	var checks []readCheck
	checks = addCheck(checks, readCheck{db: 0, keys: args[1:2], now: 10})
	checks = addCheck(checks, readCheck{db: 1, keys: args[3:4], now: 30})
	checks = addCheck(checks, readCheck{db: 0, keys: args[5:6], now: 20})
	if got := fmt.Sprintf("%q", args); got != `["GET" "a" "GET" "b" "GET" "c"]` {
		t.Fatalf("arguments changed by merging: %s", got)
	}
	if len(checks) != 2 {
		t.Fatalf("%d checks, want one per database", len(checks))
	}
	if c := checks[0]; c.db != 0 || c.now != 20 || fmt.Sprintf("%q", c.keys) != `["a" "c"]` {
		t.Errorf("db 0 check: %d %d %q, want keys a c at the later time 20", c.db, c.now, c.keys)
	}
	if c := checks[1]; c.db != 1 || c.now != 30 || fmt.Sprintf("%q", c.keys) != `["b"]` {
		t.Errorf("db 1 check: %d %d %q", c.db, c.now, c.keys)
	}
}
