package proxy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// Connection-level commands: HELLO, AUTH, RESET and CLIENT. They describe
// and change the client's connection to the proxy, never the proxy's own
// connections to its redis: those are shared (the read pipe, the applier)
// or private plumbing, and a client must not see or kill them.

// clientState is the connection state these commands change. Only the
// reader goroutine touches it; ops carry what the writer needs (resp3,
// silent).
type clientState struct {
	resp3            bool
	cmd              string // the last command's name, for CLIENT LIST
	name             string
	libName, libVer  string
	noEvict, noTouch bool
	replyOff         bool // CLIENT REPLY OFF
	skipThis         bool // CLIENT REPLY SKIP was the previous command
	skipNext         bool // CLIENT REPLY SKIP is the current command
}

// silent reports whether the current command's reply is suppressed.
func (s *clientState) silent() bool { return s.replyOff || s.skipThis }

// clientInfo is the copy of a connection's state that CLIENT LIST on other
// connections reads.
type clientInfo struct {
	addr, laddr string
	fd          int
	created     time.Time

	mu    sync.Mutex
	state clientState
	db    int
	multi int // commands queued since MULTI, -1 outside MULTI
	last  time.Time
	// What CLIENT LIST shows of tracking, subscriptions and the user.
	tracking, bcast bool
	redir           int64
	subs            [3]int
	user            string
}

// setTracking records the connection's tracking for CLIENT LIST.
func (i *clientInfo) setTracking(on bool, redirect uint64, bcast bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.tracking, i.bcast, i.redir = on, bcast, -1
	if on {
		i.redir = int64(redirect)
	}
}

// initClient sets up a new connection's client state.
func (c *conn) initClient(nc net.Conn) {
	c.client.cmd = "NULL" // as redis shows a client that has sent nothing
	c.info.init(nc)
}

func (i *clientInfo) init(nc net.Conn) {
	i.addr, i.laddr = nc.RemoteAddr().String(), nc.LocalAddr().String()
	if nc.RemoteAddr().Network() == "unix" {
		i.addr = nc.LocalAddr().String() + ":0" // as redis shows unix socket clients
	}
	i.fd = -1
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { i.fd = int(fd) })
		}
	}
	i.created = time.Now()
	i.last = i.created
	i.multi = -1
	i.state.cmd = "NULL"
}

// afterCommand ends a command: CLIENT REPLY SKIP applies to the command
// after it, and other connections' CLIENT LIST sees the new state.
func (c *conn) afterCommand() {
	c.client.skipThis, c.client.skipNext = c.client.skipNext, false
	c.syncInfo()
	c.syncPushProtocol()
	c.setOutputLimit()
}

func (c *conn) syncInfo() {
	multi := -1
	if c.tx != nil {
		multi = len(c.tx.cmds)
	}
	c.info.mu.Lock()
	c.info.state, c.info.db, c.info.multi, c.info.last = c.client, c.db, multi, c.cmdStart
	c.info.mu.Unlock()
}

