package proxy

import (
	"bytes"
	"crypto/subtle"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/resp"
)

// ACL users (backend/acl.go keeps them in every node's redis, under
// backend.ACLPrefix). ACL SETUSER and DELUSER go through the log; ACL
// GETUSER, LIST, USERS and DRYRUN read the local redis after a read
// barrier; AUTH and HELLO AUTH ask redis to check the password. Every
// command of a user that may not run everything on every key and channel
// is checked with ACL DRYRUN, and refused with redis's -NOPERM texts.
// Commands a script runs are not checked against its caller's user (the
// script runs on the node's own connection): only EVAL, FCALL and the keys
// they declare are.
//
// Members reach each other's client port (JOIN, forwarded admin commands)
// as the internal user, with --requirepass; it is not in redis and needs no
// ACL check.

const internalUser = "raftproxy-internal"

// aclUser is what the proxy knows of a user, for one ACL generation.
type aclUser struct {
	gen    uint64
	exists bool
	// super: every command on every key and channel, no selectors: no
	// command needs a check.
	super bool
	// on and nopass: a new connection is logged in as default without AUTH.
	on, nopass bool
}

// aclCache holds users as of the last ACL change applied here.
type aclCache struct {
	gen   atomic.Uint64 // bumped by every applied ACL SETUSER or DELUSER
	mu    sync.Mutex
	users map[string]*aclUser
}

// user returns what redis says of user name now (cached until an ACL
// change is applied).
func (s *Server) aclUser(name string) (*aclUser, error) {
	k := &s.acl
	gen := k.gen.Load()
	k.mu.Lock()
	if u := k.users[name]; u != nil && u.gen == gen {
		k.mu.Unlock()
		return u, nil
	}
	k.mu.Unlock()
	rc, err := s.dialRedis(nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(2 * time.Second))
	v, err := rc.DoValue("ACL", "GETUSER", backend.ACLPrefix+name)
	if err != nil {
		return nil, err
	}
	u := &aclUser{gen: gen, exists: !v.Null && v.Kind != '_'}
	if u.exists {
		fields := map[string]resp.Value{}
		for i := 0; i+1 < len(v.Elems); i += 2 {
			fields[string(v.Elems[i].Str)] = v.Elems[i+1]
		}
		for _, f := range fields["flags"].Elems {
			switch string(f.Str) {
			case "on":
				u.on = true
			case "nopass":
				u.nopass = true
			}
		}
		u.super = string(fields["commands"].Str) == "+@all" && string(fields["keys"].Str) == "~*" &&
			string(fields["channels"].Str) == "&*" && len(fields["selectors"].Elems) == 0
	}
	k.mu.Lock()
	if k.users == nil {
		k.users = map[string]*aclUser{}
	}
	k.users[name] = u
	k.mu.Unlock()
	return u, nil
}

// defaultOpen reports whether a new connection is logged in as default
// without AUTH: default is on and takes no password. While redis cannot
// say, --requirepass decides, as before any ACL change.
func (s *Server) defaultOpen() bool {
	u, err := s.aclUser("default")
	if err != nil || !u.exists {
		return s.cfg.RequirePass == ""
	}
	return u.on && u.nopass
}

// aclChanged notes an applied ACL SETUSER or DELUSER (Server.written):
// cached users are stale, and clients of a deleted user are disconnected,
// as redis does, when it is applied live (not when a rebuild applies it
// again: the user may have been made again since).
func (s *Server) aclChanged(args [][]byte, live bool) {
	s.acl.gen.Add(1)
	if !live || !bytes.EqualFold(args[1], []byte("deluser")) {
		return
	}
	gone := map[string]bool{}
	for _, a := range args[2:] {
		gone[strings.TrimPrefix(string(a), backend.ACLPrefix)] = true
	}
	for _, c := range s.clients() {
		c.info.mu.Lock()
		u := c.info.user
		c.info.mu.Unlock()
		if u == "" {
			u = "default"
		}
		if gone[u] {
			c.nc.Close()
		}
	}
}

// aclCheck refuses a command the connection's user may not run, with
// redis's -NOPERM text; nil when it may.
func (c *conn) aclCheck(sp *spec, args [][]byte) *op {
	if c.user == internalUser || sp.noAuth {
		return nil
	}
	u, err := c.s.aclUser(c.userName())
	if err != nil {
		return nil // redis is away: the command fails on its own
	}
	if !u.exists && c.user == "" {
		// No cluster yet (or one from before users): the default user of
		// --requirepass, who may run everything.
		return nil
	}
	if !u.exists {
		// Deleted (its connections are being closed): logged out.
		c.authed = false
		return c.rejectReply("NOAUTH Authentication required.")
	}
	if u.super {
		return nil
	}
	check := args
	switch {
	case sp.name == "raft.info":
		check = [][]byte{[]byte("INFO")}
	case strings.HasPrefix(sp.name, "raft."):
		// raftproxy's administrative commands need what CONFIG SET needs.
		check = [][]byte{[]byte("CONFIG"), []byte("SET"), []byte("x"), []byte("y")}
	}
	msg, err := c.s.dryRun(c.userName(), check)
	if err != nil || msg == "" {
		return nil
	}
	if sp.name == "exec" {
		// Redis ends a transaction whose EXEC it refuses, and says so.
		c.tx = nil
		msg = "EXECABORT Transaction discarded because of: " + msg
	}
	return c.rejectReply(msg)
}

