package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/resp"
)

// MONITOR shows the commands this node's clients send, as they arrive, in
// redis's format: +<unix time> [<db> <client addr>] "arg" "arg"... The local
// redis would show only the applier's rewritten commands, and every node's
// writes. A monitoring client gets its lines through the same queue as a
// subscriber's messages (broker.go), bounded alike.

// monitors are the node's monitoring connections.
type monitors struct {
	n    atomic.Int32 // how many: dispatch formats nothing while 0
	mu   sync.Mutex
	subs map[*pubsub.Subscriber]struct{}
}

func (m *monitors) add(s *pubsub.Subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs == nil {
		m.subs = map[*pubsub.Subscriber]struct{}{}
	}
	if _, ok := m.subs[s]; !ok {
		m.subs[s] = struct{}{}
		m.n.Add(1)
	}
}

func (m *monitors) remove(s *pubsub.Subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.subs[s]; ok {
		delete(m.subs, s)
		m.n.Add(-1)
	}
}

// feed sends one command's line to every monitor.
func (m *monitors) feed(line []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		s.PushFrame(line)
	}
}

// monitorCommand puts the connection in monitor mode.
func (c *conn) monitorCommand() *op {
	if c.monitoring {
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	}
	c.monitoring = true
	s := c.subscriber()
	m := &c.s.monitors
	return &op{kind: opPubSub, act: func() []byte {
		m.add(s)
		return resp.AppendSimple(nil, "OK")
	}}
}

// monitorGate is redis's rule for a monitoring client: nothing that reads
// or writes keys.
func (c *conn) monitorGate(sp *spec) *op {
	if !c.monitoring || (sp.class != classRead && sp.class != classWrite) {
		return nil
	}
	return c.rejectReply("ERR Replica can't interact with the keyspace")
}

// stopMonitoring ends monitor mode (RESET, a closed connection).
func (c *conn) stopMonitoring() {
	if !c.monitoring {
		return
	}
	c.monitoring = false
	if s := c.ps.sub.Load(); s != nil {
		c.s.monitors.remove(s)
	}
}

// feedMonitors shows a command to the monitors, unless redis keeps it out
// of MONITOR (skip_monitor); passwords are redacted as redis does.
func (c *conn) feedMonitors(sp *spec, args [][]byte) {
	if c.s.monitors.n.Load() == 0 || (sp != nil && sp.skipMonitor) {
		return
	}
	now := time.Now()
	b := make([]byte, 0, 64+16*len(args))
	b = append(b, '+')
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, '.')
	us := strconv.Itoa(now.Nanosecond() / 1000)
	b = append(b, strings.Repeat("0", 6-len(us))...)
	b = append(b, us...)
	b = append(b, " ["...)
	b = strconv.AppendInt(b, int64(c.db), 10)
	b = append(b, ' ')
	b = append(b, c.info.addr...)
	b = append(b, ']')
	redact := redacted(args)
	for i, a := range args {
		b = append(b, ' ')
		if redact[i] {
			b = append(b, `"(redacted)"`...)
			continue
		}
		b = appendRepr(b, a)
	}
	c.s.monitors.feed(append(b, '\r', '\n'))
}

// redacted marks the arguments redis hides from MONITOR: AUTH's, HELLO's
// after AUTH, MIGRATE's AUTH and AUTH2 passwords.
func redacted(args [][]byte) []bool {
	out := make([]bool, len(args))
	name := strings.ToLower(string(args[0]))
	switch name {
	case "auth":
		for i := 1; i < len(args); i++ {
			out[i] = true
		}
	case "hello", "migrate":
		for i := 1; i < len(args); i++ {
			switch strings.ToLower(string(args[i])) {
			case "auth":
				if name == "hello" {
					for j := i + 1; j < len(args) && j <= i+2; j++ {
						out[j] = true
					}
				} else if i+1 < len(args) {
					out[i+1] = true
				}
			case "auth2":
				for j := i + 1; j < len(args) && j <= i+2; j++ {
					out[j] = true
				}
			}
		}
	}
	return out
}

// appendRepr quotes an argument as redis's sdscatrepr does.
func appendRepr(b, a []byte) []byte {
	b = append(b, '"')
	for _, ch := range a {
		switch ch {
		case '\\', '"':
			b = append(b, '\\', ch)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '\a':
			b = append(b, `\a`...)
		case '\b':
			b = append(b, `\b`...)
		default:
			if ch < 0x20 || ch > 0x7e {
				b = append(b, '\\', 'x', hexDigit(ch>>4), hexDigit(ch&15))
			} else {
				b = append(b, ch)
			}
		}
	}
	return append(b, '"')
}

func hexDigit(n byte) byte { return "0123456789abcdef"[n] }
