// Package backend is everything that talks to the local stock redis-server:
// connections, the state machine that applies the log to it, and the
// supervisor of a redis-server raftproxy starts itself.
package backend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// Conn is one connection to the local redis. It is not safe for concurrent use.
type Conn struct {
	nc  net.Conn
	r   *resp.Reader
	w   *bufio.Writer
	buf []byte
	db  int
	// resp3: the connection speaks RESP3 (a HELLO 3 was sent). A new
	// connection speaks RESP2.
	resp3 bool
}

// network tells a unix socket path from a host:port.
func network(addr string) string {
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "./") || strings.HasSuffix(addr, ".sock") {
		return "unix"
	}
	return "tcp"
}

// Dial connects to the redis at addr (host:port or a unix socket path).
func Dial(ctx context.Context, addr string) (*Conn, error) {
	return DialTLS(ctx, addr, nil)
}

// DialTLS is Dial over TLS with cfg; a nil cfg dials in the clear.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Conn, error) {
	return dial(ctx, addr, cfg, nil)
}

// dial connects to addr, over TLS with cfg, through wrap when it is set.
func dial(ctx context.Context, addr string, cfg *tls.Config, wrap func(net.Conn) net.Conn) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network(addr), addr)
	if err != nil {
		return nil, fmt.Errorf("connect to redis at %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if cfg != nil {
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	return &Conn{nc: nc, r: resp.NewReader(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10)}, nil
}

// DialAuth is Dial followed, when password is set, by AUTH password: for a
// redis with requirepass, and for another raftproxy node, whose members
// share one --requirepass.
func DialAuth(ctx context.Context, addr, password string) (*Conn, error) {
	return DialTLSAuth(ctx, addr, nil, password)
}

// DialTLSAuth is DialTLS followed by AUTH as DialAuth: another member's
// client port may speak TLS and require the cluster's password.
func DialTLSAuth(ctx context.Context, addr string, cfg *tls.Config, password string) (*Conn, error) {
	return dialAuth(ctx, addr, cfg, password, nil)
}

func dialAuth(ctx context.Context, addr string, cfg *tls.Config, password string, wrap func(net.Conn) net.Conn) (*Conn, error) {
	c, err := dial(ctx, addr, cfg, wrap)
	if err != nil || password == "" {
		return c, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	v, err := c.DoValue("AUTH", password)
	if err == nil && (v.Kind != '+' || string(v.Str) != "OK") {
		err = fmt.Errorf("unexpected reply %q", v.Str)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("AUTH to %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Write buffers one command.
func (c *Conn) Write(args [][]byte) error {
	c.buf = resp.AppendCommand(c.buf[:0], args...)
	_, err := c.w.Write(c.buf)
	return err
}

// Send buffers args to run in database db, in RESP3 when resp3 is set,
// preceded by the SELECT and HELLO the connection needs first. It returns
// how many replies those put ahead of args' own, for Receive. The
// switches happen only where two neighbours differ, so a run of commands
// of one database and protocol costs nothing more.
func (c *Conn) Send(db int, resp3 bool, args [][]byte) (skip int, err error) {
	sel, err := c.selectDB(db)
	if err != nil {
		return 0, err
	}
	hello, err := c.protocol(resp3)
	if err != nil {
		return 0, err
	}
	if err := c.Write(args); err != nil {
		return 0, err
	}
	return b2i(sel) + b2i(hello), nil
}

// Receive appends to dst the reply of a command Send buffered, after the
// skip replies ahead of it. Those (SELECT's, HELLO's) must not be errors:
// the connection would not be in the database or protocol it believes.
func (c *Conn) Receive(dst []byte, skip int) ([]byte, error) {
	start := len(dst)
	for range skip {
		var err error
		if dst, err = c.r.ReadReply(dst[:start]); err != nil {
			return dst[:start], err
		}
		if len(dst) == start || dst[start] == '-' || dst[start] == '!' {
			return dst[:start], fmt.Errorf("redis refused to switch database or protocol: %q", dst[start:])
		}
	}
	return c.r.ReadReply(dst[:start])
}

// RESP3 reports whether the connection speaks RESP3 now: a command sent
// in the protocol it speaks needs no switch.
func (c *Conn) RESP3() bool { return c.resp3 }

// DoIn runs one command in database db and returns its raw reply.
func (c *Conn) DoIn(db int, args ...[]byte) ([]byte, error) {
	skip, err := c.Send(db, c.resp3, args)
	if err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return c.Receive(nil, skip)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// selectDB buffers a SELECT when db differs from the connection's
// database, and reports whether it did.
func (c *Conn) selectDB(db int) (bool, error) {
	if db == c.db {
		return false, nil
	}
	c.buf = resp.AppendCommandStrings(c.buf[:0], "SELECT", strconv.Itoa(db))
	if _, err := c.w.Write(c.buf); err != nil {
		return false, err
	}
	c.db = db
	return true, nil
}

var (
	cmdHello2 = resp.AppendCommandStrings(nil, "HELLO", "2")
	cmdHello3 = resp.AppendCommandStrings(nil, "HELLO", "3")
)

// protocol buffers a HELLO 2 or HELLO 3 when the connection does not speak
// the protocol asked for (RESP3 when resp3 is set), and reports whether it
// did. The switch changes only how redis encodes replies, never data.
func (c *Conn) protocol(resp3 bool) (bool, error) {
	if resp3 == c.resp3 {
		return false, nil
	}
	cmd := cmdHello2
	if resp3 {
		cmd = cmdHello3
	}
	if _, err := c.w.Write(cmd); err != nil {
		return false, err
	}
	c.resp3 = resp3
	return true, nil
}

// Flush sends buffered commands.
func (c *Conn) Flush() error { return c.w.Flush() }

// ReadReply appends the next raw reply to dst.
func (c *Conn) ReadReply(dst []byte) ([]byte, error) { return c.r.ReadReply(dst) }

// SetDeadline bounds the next reads and writes.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Do runs one command and returns its raw reply.
func (c *Conn) Do(args ...[]byte) ([]byte, error) {
	if err := c.Write(args); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return c.r.ReadReply(nil)
}

// DoValue runs one command and decodes its reply; a redis error reply is
// returned as an error.
func (c *Conn) DoValue(args ...string) (resp.Value, error) {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	raw, err := c.Do(bs...)
	if err != nil {
		return resp.Value{}, fmt.Errorf("redis %s: %w", args[0], err)
	}
	v, _, err := resp.Parse(raw)
	if err != nil {
		return v, fmt.Errorf("redis %s: %w", args[0], err)
	}
	if v.IsError() {
		return v, fmt.Errorf("redis %s: %s", args[0], v.Str)
	}
	return v, nil
}

// ErrNoRunID is returned when INFO server has no run_id line.
var ErrNoRunID = errors.New("redis INFO server has no run_id")

// RunID returns the redis server's run_id, which changes on every restart.
func (c *Conn) RunID() (string, error) {
	v, err := c.DoValue("INFO", "server")
	if err != nil {
		return "", err
	}
	id := InfoField(v.Str, "run_id")
	if id == "" {
		return "", ErrNoRunID
	}
	return id, nil
}

// InfoField returns the value of a key:value line of an INFO reply.
func InfoField(info []byte, key string) string {
	for line := range bytes.SplitSeq(info, []byte("\n")) {
		k, v, ok := bytes.Cut(bytes.TrimRight(line, "\r"), []byte(":"))
		if ok && string(k) == key {
			return string(v)
		}
	}
	return ""
}