func okReply() *op { return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")} }

func (c *conn) nameReply() []byte {
	if c.client.name == "" {
		return resp.AppendNull(nil, c.client.resp3)
	}
	return resp.AppendBulkString(nil, c.client.name)
}

// checkClientName returns redis's error for a name it would refuse.
func checkClientName(name []byte) string {
	if !printable(name) {
		return "ERR Client names cannot contain spaces, newlines or special characters."
	}
	return ""
}

// printable is redis's rule for names and library attributes: no spaces,
// newlines or other characters outside '!'..'~'.
func printable(b []byte) bool {
	for _, ch := range b {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

func (c *conn) setInfo(args [][]byte) *op {
	attr, val := args[2], args[3]
	var dst *string
	switch strings.ToLower(string(attr)) {
	case "lib-name":
		dst = &c.client.libName
	case "lib-ver":
		dst = &c.client.libVer
	default:
		return errReply(fmt.Sprintf("ERR Unrecognized option '%.128s'", attr))
	}
	if !printable(val) {
		return errReply(fmt.Sprintf("ERR %.128s cannot contain spaces, newlines or special characters.", attr))
	}
	*dst = string(val)
	return okReply()
}

func onOff(b []byte) (on, ok bool) {
	switch strings.ToLower(string(b)) {
	case "on":
		return true, true
	case "off":
		return false, true
	}
	return false, false
}

// clientReply is CLIENT REPLY ON|OFF|SKIP, done by the proxy: commands run
// as usual and only their replies are dropped. OFF and SKIP have no reply.
func (c *conn) clientReply(args [][]byte) {
	switch strings.ToLower(string(args[2])) {
	case "on":
		c.client.replyOff, c.client.skipThis, c.client.skipNext = false, false, false
		c.emit(okReply())
	case "off":
		c.client.replyOff = true
	case "skip":
		if !c.client.replyOff {
			c.client.skipNext = true
		}
	default:
		c.emit(errReply(errSyntax))
	}
}

// infoLine is the connection's line of CLIENT LIST, in redis 7.2's field
// order. Counters of redis's buffers have no meaning for the proxy and are
// 0; there is no pub/sub, tracking or ACL user but the default one.
func (c *conn) infoLine(now time.Time, self bool) string {
	i := &c.info
	i.mu.Lock()
	st, db, multi, last := i.state, i.db, i.multi, i.last
	tracking, bcast, redir, subs, user := i.tracking, i.bcast, i.redir, i.subs, i.user
	i.mu.Unlock()
	flags := ""
	if subs[0]+subs[1]+subs[2] > 0 {
		flags += "P"
	}
	if multi >= 0 {
		flags += "x"
	}
	if st.noEvict {
		flags += "e"
	}
	if st.noTouch {
		flags += "T"
	}
	if tracking {
		flags += "t"
		if bcast {
			flags += "B"
		}
	}
	if c.s != nil && c.s.blocked.isBlocked(c.id) {
		flags += "b"
	}
	if flags == "" {
		flags = "N"
	}
	proto := 2
	if st.resp3 {
		proto = 3
	}
	if user == "" {
		user = "default"
	}
	if !tracking {
		redir = -1
	}
	// qbuf is, as in redis, the query buffer: the command being run, for
	// the connection that asks (CLIENT LIST, CLIENT INFO), empty for others.
	qbuf := 0
	if self {
		qbuf = respLen(c.cmdArgs)
	}
	// lib-name and lib-ver are redis 7.2's; raftproxy takes CLIENT SETINFO
	// (go-redis sends it) whatever the local redis's version.
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=%d name=%s age=%d idle=%d flags=%s db=%d sub=%d psub=%d ssub=%d multi=%d "+
		"qbuf=%d qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=%s "+
		"redir=%d resp=%d lib-name=%s lib-ver=%s\n",
		c.id, i.addr, i.laddr, i.fd, st.name, int64(now.Sub(i.created)/time.Second), int64(now.Sub(last)/time.Second),
		flags, db, subs[0], subs[1], subs[2], multi, qbuf, st.cmd, user, redir, proto, st.libName, st.libVer)
}

// setSubs records the connection's subscription counts for CLIENT LIST.
func (i *clientInfo) setSubs(channels, patterns, shards int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.subs = [3]int{channels, patterns, shards}
}

// clients returns the server's client connections in id order, as redis
// lists them.
func (s *Server) clients() []*conn {
	s.mu.Lock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *conn) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return out
}

// clientType checks a TYPE argument; all proxy clients are "normal" ones
// (no replicas, masters or pub/sub clients).
func clientType(b []byte) (normal bool, errText string) {
	switch strings.ToLower(string(b)) {
	case "normal":
		return true, ""
	case "master", "replica", "slave", "pubsub":
		return false, ""
	}
	return false, fmt.Sprintf("ERR Unknown client type '%.128s'", b)
}

// clientList is CLIENT LIST [TYPE type | ID id [id ...]].
func (c *conn) clientList(args [][]byte) *op {
	c.syncInfo()
	match := func(*conn) bool { return true }
	switch {
	case len(args) == 2:
	case len(args) == 4 && strings.EqualFold(string(args[2]), "type"):
		normal, e := clientType(args[3])
		if e != "" {
			return errReply(e)
		}
		match = func(*conn) bool { return normal }
	case len(args) >= 4 && strings.EqualFold(string(args[2]), "id"):
		ids := map[uint64]bool{}
		for _, a := range args[3:] {
			id, ok := redisInt(a)
			if !ok {
				return errReply("ERR Invalid client ID")
			}
			if id > 0 {
				ids[uint64(id)] = true
			}
		}
		match = func(x *conn) bool { return ids[x.id] }
	default:
		return errReply(errSyntax)
	}
	var b strings.Builder
	now := time.Now()
	for _, x := range c.s.clients() {
		if match(x) {
			b.WriteString(x.infoLine(now, x == c))
		}
	}
	return &op{kind: opReply, reply: resp.AppendVerbatim(nil, b.String(), c.client.resp3)}
}

// killFilter is the conjunction of CLIENT KILL's filters.
type killFilter struct {
	id          uint64
	addr, laddr string
	hasAddr     bool
	hasLaddr    bool
	none        bool // a TYPE no proxy client has
	skipMe      bool
}

func (f *killFilter) match(self, x *conn) bool {
	switch {
	case f.none, f.skipMe && x == self, f.id != 0 && x.id != f.id:
		return false
	case f.hasAddr && x.info.addr != f.addr, f.hasLaddr && x.info.laddr != f.laddr:
		return false
	}
	return true
}

// clientKill is CLIENT KILL addr:port (old form: +OK, or an error when no
// client has that address) and CLIENT KILL <filter> <value> ... (the
// number of clients killed). It closes proxy client connections only. The
// caller's own connection, when it matches, is closed after the reply.
func (c *conn) clientKill(args [][]byte) (reply *op, self bool) {
	f := killFilter{skipMe: true}
	old := len(args) == 3
	if old {
		f = killFilter{addr: string(args[2]), hasAddr: true}
	} else {
		for i := 2; i < len(args); i += 2 {
			if i+1 >= len(args) {
				return errReply(errSyntax), false
			}
			opt, val := strings.ToLower(string(args[i])), args[i+1]
			switch opt {
			case "id":
				id, ok := redisInt(val)
				if !ok || id <= 0 {
					return errReply("ERR client-id should be greater than 0"), false
				}
				f.id = uint64(id)
			case "type":
				normal, e := clientType(val)
				if e != "" {
					return errReply(e), false
				}
				f.none = f.none || !normal
			case "user":
				if string(val) != "default" {
					return errReply(fmt.Sprintf("ERR No such user '%.128s'", val)), false
				}
			case "addr":
				f.addr, f.hasAddr = string(val), true
			case "laddr":
				f.laddr, f.hasLaddr = string(val), true
			case "skipme":
				switch strings.ToLower(string(val)) {
				case "yes":
					f.skipMe = true
				case "no":
					f.skipMe = false
				default:
					return errReply(errSyntax), false
				}
			default:
				return errReply(errSyntax), false
			}
		}
	}
	killed := 0
	for _, x := range c.s.clients() {
		if !f.match(c, x) {
			continue
		}
		killed++
		if x == c {
			self = true
			continue
		}
		// Its reader then fails and the connection ends as if the client
		// had gone; commands it already sent finish without a reply.
		x.nc.Close()
	}
	if old {
		if killed == 0 {
			return errReply("ERR No such client"), false
		}
		return okReply(), self
	}
	return &op{kind: opReply, reply: resp.AppendInt(nil, int64(killed))}, self
}

// unblock is CLIENT UNBLOCK id [TIMEOUT|ERROR]: a connection of this node
// waiting in a blocking command stops waiting (blocking.go); 0 for any
// other, as redis gives for a client that is not blocked.
func (c *conn) unblock(args [][]byte) *op {
	if len(args) > 4 {
		return errReply("ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.")
	}
	id, ok := redisInt(args[2])
	if !ok {
		return errReply(errNotInteger)
	}
	asErr := len(args) == 4 && strings.EqualFold(string(args[3]), "error")
	if len(args) == 4 && !asErr && !strings.EqualFold(string(args[3]), "timeout") {
		return errReply("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
	}
	if id > 0 && c.s.blocked.unblockConn(uint64(id), asErr) {
		return &op{kind: opReply, reply: resp.AppendInt(nil, 1)}
	}
	return &op{kind: opReply, reply: resp.AppendInt(nil, 0)}
}

// redisInt parses an integer as redis's string2ll does: an optional minus,
// no plus sign, no leading zeros, no spaces, within int64.
func redisInt(b []byte) (int64, bool) {
	s := string(b)
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || digits[0] < '0' || digits[0] > '9' || (digits[0] == '0' && len(digits) > 1) || (s == "-0") {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// clientSubcommands are CLIENT subcommands raftproxy answers itself that
// an older local redis may not know (SETINFO and NO-TOUCH are redis 7.2's;
// go-redis sends CLIENT SETINFO on every new connection).
var clientSubcommands = []*spec{
	{name: "client|setinfo", arity: 4, class: classProxy},
	{name: "client|no-touch", arity: 3, class: classProxy},
}

// addClientSubcommands adds clientSubcommands to t's CLIENT where missing.
func addClientSubcommands(t table) {
	client := t["client"]
	if client == nil || client.subs == nil {
		return
	}
	for _, s := range clientSubcommands {
		_, sub, _ := strings.Cut(s.name, "|")
		if _, ok := client.subs[sub]; !ok {
			cp := *s
			client.subs[sub] = &cp
		}
	}
}

// respLen is the size of args as a RESP array command.
func respLen(args [][]byte) int {
	n := len(strconv.Itoa(len(args))) + 3
	for _, a := range args {
		n += len(strconv.Itoa(len(a))) + 3 + len(a) + 2
	}
	return n
}
