package proxy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// SLOWLOG and LATENCY in clients' terms (cmdstats.go): the slow log holds
// the commands clients sent to this node whose reply took at least
// slowlog-log-slower-than, with their own arguments; the latency monitor
// records the command and fast-command events past
// latency-monitor-threshold. Both settings are redis's, set through the log
// with CONFIG SET.

type slowEntry struct {
	id         int64
	unix       int64
	usec       int64
	args       [][]byte
	addr, name string
}

type slowlog struct {
	next    int64
	entries []slowEntry // newest last
}

// slowlogArgs are redis's bounds on what a slow log entry keeps.
const (
	slowlogMaxArgs = 32
	slowlogMaxArg  = 128
)

func (k *statsKeeper) logSlow(now time.Time, usec int64, args [][]byte, c *conn) {
	max := int(k.slowMaxLen.Load())
	if max <= 0 || len(args) == 0 {
		return
	}
	e := slowEntry{unix: now.Unix(), usec: usec}
	n := min(len(args), slowlogMaxArgs)
	for i := range n {
		a := args[i]
		if i == slowlogMaxArgs-1 && len(args) > slowlogMaxArgs {
			e.args = append(e.args, fmt.Appendf(nil, "... (%d more arguments)", len(args)-slowlogMaxArgs+1))
			break
		}
		if len(a) > slowlogMaxArg {
			a = fmt.Appendf(append([]byte(nil), a[:slowlogMaxArg]...), "... (%d more bytes)", len(a)-slowlogMaxArg)
		} else {
			a = append([]byte(nil), a...)
		}
		e.args = append(e.args, a)
	}
	if c != nil {
		e.addr = c.info.addr
		c.info.mu.Lock()
		e.name = c.info.state.name
		c.info.mu.Unlock()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	e.id = k.slow.next
	k.slow.next++
	k.slow.entries = append(k.slow.entries, e)
	if over := len(k.slow.entries) - max; over > 0 {
		k.slow.entries = slices.Delete(k.slow.entries, 0, over)
	}
}

// slowlogCommand answers SLOWLOG GET, LEN and RESET.
func (c *conn) slowlogCommand(name string, args [][]byte) *op {
	k := c.s.stats
	switch name {
	case "slowlog|len":
		k.mu.Lock()
		n := len(k.slow.entries)
		k.mu.Unlock()
		return &op{kind: opReply, reply: resp.AppendInt(nil, int64(n))}
	case "slowlog|reset":
		k.mu.Lock()
		k.slow.entries = nil
		k.mu.Unlock()
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	}
	count := 10
	if len(args) > 2 {
		n, err := strconv.Atoi(string(args[2]))
		if err != nil || n < -1 {
			return errReply("ERR count should be greater than or equal to -1")
		}
		count = n
	}
	k.mu.Lock()
	entries := slices.Clone(k.slow.entries)
	k.mu.Unlock()
	slices.Reverse(entries)
	if count >= 0 && count < len(entries) {
		entries = entries[:count]
	}
	b := resp.AppendArrayLen(nil, len(entries))
	for _, e := range entries {
		b = resp.AppendArrayLen(b, 6)
		b = resp.AppendInt(b, e.id)
		b = resp.AppendInt(b, e.unix)
		b = resp.AppendInt(b, e.usec)
		b = resp.AppendArrayLen(b, len(e.args))
		for _, a := range e.args {
			b = resp.AppendBulk(b, a)
		}
		b = resp.AppendBulkString(b, e.addr)
		b = resp.AppendBulkString(b, e.name)
	}
	return &op{kind: opReply, reply: b}
}

// latencyEvent is one event of the latency monitor: its samples, at most
// one a second (the highest), 160 kept, and its all-time high.
type latencyEvent struct {
	samples [][2]int64 // unix seconds, ms
	max     int64
}

const latencySamples = 160

func (k *statsKeeper) latencyEvent(name string, now time.Time, ms int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ev := k.events[name]
	if ev == nil {
		ev = &latencyEvent{}
		k.events[name] = ev
	}
	ev.max = max(ev.max, ms)
	t := now.Unix()
	if n := len(ev.samples); n > 0 && ev.samples[n-1][0] == t {
		ev.samples[n-1][1] = max(ev.samples[n-1][1], ms)
		return
	}
	ev.samples = append(ev.samples, [2]int64{t, ms})
	if len(ev.samples) > latencySamples {
		ev.samples = ev.samples[1:]
	}
}

// latencyCommand answers LATENCY LATEST, HISTORY, RESET, GRAPH, DOCTOR and
// HISTOGRAM.
func (c *conn) latencyCommand(name string, args [][]byte) *op {
	k := c.s.stats
	k.mu.Lock()
	defer k.mu.Unlock()
	switch name {
	case "latency|latest":
		names := sortedKeys(k.events)
		b := resp.AppendArrayLen(nil, len(names))
		for _, n := range names {
			ev := k.events[n]
			last := ev.samples[len(ev.samples)-1]
			b = resp.AppendArrayLen(b, 4)
			b = resp.AppendBulkString(b, n)
			b = resp.AppendInt(b, last[0])
			b = resp.AppendInt(b, last[1])
			b = resp.AppendInt(b, ev.max)
		}
		return &op{kind: opReply, reply: b}
	case "latency|history":
		ev := k.events[strings.ToLower(string(args[2]))]
		if ev == nil {
			return &op{kind: opReply, reply: resp.AppendArrayLen(nil, 0)}
		}
		b := resp.AppendArrayLen(nil, len(ev.samples))
		for _, s := range ev.samples {
			b = resp.AppendArrayLen(b, 2)
			b = resp.AppendInt(b, s[0])
			b = resp.AppendInt(b, s[1])
		}
		return &op{kind: opReply, reply: b}
	case "latency|reset":
		n := 0
		if len(args) == 2 {
			n = len(k.events)
			clear(k.events)
		}
		for _, a := range args[2:] {
			if _, ok := k.events[strings.ToLower(string(a))]; ok {
				delete(k.events, strings.ToLower(string(a)))
				n++
			}
		}
		return &op{kind: opReply, reply: resp.AppendInt(nil, int64(n))}
	case "latency|graph":
		ev := k.events[strings.ToLower(string(args[2]))]
		if ev == nil {
			return errReply(fmt.Sprintf("ERR No samples available for event '%s'", args[2]))
		}
		return &op{kind: opReply, reply: resp.AppendVerbatim(nil, latencyGraph(string(args[2]), ev), c.client.resp3)}
	case "latency|doctor":
		return &op{kind: opReply, reply: resp.AppendVerbatim(nil, latencyDoctor(k.events), c.client.resp3)}
	case "latency|histogram":
		return &op{kind: opReply, reply: c.latencyHistogram(args[2:])}
	}
	return errReply(unknownCommand(args))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// latencyGraph draws an event's samples, newest right, as redis's LATENCY
// GRAPH does: a column per sample, its height the latency.
func latencyGraph(name string, ev *latencyEvent) string {
	lo, hi := ev.samples[0][1], ev.samples[0][1]
	for _, s := range ev.samples {
		lo, hi = min(lo, s[1]), max(hi, s[1])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s - high %d ms, low %d ms (all time high %d ms)\n", name, hi, lo, ev.max)
	b.WriteString(strings.Repeat("-", 80) + "\n")
	const rows = 4
	for r := rows; r >= 1; r-- {
		for _, s := range ev.samples {
			level := int64(rows)
			if hi > lo {
				level = 1 + (s[1]-lo)*(rows-1)/(hi-lo)
			}
			switch {
			case level == int64(r):
				b.WriteByte('#')
			case level > int64(r):
				b.WriteByte('|')
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// latencyDoctor is LATENCY DOCTOR's report.
func latencyDoctor(events map[string]*latencyEvent) string {
	if len(events) == 0 {
		return "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep tonight.\n"
	}
	var b strings.Builder
	b.WriteString("Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?\n\n")
	for i, n := range sortedKeys(events) {
		ev := events[n]
		var sum int64
		for _, s := range ev.samples {
			sum += s[1]
		}
		fmt.Fprintf(&b, "%d. %s: %d latency spikes (average %dms, mean deviation 0ms, period %d sec). Worst all time event %dms.\n",
			i+1, n, len(ev.samples), sum/int64(len(ev.samples)), 0, ev.max)
	}
	b.WriteString("\nI have a few advices for you:\n\n- The commands that take longest here are measured from their arrival at raftproxy to their reply, raft commit included: see SLOWLOG GET and INFO commandstats.\n")
	return b.String()
}

// latencyHistogram is LATENCY HISTOGRAM: each command's calls and the
// cumulative histogram of their latencies.
func (c *conn) latencyHistogram(names [][]byte) []byte {
	k := c.s.stats
	var stats []*cmdStat
	if len(names) == 0 {
		for _, st := range k.sortedStats() {
			if h := st.hist.Load(); h != nil && h.total.Load() > 0 {
				stats = append(stats, st)
			}
		}
	} else {
		seen := map[string]bool{}
		for _, n := range names {
			st := k.byName[strings.ToLower(string(n))]
			if st == nil || seen[st.name] {
				continue
			}
			seen[st.name] = true
			if h := st.hist.Load(); h != nil && h.total.Load() > 0 {
				stats = append(stats, st)
			}
		}
	}
	b := resp.AppendMapLen(nil, len(stats), c.client.resp3)
	for _, st := range stats {
		h := st.hist.Load()
		steps := h.cdf()
		b = resp.AppendBulkString(b, st.name)
		b = resp.AppendMapLen(b, 2, c.client.resp3)
		b = resp.AppendBulkString(b, "calls")
		b = resp.AppendInt(b, h.total.Load())
		b = resp.AppendBulkString(b, "histogram_usec")
		b = resp.AppendMapLen(b, len(steps), c.client.resp3)
		for _, s := range steps {
			b = resp.AppendInt(b, s[0])
			b = resp.AppendInt(b, s[1])
		}
	}
	return b
}

// refreshSettings reads the local redis's slow log and latency settings
// (at start, and after every applied CONFIG SET).
func (s *Server) refreshSettings(ctx context.Context) {
	rc, err := s.dialRedis(nil)
	if err != nil {
		return
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(2 * time.Second))
	v, err := rc.DoValue("CONFIG", "GET", "*")
	if err != nil {
		return
	}
	k := s.stats
	for i := 0; i+1 < len(v.Elems); i += 2 {
		val := string(v.Elems[i+1].Str)
		n, nerr := strconv.ParseInt(val, 10, 64)
		switch string(v.Elems[i].Str) {
		case "slowlog-log-slower-than":
			if nerr == nil {
				k.slowerThan.Store(n)
			}
		case "slowlog-max-len":
			if nerr == nil {
				k.slowMaxLen.Store(n)
			}
		case "latency-monitor-threshold":
			if nerr == nil {
				k.latencyMs.Store(n)
			}
		case "latency-tracking":
			k.tracking.Store(val == "yes")
		case "latency-tracking-info-percentiles":
			var ps []float64
			for _, f := range strings.Fields(val) {
				if p, err := strconv.ParseFloat(f, 64); err == nil {
					ps = append(ps, p)
				}
			}
			k.percentilesMu.Lock()
			k.percentiles = ps
			k.percentilesMu.Unlock()
		}
	}
}