// dryRun asks redis whether user may run args: "" when it may, else the
// -NOPERM text a client gets for it.
func (s *Server) dryRun(user string, args [][]byte) (string, error) {
	rc, err := s.dialRedis(nil)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(2 * time.Second))
	raw, err := rc.Do(append([][]byte{[]byte("ACL"), []byte("DRYRUN"), []byte(backend.ACLPrefix + user)}, args...)...)
	if err != nil {
		return "", err
	}
	v, _, err := resp.Parse(raw)
	if err != nil || v.Kind == '+' || v.IsError() {
		// An error is a command redis does not know, or a user deleted
		// meanwhile: the command meets its own fate.
		return "", nil
	}
	text := string(v.Str)
	switch {
	case strings.HasPrefix(text, "This user has no permissions to run the "):
		return "NOPERM this user" + strings.TrimPrefix(text, "This user"), nil
	case strings.HasSuffix(text, "' key"):
		return "NOPERM this user has no permissions to access one of the keys used as arguments", nil
	case strings.HasSuffix(text, "' channel"):
		return "NOPERM this user has no permissions to access one of the channels used as arguments", nil
	case text == "OK":
		return "", nil
	}
	return "NOPERM " + text, nil
}

// userName is the connection's user.
func (c *conn) userName() string {
	if c.user == "" {
		return "default"
	}
	return c.user
}

// checkPassword reports whether pass logs user in. The internal user is
// raftproxy's own; every other is redis's, asked after a read barrier so
// that a user made through another node is known here.
func (c *conn) checkPassword(user, pass []byte) (bool, *op) {
	if string(user) == internalUser {
		want := c.s.cfg.RequirePass
		return want != "" && subtle.ConstantTimeCompare(pass, []byte(want)) == 1, nil
	}
	if c.s.cfg.Cluster != nil && c.s.cfg.Cluster.Node() != nil {
		if o := c.barrier(); o != nil {
			return false, o
		}
	} else {
		// No cluster yet: only the default user, as --requirepass says.
		want := c.s.cfg.RequirePass
		return string(user) == "default" && (want == "" || subtle.ConstantTimeCompare(pass, []byte(want)) == 1), nil
	}
	rc, err := c.s.dialRedis(nil)
	if err != nil {
		return false, errReply(errorText(err, true))
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(2 * time.Second))
	raw, err := rc.Do([]byte("AUTH"), []byte(backend.ACLPrefix+string(user)), pass)
	if err != nil {
		return false, errReply(errorText(err, true))
	}
	return bytes.HasPrefix(raw, []byte("+OK")), nil
}

// aclCommand answers ACL's subcommands that involve users.
func (c *conn) aclCommand(name string, args [][]byte) *op {
	prefixed := func(i int) [][]byte {
		out := append([][]byte(nil), args...)
		out[i] = []byte(backend.ACLPrefix + string(args[i]))
		return out
	}
	switch name {
	case "acl|whoami":
		return &op{kind: opReply, reply: resp.AppendBulkString(nil, c.userName())}
	case "acl|setuser":
		if strings.Contains(string(args[2]), " ") {
			return errReply("ERR Usernames can't contain spaces or null characters")
		}
		return c.data(&spec{name: name, class: classWrite}, prefixed(2))
	case "acl|deluser":
		out := append([][]byte(nil), args[:2]...)
		for _, u := range args[2:] {
			if string(u) == "default" {
				return errReply("ERR The 'default' user cannot be removed")
			}
			out = append(out, []byte(backend.ACLPrefix+string(u)))
		}
		return c.data(&spec{name: name, class: classWrite}, out)
	case "acl|getuser":
		return c.aclRead(prefixed(2), nil)
	case "acl|dryrun":
		return c.aclRead(prefixed(2), func(raw []byte) []byte {
			return bytes.Replace(raw, []byte("User '"+backend.ACLPrefix), []byte("User '"), 1)
		})
	case "acl|list":
		return c.aclRead(args, backend.ACLClientLines)
	case "acl|users":
		return c.aclRead(args, func(raw []byte) []byte {
			v, _, err := resp.Parse(raw)
			if err != nil || v.Kind != '*' {
				return raw
			}
			var names []string
			for _, e := range v.Elems {
				if n, ok := strings.CutPrefix(string(e.Str), backend.ACLPrefix); ok {
					names = append(names, n)
				}
			}
			out := resp.AppendArrayLen(nil, len(names))
			for _, n := range names {
				out = resp.AppendBulkString(out, n)
			}
			return out
		})
	}
	return errReply(unknownCommand(args))
}

// aclRead runs an ACL read on the local redis after a read barrier.
func (c *conn) aclRead(args [][]byte, fix fixer) *op {
	n, refused := c.serving(args, true)
	if refused != nil {
		return refused
	}
	o := c.route(n, &spec{name: "acl", class: classRead}, args)
	o.fix = fix
	return o
}
