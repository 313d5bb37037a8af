package proxy

import (
	"fmt"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// A connection's handshake and identity: HELLO, AUTH and the gate before
// it, RESET.

const helloSyntax = "ERR Syntax error in HELLO option '%.128s'"

// hello is HELLO [protover [AUTH user pass] [SETNAME name]], checked in
// redis's order: version, options, authentication, then the name and the
// protocol change.
func (c *conn) hello(args [][]byte) *op {
	ver := int64(0)
	if len(args) > 1 {
		v, ok := redisInt(args[1])
		if !ok {
			return errReply("ERR Protocol version is not an integer or out of range")
		}
		if v < 2 || v > 3 {
			return errReply("NOPROTO unsupported protocol version")
		}
		ver = v
	}
	var user, pass, name []byte
	setName := false
	for j := 2; j < len(args); j++ {
		more := len(args) - 1 - j
		switch opt := args[j]; {
		case strings.EqualFold(string(opt), "auth") && more >= 2:
			user, pass = args[j+1], args[j+2]
			j += 2
		case strings.EqualFold(string(opt), "setname") && more >= 1:
			if msg := checkClientName(args[j+1]); msg != "" {
				return errReply(msg)
			}
			name, setName = args[j+1], true
			j++
		default:
			return errReply(fmt.Sprintf(helloSyntax, opt))
		}
	}
	if user != nil {
		if o := c.authenticate(user, pass, nil); o != nil {
			return o
		}
	}
	if !c.authed {
		return errReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
	}
	if setName {
		c.client.name = string(name)
	}
	if ver != 0 {
		c.client.resp3 = ver == 3
	}
	proto := int64(2)
	if c.client.resp3 {
		proto = 3
	}
	b := resp.AppendMapLen(nil, 7, c.client.resp3)
	b = resp.AppendBulkString(b, "server")
	b = resp.AppendBulkString(b, "redis")
	b = resp.AppendBulkString(b, "version")
	b = resp.AppendBulkString(b, c.s.redisVersion)
	b = resp.AppendBulkString(b, "proto")
	b = resp.AppendInt(b, proto)
	b = resp.AppendBulkString(b, "id")
	b = resp.AppendInt(b, int64(c.id))
	b = resp.AppendBulkString(b, "mode")
	b = resp.AppendBulkString(b, "standalone")
	b = resp.AppendBulkString(b, "role")
	b = resp.AppendBulkString(b, "master")
	b = resp.AppendBulkString(b, "modules")
	b = resp.AppendArrayLen(b, 0)
	return &op{kind: opReply, reply: b}
}

// authGate refuses, as redis 7.0 does, what a client that has not
// authenticated may not run: everything but AUTH, HELLO, QUIT and RESET
// (redis's no-auth commands), after the unknown-command and arity checks.
func (c *conn) authGate(args [][]byte) *op {
	sp, errText := c.s.table.lookup(args)
	if sp == nil {
		return errReply(errText)
	}
	if sp.unknown {
		// A command redis does not list would be proposed; unauthenticated,
		// it gets redis's unknown-command error.
		return errReply(unknownCommand(args))
	}
	switch sp.name {
	case "auth", "hello", "quit", "reset":
		return nil
	}
	return errReply("NOAUTH Authentication required.")
}

// auth answers AUTH [user] pass.
func (c *conn) auth(args [][]byte) *op {
	switch len(args) {
	case 2:
		if u, err := c.s.aclUser("default"); (err != nil || !u.exists) && c.s.cfg.RequirePass == "" || err == nil && u.exists && u.nopass {
			return errReply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		}
		return c.authenticate([]byte("default"), args[1], okReply())
	case 3:
		return c.authenticate(args[1], args[2], okReply())
	}
	return errReply(errSyntax)
}

// authenticate logs the client in as user and returns ok, or returns
// redis's error and leaves the client as it was (redis keeps an
// authenticated client authenticated after a failed AUTH).
func (c *conn) authenticate(user, pass []byte, ok *op) *op {
	good, o := c.checkPassword(user, pass)
	if o != nil {
		return o
	}
	if !good {
		return errReply("WRONGPASS invalid username-password pair or user is disabled.")
	}
	c.authed = true
	c.user = string(user)
	if c.user == "default" {
		c.user = ""
	}
	c.info.mu.Lock()
	c.info.user = c.user
	c.info.mu.Unlock()
	return ok
}

// reset is RESET: the connection as new (logged out when there is a
// password), except its id, its library and, as in redis 7.0, NO-EVICT and
// NO-TOUCH.
func (c *conn) reset() {
	c.user = ""
	c.info.mu.Lock()
	c.info.user = ""
	c.info.mu.Unlock()
	c.authed = c.s.defaultOpen()
	c.tx = nil
	c.unwatch()
	c.stopMonitoring()
	c.trackingOff()
	c.pubsubReset()
	c.db = 0
	c.client.resp3 = false
	c.client.name = ""
	c.client.replyOff, c.client.skipNext = false, false
}
