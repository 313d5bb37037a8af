package test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clientScripts are sent whole (pipelined, as CLIENT REPLY OFF leaves no
// reply to wait for) and end with ECHO end; the replies up to it must be
// redis's, byte for byte, once connection ids and CLIENT INFO lines are
// normalized.
var clientScripts = []struct {
	name string
	cmds [][]string
}{
	{"reply off, skip, on", [][]string{
		{"CLIENT", "REPLY", "OFF"}, {"SET", "%s:k", "1"}, {"GET", "%s:k"}, {"CLIENT", "REPLY", "BOGUS"}, {"CLIENT", "REPLY", "ON"},
		{"GET", "%s:k"}, {"CLIENT", "REPLY", "SKIP"}, {"INCR", "%s:k"}, {"GET", "%s:k"},
		{"CLIENT", "REPLY", "SKIP"}, {"CLIENT", "REPLY", "ON"}, {"GET", "%s:k"}, {"CLIENT", "REPLY", "BOGUS"}}},
	{"reset", [][]string{
		{"SELECT", "3"}, {"HELLO", "3"}, {"CLIENT", "SETNAME", "x"}, {"CLIENT", "NO-EVICT", "on"}, {"SET", "%s:db3", "v"},
		{"MULTI"}, {"SET", "%s:never", "1"}, {"RESET"}, {"EXEC"}, {"CLIENT", "GETNAME"}, {"GET", "%s:db3"},
		{"EXISTS", "%s:never"}, {"HGETALL", "%s:none"}, {"CLIENT", "INFO"}, {"RESET", "x"}}},
	{"reset in reply off", [][]string{{"CLIENT", "REPLY", "OFF"}, {"PING"}, {"RESET"}, {"PING"}}},
	{"names", [][]string{
		{"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "app-1"}, {"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "a b"},
		{"CLIENT", "SETNAME", ""}, {"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "a", "b"}}},
	{"errors", [][]string{
		{"CLIENT"}, {"CLIENT", "NOSUCH"}, {"CLIENT", "NO-EVICT", "maybe"}, {"CLIENT", "NO-EVICT", "off"},
		{"CLIENT", "LIST", "TYPE", "foo"}, {"CLIENT", "LIST", "ID", "1", "x"}, {"CLIENT", "LIST", "ID"}, {"CLIENT", "LIST", "bogus"},
		{"CLIENT", "LIST", "TYPE", "pubsub"}, {"CLIENT", "LIST", "TYPE", "master"}, {"CLIENT", "LIST", "ID", "999999"},
		{"CLIENT", "KILL", "1.2.3.4:5"}, {"CLIENT", "KILL", "ID", "999999"}, {"CLIENT", "KILL", "ID", "x"},
		{"CLIENT", "KILL", "foo", "bar"}, {"CLIENT", "KILL", "TYPE", "foo"}, {"CLIENT", "KILL", "USER", "nobody"},
		{"CLIENT", "KILL", "SKIPME", "maybe"}, {"CLIENT", "KILL", "ADDR", "1.2.3.4:5", "SKIPME", "no"},
		{"CLIENT", "UNBLOCK", "999999"}, {"CLIENT", "UNBLOCK", "x"}, {"CLIENT", "UNBLOCK", "1", "foo"},
		{"CLIENT", "GETREDIR"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "HELP"}}},
}

var (
	infoLine = regexp.MustCompile(`id=\d+ addr=\S+ laddr=\S+ fd=\d+ name=(\S*) age=\d+ idle=\d+ flags=(\S+) db=(\d+) ` +
		`sub=0 psub=0 ssub=0 multi=(-?\d+) qbuf=\d+ qbuf-free=\d+ argv-mem=\d+ multi-mem=\d+ rbs=\d+ rbp=\d+ obl=\d+ oll=\d+ omem=\d+ ` +
		`tot-mem=\d+ events=r cmd=(\S+) user=default redir=-1 resp=(\d)( lib-name=\S* lib-ver=\S*)?\n`)
	bulkLen = regexp.MustCompile(`^([$=])\d+\r\n`)
)

// normalizeClient keeps what a CLIENT INFO line must agree on (name, flags,
// db, multi, cmd, resp) and drops counters and addresses; lib-name and
// lib-ver are redis 7.2's, which raftproxy always shows.
func normalizeClient(r string) string {
	r = normalize(r)
	if !infoLine.MatchString(r) {
		return r
	}
	r = infoLine.ReplaceAllString(r, "name=$1 flags=$2 db=$3 multi=$4 cmd=$5 resp=$6\n")
	return bulkLen.ReplaceAllString(r, "$1<len>\r\n")
}

func runClientScript(t *testing.T, addr, prefix string, cmds [][]string) []string {
	t.Helper()
	conn := dialBytes(t, addr)
	all := make([][]string, 0, len(cmds)+1)
	for _, c := range cmds {
		all = append(all, expand(c, prefix))
	}
	all = append(all, []string{"ECHO", "end"})
	if err := conn.send(all...); err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		r, err := conn.read()
		if err != nil {
			t.Fatalf("%s: after replies %q: %v", addr, out, err)
		}
		if r == "$3\r\nend\r\n" {
			return out
		}
		out = append(out, normalizeClient(r))
	}
}

// TestClientCommands compares CLIENT, RESET and CLIENT REPLY with a stock
// redis-server, then checks what only raftproxy can show: CLIENT LIST lists
// the proxy's clients (never its own redis connections) and CLIENT KILL
// closes them.
func TestClientCommands(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	f := followers[0]

	for _, sc := range clientScripts {
		t.Run(sc.name, func(t *testing.T) {
			prefix := "client:" + strings.ReplaceAll(sc.name, " ", "-")
			want := runClientScript(t, stock, prefix, sc.cmds)
			got := runClientScript(t, f.Addr, prefix, sc.cmds)
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("raftproxy replied\n  %q\nredis replied\n  %q", got, want)
			}
		})
	}

	t.Run("list and kill", func(t *testing.T) {
		a, b, k := dialBytes(t, leader.Addr), dialBytes(t, leader.Addr), dialBytes(t, leader.Addr)
		idOf := func(conn *bytesConn) string {
			r := conn.do(t, "CLIENT", "ID")
			if !strings.HasPrefix(r, ":") {
				t.Fatalf("CLIENT ID = %q", r)
			}
			return strings.TrimSpace(r[1:])
		}
		ida, idb := idOf(a), idOf(b)
		a.do(t, "CLIENT", "SETNAME", "conn-a")
		a.do(t, "CLIENT", "SETINFO", "LIB-NAME", "mylib")
		list := b.do(t, "CLIENT", "LIST")
		for _, want := range []string{"id=" + ida + " ", "id=" + idb + " ", "name=conn-a ", "lib-name=mylib ", "cmd=client|list "} {
			if !strings.Contains(list, want) {
				t.Errorf("CLIENT LIST lacks %q:\n%s", want, list)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(list[strings.Index(list, "\n")+1:]), "\n") {
			if !strings.Contains(line, " laddr="+leader.Addr+" ") {
				t.Errorf("CLIENT LIST shows a connection that is not a client of the proxy: %s", line)
			}
		}
		if got := b.do(t, "CLIENT", "LIST", "ID", ida); !strings.Contains(got, "id="+ida+" ") || strings.Count(got, "id=") != 1 {
			t.Errorf("CLIENT LIST ID %s = %q", ida, got)
		}
		// The old form, by address, replies +OK and closes a.
		addr := regexp.MustCompile(`id=` + ida + ` addr=(\S+)`).FindStringSubmatch(list)
		if addr == nil {
			t.Fatalf("no addr for %s in %s", ida, list)
		}
		if got := k.do(t, "CLIENT", "KILL", addr[1]); got != "+OK\r\n" {
			t.Errorf("CLIENT KILL %s = %q", addr[1], got)
		}
		if _, err := a.read(); err == nil {
			t.Error("killed connection a still answers")
		}
		// By id: :1, and b is gone.
		if got := k.do(t, "CLIENT", "KILL", "ID", idb); got != ":1\r\n" {
			t.Errorf("CLIENT KILL ID %s = %q", idb, got)
		}
		if err := b.send([]string{"PING"}); err == nil {
			if r, err := b.read(); err == nil {
				t.Errorf("killed connection b answered PING: %q", r)
			}
		}
		// SKIPME yes (the default) spares the caller; SKIPME no kills it
		// after its reply. Other clients of the test (go-redis pools) may
		// be killed too: they reconnect.
		idk := idOf(k)
		if got := k.do(t, "CLIENT", "KILL", "ID", idk); got != ":0\r\n" {
			t.Errorf("CLIENT KILL of itself with SKIPME yes = %q", got)
		}
		if got := k.do(t, "CLIENT", "KILL", "ID", idk, "SKIPME", "no"); got != ":1\r\n" {
			t.Errorf("CLIENT KILL of itself with SKIPME no = %q", got)
		}
		if _, err := k.read(); err == nil {
			t.Error("connection that killed itself is still open")
		}
		// The proxy's own redis connections were untouched: data commands
		// work on new connections, and on the node's redis the proxy's
		// connections are still there.
		n := dialBytes(t, leader.Addr)
		if got := n.do(t, "SET", "client:after-kill", "1"); got != "+OK\r\n" {
			t.Errorf("SET after kills = %q", got)
		}
		if got := n.do(t, "GET", "client:after-kill"); got != "$1\r\n1\r\n" {
			t.Errorf("GET after kills = %q", got)
		}
		redisList, err := leader.RedisClient().ClientList(ctx).Result()
		if err != nil || strings.Count(redisList, "\n") < 2 {
			t.Errorf("the node's redis lists %q, %v; want the proxy's connections still there", redisList, err)
		}
	})

	t.Run("info", func(t *testing.T) {
		conn := dialBytes(t, f.Addr)
		conn.do(t, "HELLO", "3")
		conn.do(t, "SELECT", "2")
		conn.do(t, "CLIENT", "NO-TOUCH", "on")
		conn.do(t, "MULTI")
		conn.do(t, "SET", "client:x", "1")
		conn.do(t, "DISCARD")
		info := conn.do(t, "CLIENT", "INFO")
		if !strings.HasPrefix(info, "=") || !strings.Contains(info, "txt:id=") {
			t.Errorf("CLIENT INFO in RESP3 is not a verbatim string: %q", info)
		}
		for _, want := range []string{" db=2 ", " flags=T ", " multi=-1 ", " cmd=client|info ", " resp=3 ", " laddr=" + f.Addr + " "} {
			if !strings.Contains(info, want) {
				t.Errorf("CLIENT INFO %q lacks %q", info, want)
			}
		}
		if got := conn.do(t, "CLIENT", "ID"); !strings.HasPrefix(got, ":") {
			t.Errorf("CLIENT ID = %q", got)
		} else if id, _ := strconv.Atoi(strings.TrimSpace(got[1:])); !strings.Contains(info, "id="+strconv.Itoa(id)+" ") {
			t.Errorf("CLIENT ID %d is not the id in CLIENT INFO %q", id, info)
		}
	})
}
