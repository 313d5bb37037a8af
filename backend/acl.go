package backend

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// ACL users are replicated state: ACL SETUSER and ACL DELUSER go through
// the log, and every node's redis keeps the users, so redis's own ACL engine
// decides what each may do (the proxy asks it with ACL DRYRUN and AUTH).
// A client's user X is redis's user ACLPrefix+X, so that clients never touch
// the users raftproxy's own connections to redis log in as (redis's
// default). Redis keeps users neither in an RDB nor anywhere a rebuild finds
// them, so snapshots carry them (machineState.ACL), and a redis emptied to
// replay the log from its start gets the initial default user, as every
// node had at the log's start: on, ~* &* +@all, with --requirepass as its
// password, or nopass.

// ACLPrefix starts the redis user name of every client user.
const ACLPrefix = "raftproxy:"

// SetDefaultPassword sets the initial password of the clients' default user
// (before the node starts): --requirepass, the same on every member.
func (s *StateMachine) SetDefaultPassword(password string) { s.defaultPass = password }

// defaultUserRules are the rules of the default user at the log's start.
func (s *StateMachine) defaultUserRules() []string {
	pass := "nopass"
	if s.defaultPass != "" {
		pass = ">" + s.defaultPass
	}
	return []string{"on", pass, "~*", "&*", "+@all"}
}

// aclList returns the client users as ACL LIST lines, sorted by name.
func (s *StateMachine) aclList() ([]string, error) {
	v, err := s.conn.DoValue("ACL", "LIST")
	if err != nil {
		return nil, fmt.Errorf("ACL LIST: %w", err)
	}
	var out []string
	for _, e := range v.Elems {
		if line := string(e.Str); strings.HasPrefix(line, "user "+ACLPrefix) {
			out = append(out, line)
		}
	}
	return out, nil
}

// restoreACL makes the client users exactly those of lines (ACL LIST
// lines); with none, the initial default user.
func (s *StateMachine) restoreACL(ctx context.Context, lines []string) error {
	users, err := s.conn.DoValue("ACL", "USERS")
	if err != nil {
		return fmt.Errorf("ACL USERS: %w", err)
	}
	del := []string{"ACL", "DELUSER"}
	for _, u := range users.Elems {
		if strings.HasPrefix(string(u.Str), ACLPrefix) {
			del = append(del, string(u.Str))
		}
	}
	if len(del) > 2 {
		if _, err := s.conn.DoValue(del...); err != nil {
			return err
		}
	}
	if len(lines) == 0 {
		_, err := s.conn.DoValue(append([]string{"ACL", "SETUSER", ACLPrefix + "default"}, s.defaultUserRules()...)...)
		return err
	}
	for _, line := range lines {
		if err := ctx.Err(); err != nil {
			return err
		}
		f := aclFields(strings.TrimPrefix(line, "user "))
		if len(f) == 0 {
			continue
		}
		// Every client user was deleted above: this makes each anew.
		if _, err := s.conn.DoValue(append([]string{"ACL", "SETUSER", f[0]}, f[1:]...)...); err != nil {
			return fmt.Errorf("restore user %s: %w", f[0], err)
		}
	}
	return nil
}

// aclFields splits an ACL LIST line's rules on spaces, keeping a selector
// "(~k* +get)" whole.
func aclFields(line string) []string {
	var out []string
	depth, start := 0, -1
	for i, ch := range line {
		switch {
		case ch == '(':
			depth++
		case ch == ')':
			depth--
		}
		if ch == ' ' && depth == 0 {
			if start >= 0 {
				out = append(out, line[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, line[start:])
	}
	return out
}

// ACLClientLines turns redis's ACL LIST reply into the clients' view: their
// users only, under their own names.
func ACLClientLines(raw []byte) []byte {
	v, rest, err := resp.Parse(raw)
	if err != nil || len(rest) != 0 || v.Kind != '*' {
		return raw
	}
	var lines [][]byte
	for _, e := range v.Elems {
		if l, ok := bytes.CutPrefix(e.Str, []byte("user "+ACLPrefix)); ok {
			lines = append(lines, append([]byte("user "), l...))
		}
	}
	out := resp.AppendArrayLen(nil, len(lines))
	for _, l := range lines {
		out = resp.AppendBulk(out, l)
	}
	return out
}
