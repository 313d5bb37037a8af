package proxy

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/backend"
)

// startRedis runs a real redis-server on a free loopback port: the command
// table is built from what the local redis says about itself.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed for this test (make deps installs it): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < 100; i++ {
		if c, err := backend.Dial(context.Background(), addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis-server did not start on %s", addr)
	return ""
}

func testTable(t *testing.T) table {
	t.Helper()
	c, err := backend.Dial(context.Background(), startRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := c.DoValue("COMMAND")
	if err != nil {
		t.Fatal(err)
	}
	tab, err := buildTable(v)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestClassify(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		cmd  string
		want class
	}{
		{"SET k v", classWrite}, {"DEL a b", classWrite}, {"INCR k", classWrite}, {"FLUSHALL", classWrite},
		{"HSET h f v", classWrite}, {"SWAPDB 0 1", classWrite}, {"EXPIRE k 1", classWrite},
		{"GET k", classRead}, {"MGET a b", classRead}, {"KEYS *", classRead}, {"HGETALL h", classRead},
		{"SCAN 0", classRead}, {"DBSIZE", classRead}, {"TTL k", classRead}, {"SRANDMEMBER s", classRead},
		{"PING", classProxy}, {"ECHO x", classProxy}, {"SELECT 1", classProxy}, {"HELLO 2", classProxy},
		{"QUIT", classProxy}, {"RAFT.INFO", classProxy}, {"RAFT.CLUSTER INIT", classProxy},
		{"INFO", classProxy}, {"TIME", classLocal}, {"COMMAND COUNT", classLocal}, {"CONFIG GET maxmemory", classLocal},
		{"CLIENT ID", classProxy}, {"COMMAND", classLocal},
		{"CONFIG SET maxmemory 1", classProxy}, {"REPLICAOF no one", classRefused}, {"DEBUG SLEEP 0", classProxy},
		{"SHUTDOWN", classRefused}, {"SAVE", classRefused}, {"BGSAVE", classRefused}, {"MONITOR", classProxy},
		{"SPOP s", classWrite}, {"BLPOP l 0", classWrite}, {"BZMPOP 0 1 z MIN", classWrite}, {"MULTI", classProxy}, {"EXEC", classProxy}, {"WATCH k", classProxy}, {"EVAL x 0", classWrite},
		{"EVAL_RO x 0", classWrite}, {"EVALSHA x 0", classWrite}, {"FCALL f 0", classWrite}, {"FCALL_RO f 0", classWrite},
		{"SCRIPT LOAD x", classWrite}, {"SCRIPT EXISTS x", classRead}, {"SCRIPT FLUSH", classWrite}, {"SCRIPT KILL", classProxy},
		{"FUNCTION LOAD x", classWrite}, {"FUNCTION LIST", classRead}, {"FUNCTION KILL", classProxy}, {"FUNCTION STATS", classLocal},
		{"XADD s 1-1 f v", classWrite}, {"XCLAIM s g c 0 1-1", classWrite}, {"XAUTOCLAIM s g c 0 0", classWrite}, {"XREADGROUP GROUP g c STREAMS s >", classWrite}, {"MIGRATE h 1 k 0 0", classRefused},
		{"SUBSCRIBE c", classProxy}, {"PUBLISH c m", classWrite}, {"PUBSUB NUMPAT", classProxy}, {"CLIENT KILL ID 1", classProxy},
		// Connection-level commands (client.go); SETINFO and NO-TOUCH even
		// when the local redis (7.0) does not know them.
		{"CLIENT SETINFO LIB-NAME x", classProxy}, {"CLIENT NO-TOUCH on", classProxy}, {"CLIENT LIST", classProxy},
		{"RESET", classProxy}, {"AUTH default x", classProxy}, {"CLIENT HELP", classLocal}, {"CLIENT PAUSE 1", classProxy},
		{"XREAD STREAMS s 0", classRead}, {"WAIT 1 0", classProxy}, {"SYNC", classRefused},
		// Commands redis does not list (a module's) are writes.
		{"NOSUCH a b", classWrite}, {"mymodule.set k v", classWrite},
	}
	for _, tt := range tests {
		args := fields(tt.cmd)
		sp, errText := tab.lookup(args)
		if sp == nil {
			t.Errorf("%s: lookup failed: %s", tt.cmd, errText)
			continue
		}
		if sp.class != tt.want {
			t.Errorf("%s: class %v, want %v", tt.cmd, sp.class, tt.want)
		}
		if sp.class == classRefused && sp.reason == "" {
			t.Errorf("%s: refused without a reason", tt.cmd)
		}
	}
}

func TestLookupErrors(t *testing.T) {
	tab := testTable(t)
	tests := []struct{ cmd, want string }{
		{"GET", "ERR wrong number of arguments for 'get' command"},
		{"GET a b", "ERR wrong number of arguments for 'get' command"},
		{"SET k", "ERR wrong number of arguments for 'set' command"},
		{"CONFIG", "ERR wrong number of arguments for 'config' command"},
		{"CONFIG NOPE", "ERR unknown subcommand 'NOPE'. Try CONFIG HELP."},
		{"CONFIG GET", "ERR wrong number of arguments for 'config|get' command"},
	}
	for _, tt := range tests {
		sp, got := tab.lookup(fields(tt.cmd))
		if sp != nil || got != tt.want {
			t.Errorf("%s: got (%v, %q), want error %q", tt.cmd, sp, got, tt.want)
		}
	}
}

func fields(s string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(s) {
		out = append(out, []byte(f))
	}
	return out
}

// Finding a command in the table must not allocate: it runs per command.
func TestLookupAllocs(t *testing.T) {
	tab := testTable(t)
	args := fields("Config GET maxmemory")
	if n := testing.AllocsPerRun(100, func() { tab.lookup(args) }); n != 0 {
		t.Errorf("lookup allocates %v times per command", n)
	}
}

func TestWrittenKeys(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		cmd  string
		keys string // space-separated
		all  bool
	}{
		{"SET k v", "k", false},
		{"set k v EX 10", "k", false},
		{"MSET a 1 b 2 c 3", "a b c", false},
		{"DEL a b c", "a b c", false},
		{"INCR n", "n", false},
		{"LMOVE src dst LEFT RIGHT", "src dst", false},
		{"RPOPLPUSH src dst", "src dst", false},
		{"ZUNIONSTORE dst 2 a b", "dst", false}, // the sources are only read
		{"ZINTERSTORE dst 2 a b WEIGHTS 1 2", "dst", false},
		{"SORT src STORE dst", "dst", false},
		{"SORT src", "", false},
		{"EVAL body 2 k1 k2 arg", "k1 k2", false},
		{"EVAL body 0 arg", "", false},
		{"FCALL f 1 k1 arg", "k1", false},
		{"LMPOP 2 l1 l2 LEFT", "l1 l2", false},
		{"XADD s * f v", "s", false},
		{"GEOADD g 1 2 m", "g", false},
		{"GEORADIUS g 1 2 3 km STORE dst", "dst", false},
		{"BITOP AND dst a b", "dst", false},
		{"RENAME a b", "a b", false},
		{"COPY a b", "b", false},
		{"OBJECT ENCODING k", "", false}, // a read
		{"GET k", "", false},
		{"COPY a b DB 1", "", true},
		{"MOVE k 1", "", true},
		{"FLUSHDB", "", true},
		{"SWAPDB 0 1", "", true},
		{"mymodule.set k v", "", true},
		{"EVAL body x k", "", true}, // numkeys is not a number: redis refuses it, but assume the worst
	}
	for _, tt := range tests {
		keys, all := tab.writtenKeys(fields(tt.cmd))
		var got []string
		for _, k := range keys {
			got = append(got, string(k))
		}
		if strings.Join(got, " ") != tt.keys || all != tt.all {
			t.Errorf("%s: keys %q all %v, want %q all %v", tt.cmd, got, all, tt.keys, tt.all)
		}
	}
}

// TestEveryProxyCommandHasAHandler: dispatch calls the table's handler for
// each command the proxy serves; one without would answer as unknown.
func TestEveryProxyCommandHasAHandler(t *testing.T) {
	tab := testTable(t)
	for _, s := range tab {
		for _, sp := range append([]*spec{s}, subSpecs(s)...) {
			if sp.class == classProxy && sp.handle == nil && len(sp.subs) == 0 {
				t.Errorf("%s is served by the proxy but has no handler", sp.name)
			}
		}
	}
	if tab["ping"].handle == nil || tab["client"].subs["id"] == nil || tab["client"].subs["id"].handle == nil {
		t.Fatal("PING or CLIENT ID has no handler")
	}
}
