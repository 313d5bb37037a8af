package proxy

import (
	"strings"
	"testing"
)

func TestRedisInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"3", 3, true}, {"-1", -1, true}, {"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775808", -1 << 63, true},
		{"", 0, false}, {"-", 0, false}, {"+3", 0, false}, {"03", 0, false}, {"-0", 0, false}, {" 3", 0, false},
		{"3 ", 0, false}, {"3x", 0, false}, {"99999999999999999999", 0, false}, {"1e3", 0, false},
	}
	for _, tt := range tests {
		got, ok := redisInt([]byte(tt.in))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("redisInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// The replies below are redis 7.0's, byte for byte (redis-server as oracle).
const hello3 = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:3\r\n" +
	"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"

var hello2 = "*14" + strings.TrimPrefix(strings.Replace(hello3, ":3\r\n$2", ":2\r\n$2", 1), "%7")

func TestHello(t *testing.T) {
	tests := []struct {
		args  string
		want  string
		resp3 bool // the connection's protocol afterwards
		name  string
	}{
		{"HELLO", hello2, false, ""},
		{"HELLO 3", hello3, true, ""},
		{"HELLO 2", hello2, false, ""},
		{"HELLO 3 AUTH default anything", hello3, true, ""},
		{"HELLO 3 SETNAME app", hello3, true, "app"},
		{"HELLO 3 setname a setname b", hello3, true, "b"},
		{"HELLO 3 SETNAME x AUTH default y", hello3, true, "x"},
		{"HELLO 4", "-NOPROTO unsupported protocol version\r\n", false, ""},
		{"HELLO 1", "-NOPROTO unsupported protocol version\r\n", false, ""},
		{"HELLO x", "-ERR Protocol version is not an integer or out of range\r\n", false, ""},
		{"HELLO 3 AUTH foo x", "-WRONGPASS invalid username-password pair or user is disabled.\r\n", false, ""},
		{"HELLO 3 AUTH DEFAULT x", "-WRONGPASS invalid username-password pair or user is disabled.\r\n", false, ""},
		{"HELLO 3 AUTH default", "-ERR Syntax error in HELLO option 'AUTH'\r\n", false, ""},
		{"HELLO 3 SETNAME", "-ERR Syntax error in HELLO option 'SETNAME'\r\n", false, ""},
		{"HELLO 3 BLAH", "-ERR Syntax error in HELLO option 'BLAH'\r\n", false, ""},
		{"HELLO 3 SETNAME a\x01b", "-ERR Client names cannot contain spaces, newlines or special characters.\r\n", false, ""},
		// A failed SETNAME is checked before AUTH and changes nothing.
		{"HELLO 3 AUTH nobody x SETNAME a\x01b", "-ERR Client names cannot contain spaces, newlines or special characters.\r\n", false, ""},
	}
	for _, tt := range tests {
		c := &conn{s: &Server{redisVersion: "7.0.15"}, id: 3, authed: true}
		o := c.hello(fields(tt.args))
		if string(o.reply) != tt.want {
			t.Errorf("%q: got %q, want %q", tt.args, o.reply, tt.want)
		}
		if c.client.resp3 != tt.resp3 || c.client.name != tt.name {
			t.Errorf("%q: connection resp3=%v name=%q, want %v %q", tt.args, c.client.resp3, c.client.name, tt.resp3, tt.name)
		}
	}
	// HELLO without a version keeps the protocol.
	c := &conn{s: &Server{redisVersion: "7.0.15"}, id: 3, authed: true}
	c.client.resp3 = true
	if o := c.hello(fields("HELLO")); string(o.reply) != hello3 || !c.client.resp3 {
		t.Errorf("HELLO on a RESP3 connection: %q, resp3=%v", o.reply, c.client.resp3)
	}
}

func TestAuth(t *testing.T) {
	const (
		wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
		noauth    = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"
	)
	tests := []struct {
		pass   string // --requirepass
		authed bool   // before the command
		args   string
		want   string
		after  bool // authenticated afterwards
	}{
		{"", true, "AUTH x", "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n", true},
		{"", true, "AUTH default x", "+OK\r\n", true},
		{"", true, "AUTH foo x", wrongpass, true},
		{"", true, "AUTH a b c", "-ERR syntax error\r\n", true},
		{"pw", false, "AUTH pw", "+OK\r\n", true},
		{"pw", false, "AUTH default pw", "+OK\r\n", true},
		{"pw", false, "AUTH Default pw", wrongpass, false},
		{"pw", false, "AUTH PW", wrongpass, false},
		{"pw", false, "AUTH pwx", wrongpass, false},
		{"pw", false, "AUTH bob pw", wrongpass, false},
		{"pw", true, "AUTH wrong", wrongpass, true}, // redis keeps the client logged in
		{"pw", false, "AUTH a b c", "-ERR syntax error\r\n", false},
		{"pw", false, "HELLO 3 AUTH default pw", hello3, true},
		{"pw", false, "HELLO 3 AUTH default x", wrongpass, false},
		{"pw", false, "HELLO 3", noauth, false},
		{"pw", false, "HELLO", noauth, false},
		{"pw", false, "HELLO 4", "-NOPROTO unsupported protocol version\r\n", false},
		{"pw", true, "HELLO 3", hello3, true},
	}
	for _, tt := range tests {
		c := &conn{s: &Server{cfg: Config{RequirePass: tt.pass}, redisVersion: "7.0.15"}, id: 3, authed: tt.authed}
		var o *op
		if strings.HasPrefix(tt.args, "HELLO") {
			o = c.hello(fields(tt.args))
		} else {
			o = c.auth(fields(tt.args))
		}
		if string(o.reply) != tt.want || c.authed != tt.after {
			t.Errorf("requirepass %q, %q: got %q, authenticated %v; want %q, %v", tt.pass, tt.args, o.reply, c.authed, tt.want, tt.after)
		}
	}
}

func TestClientArgs(t *testing.T) {
	c := &conn{s: &Server{}}
	tests := []struct {
		args string
		f    func([][]byte) *op
		want string
	}{
		{"CLIENT SETINFO LIB-NAME go-redis(,go1.26)", c.setInfo, "+OK\r\n"},
		{"CLIENT SETINFO lib-ver 9.7.0", c.setInfo, "+OK\r\n"},
		{"CLIENT SETINFO LIB-FOO x", c.setInfo, "-ERR Unrecognized option 'LIB-FOO'\r\n"},
		{"CLIENT SETINFO Lib-Name a\x7fb", c.setInfo, "-ERR Lib-Name cannot contain spaces, newlines or special characters.\r\n"},
		{"CLIENT UNBLOCK 5", c.unblock, ":0\r\n"},
		{"CLIENT UNBLOCK 5 error", c.unblock, ":0\r\n"},
		{"CLIENT UNBLOCK x", c.unblock, "-ERR value is not an integer or out of range\r\n"},
		{"CLIENT UNBLOCK 5 foo", c.unblock, "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"},
		{"CLIENT UNBLOCK 5 timeout 1", c.unblock, "-ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.\r\n"},
		{"CLIENT LIST TYPE foo", c.clientList, "-ERR Unknown client type 'foo'\r\n"},
		{"CLIENT LIST ID 1 2 x", c.clientList, "-ERR Invalid client ID\r\n"},
		{"CLIENT LIST ID", c.clientList, "-ERR syntax error\r\n"},
		{"CLIENT LIST TYPE", c.clientList, "-ERR syntax error\r\n"},
		{"CLIENT LIST foo", c.clientList, "-ERR syntax error\r\n"},
		{"CLIENT LIST TYPE normal ID 1", c.clientList, "-ERR syntax error\r\n"},
		{"CLIENT LIST TYPE pubsub", c.clientList, "$0\r\n\r\n"},
		{"CLIENT LIST ID 999", c.clientList, "$0\r\n\r\n"},
		{"CLIENT KILL 1.2.3.4:5", kill(c), "-ERR No such client\r\n"},
		{"CLIENT KILL ID", kill(c), "-ERR No such client\r\n"},
		{"CLIENT KILL ID 999", kill(c), ":0\r\n"},
		{"CLIENT KILL ID x", kill(c), "-ERR client-id should be greater than 0\r\n"},
		{"CLIENT KILL ID 0", kill(c), "-ERR client-id should be greater than 0\r\n"},
		{"CLIENT KILL foo bar", kill(c), "-ERR syntax error\r\n"},
		{"CLIENT KILL ID 1 SKIPME", kill(c), "-ERR syntax error\r\n"},
		{"CLIENT KILL SKIPME maybe", kill(c), "-ERR syntax error\r\n"},
		{"CLIENT KILL TYPE foo", kill(c), "-ERR Unknown client type 'foo'\r\n"},
		{"CLIENT KILL USER nobody", kill(c), "-ERR No such user 'nobody'\r\n"},
		{"CLIENT KILL ADDR 1.2.3.4:5 SKIPME no", kill(c), ":0\r\n"},
		{"CLIENT KILL LADDR 1:1", kill(c), ":0\r\n"},
		{"CLIENT KILL MAXAGE 10", kill(c), "-ERR syntax error\r\n"},
	}
	for _, tt := range tests {
		if o := tt.f(fields(tt.args)); string(o.reply) != tt.want {
			t.Errorf("%q: got %q, want %q", tt.args, o.reply, tt.want)
		}
	}
	if c.client.libName != "go-redis(,go1.26)" || c.client.libVer != "9.7.0" {
		t.Errorf("lib-name %q lib-ver %q after SETINFO", c.client.libName, c.client.libVer)
	}
}

func kill(c *conn) func([][]byte) *op {
	return func(args [][]byte) *op {
		o, _ := c.clientKill(args)
		return o
	}
}

// TestInfoLine checks CLIENT LIST's field order against redis 7.2's.
func TestInfoLine(t *testing.T) {
	c := &conn{id: 7}
	c.info.addr, c.info.laddr, c.info.fd = "127.0.0.1:5000", "127.0.0.1:7001", 9
	c.info.multi = 2
	c.info.state = clientState{resp3: true, cmd: "client|list", name: "app", libName: "go-redis", libVer: "9", noEvict: true}
	line := c.infoLine(c.info.created, false)
	var keys []string
	for _, kv := range strings.Fields(line) {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	want := "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp lib-name lib-ver"
	if strings.Join(keys, " ") != want {
		t.Errorf("fields %q, want %q", keys, want)
	}
	for _, f := range []string{"id=7 ", "name=app ", "flags=xe ", "multi=2 ", "cmd=client|list ", "resp=3 ", "lib-name=go-redis lib-ver=9\n"} {
		if !strings.Contains(line, f) {
			t.Errorf("line %q lacks %q", line, f)
		}
	}
}
