package proxy

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Command statistics in clients' terms: INFO commandstats, errorstats and
// latencystats, SLOWLOG and LATENCY describe the commands clients sent to
// this node, with their own names and arguments, counted when the reply is
// written. The local redis only ever sees the applier's rewritten commands
// (an SPOP arrives there as the EVAL that makes it deterministic, and every
// node runs every write), so its own statistics would mislead.
//
// A command's time is from its arrival to its reply, raft included.
// rejected_calls counts commands refused before they ran (arity, NOAUTH,
// NOPERM, -BUSY, refused by raftproxy), failed_calls those that ran and
// answered an error, as redis counts them.

// cmdStat is one command's (or subcommand's) counters.
type cmdStat struct {
	name string
	// fast: LATENCY's fast-command event; noSlowlog: never in SLOWLOG.
	fast, noSlowlog               bool
	calls, usec, rejected, failed atomic.Int64
	hist                          atomic.Pointer[latencyHist]
	histOnce                      sync.Once
}

func (st *cmdStat) histogram() *latencyHist {
	st.histOnce.Do(func() { st.hist.Store(&latencyHist{}) })
	return st.hist.Load()
}

// statsKeeper holds a node's statistics; its map is built once from the
// command table and never changes, so finding a command's counters takes
// no lock.
type statsKeeper struct {
	byName map[string]*cmdStat

	mu     sync.Mutex
	errors map[string]int64 // error replies by their first word
	slow   slowlog
	events map[string]*latencyEvent // LATENCY's command and fast-command

	// The local redis's settings (replicated by CONFIG SET), refreshed after
	// every applied CONFIG SET.
	slowerThan     atomic.Int64 // slowlog-log-slower-than, µs; < 0: off
	slowMaxLen     atomic.Int64
	latencyMs      atomic.Int64 // latency-monitor-threshold, ms; 0: off
	tracking       atomic.Bool  // latency-tracking
	percentilesMu  sync.Mutex
	percentiles    []float64 // latency-tracking-info-percentiles
	totalCommands  atomic.Int64
	totalErrors    atomic.Int64
	rejectedTotals atomic.Int64
}

func newStatsKeeper(t table) *statsKeeper {
	k := &statsKeeper{byName: map[string]*cmdStat{}, errors: map[string]int64{}, events: map[string]*latencyEvent{},
		percentiles: []float64{50, 99, 99.9}}
	k.slowerThan.Store(10000)
	k.slowMaxLen.Store(128)
	k.tracking.Store(true)
	for _, s := range t {
		k.add(s)
	}
	return k
}

func (k *statsKeeper) add(s *spec) {
	k.byName[s.name] = &cmdStat{name: s.name, fast: s.fast, noSlowlog: s.skipSlowlog}
	for _, sub := range s.subs {
		k.add(sub)
	}
}

// stat returns the counters of the command args names (its subcommand's
// when it has one), or nil for a command redis does not know.
func (k *statsKeeper) stat(t table, args [][]byte) *cmdStat {
	if k == nil || len(args) == 0 {
		return nil
	}
	var buf [32]byte
	s, ok := t[string(lowerKey(args[0], buf[:0]))]
	if !ok {
		return nil
	}
	if s.subs != nil && len(args) > 1 {
		if sub, ok := s.subs[string(lowerKey(args[1], buf[:0]))]; ok {
			s = sub
		}
	}
	return k.byName[s.name]
}

// record counts one command whose reply was written at now.
func (k *statsKeeper) record(o *op, now time.Time, c *conn) {
	st := o.stat
	if k == nil {
		return
	}
	errReply := o.failed || o.rejected
	if errReply {
		k.totalErrors.Add(1)
		k.countError(o.errPrefix)
	}
	if st == nil {
		return
	}
	if o.rejected {
		st.rejected.Add(1)
		k.rejectedTotals.Add(1)
		return
	}
	d := time.Duration(0)
	if !o.start.IsZero() {
		d = now.Sub(o.start)
	}
	us := d.Microseconds()
	k.totalCommands.Add(1)
	st.calls.Add(1)
	st.usec.Add(us)
	if o.failed {
		st.failed.Add(1)
	}
	for _, in := range o.inner {
		if in != nil {
			in.calls.Add(1)
			k.totalCommands.Add(1)
		}
	}
	if k.tracking.Load() {
		st.histogram().add(d)
	}
	if t := k.slowerThan.Load(); t >= 0 && us >= t && !st.noSlowlog {
		k.logSlow(now, us, o.orig, c)
	}
	if t := k.latencyMs.Load(); t > 0 && d.Milliseconds() >= t {
		ev := "command"
		if st.fast {
			ev = "fast-command"
		}
		k.latencyEvent(ev, now, d.Milliseconds())
	}
}

func (k *statsKeeper) countError(prefix string) {
	if prefix == "" {
		prefix = "ERR"
	}
	k.mu.Lock()
	k.errors[prefix]++
	k.mu.Unlock()
}

// errorPrefix is the first word of an error reply, as redis counts errors.
func errorPrefix(raw []byte) string {
	if len(raw) < 2 {
		return ""
	}
	body := raw[1:]
	if raw[0] == '!' { // RESP3 blob error: !<len>\r\n<text>
		if i := strings.Index(string(body), "\r\n"); i >= 0 {
			body = body[i+2:]
		}
	}
	end := len(body)
	for i, ch := range body {
		if ch == ' ' || ch == '\r' || ch == '\n' {
			end = i
			break
		}
	}
	return string(body[:end])
}

// reset is CONFIG RESETSTAT.
func (k *statsKeeper) reset() {
	for _, st := range k.byName {
		st.calls.Store(0)
		st.usec.Store(0)
		st.rejected.Store(0)
		st.failed.Store(0)
		if h := st.hist.Load(); h != nil {
			h.reset()
		}
	}
	k.mu.Lock()
	clear(k.errors)
	k.mu.Unlock()
	k.totalCommands.Store(0)
	k.totalErrors.Store(0)
	k.rejectedTotals.Store(0)
}

// commandstats is INFO's Commandstats section.
func (k *statsKeeper) commandstats() string {
	var b strings.Builder
	b.WriteString("# Commandstats\r\n")
	for _, st := range k.sortedStats() {
		calls, rej, failed := st.calls.Load(), st.rejected.Load(), st.failed.Load()
		if calls == 0 && rej == 0 && failed == 0 {
			continue
		}
		usec := st.usec.Load()
		per := 0.0
		if calls > 0 {
			per = float64(usec) / float64(calls)
		}
		fmt.Fprintf(&b, "cmdstat_%s:calls=%d,usec=%d,usec_per_call=%.2f,rejected_calls=%d,failed_calls=%d\r\n",
			st.name, calls, usec, per, rej, failed)
	}
	return b.String()
}

// errorstats is INFO's Errorstats section.
func (k *statsKeeper) errorstats() string {
	k.mu.Lock()
	names := make([]string, 0, len(k.errors))
	for n := range k.errors {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("# Errorstats\r\n")
	for _, n := range names {
		fmt.Fprintf(&b, "errorstat_%s:count=%d\r\n", n, k.errors[n])
	}
	k.mu.Unlock()
	return b.String()
}

// latencystats is INFO's Latencystats section.
func (k *statsKeeper) latencystats() string {
	k.percentilesMu.Lock()
	ps := slices.Clone(k.percentiles)
	k.percentilesMu.Unlock()
	var b strings.Builder
	b.WriteString("# Latencystats\r\n")
	for _, st := range k.sortedStats() {
		h := st.hist.Load()
		if h == nil || h.total.Load() == 0 {
			continue
		}
		fmt.Fprintf(&b, "latency_percentiles_usec_%s:", st.name)
		for i, p := range ps {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "p%s=%.3f", strconv.FormatFloat(p, 'f', -1, 64), float64(h.percentile(p))/1000)
		}
		b.WriteString("\r\n")
	}
	return b.String()
}

func (k *statsKeeper) sortedStats() []*cmdStat {
	out := make([]*cmdStat, 0, 64)
	for _, st := range k.byName {
		if st.calls.Load() != 0 || st.rejected.Load() != 0 || st.failed.Load() != 0 || st.hist.Load() != nil {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b *cmdStat) int { return strings.Compare(a.name, b.name) })
	return out
}

// latencyHist is a histogram of latencies in nanoseconds with buckets like
// redis's HDR histograms: values below 128 exactly, then each power of two
// split in 64, so a percentile is within 2%.
type latencyHist struct {
	total  atomic.Int64
	counts [histBuckets]atomic.Int64
}

const histBuckets = 128 + 57*64

func histIndex(ns int64) int {
	if ns < 128 {
		return int(max(ns, 0))
	}
	m := bits.Len64(uint64(ns)) - 7 // ns is in [64<<m, 128<<m)
	return 128 + (m-1)*64 + int(ns>>m) - 64
}

// histValue is the highest value bucket i holds.
func histValue(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	m := (i-128)/64 + 1
	lo := int64(64+(i-128)%64) << m
	return lo + int64(1)<<m - 1
}

func (h *latencyHist) add(d time.Duration) {
	i := histIndex(int64(d))
	if i >= len(h.counts) {
		i = len(h.counts) - 1
	}
	h.counts[i].Add(1)
	h.total.Add(1)
}

func (h *latencyHist) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.total.Store(0)
}

// percentile returns the value (ns) at percentile p (0-100).
func (h *latencyHist) percentile(p float64) int64 {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	want := int64(math.Ceil(p / 100 * float64(total)))
	want = max(want, 1)
	var seen int64
	for i := range h.counts {
		if seen += h.counts[i].Load(); seen >= want {
			return histValue(i)
		}
	}
	return histValue(len(h.counts) - 1)
}

// cdf is LATENCY HISTOGRAM's histogram_usec: cumulative counts at
// 1024 ns × 2^k, in µs, as redis's hdr_iter_log reports them.
func (h *latencyHist) cdf() (steps [][2]int64) {
	var cum, prev int64
	i := 0
	for limit := int64(1024); i < len(h.counts); limit *= 2 {
		hi := limit + limit/128 - 1 // the step's highest equivalent value
		for i < len(h.counts) && histValue(i) <= hi {
			cum += h.counts[i].Load()
			i++
		}
		if cum > prev {
			steps = append(steps, [2]int64{hi / 1000, cum})
		}
		prev = cum
		if cum >= h.total.Load() || limit > math.MaxInt64/4 {
			break
		}
	}
	return steps
}

// rewriteInfo puts this node's statistics in clients' terms in place of the
// local redis's: the Commandstats, Errorstats and Latencystats sections,
// and the Stats counters of commands and error replies.
func (k *statsKeeper) rewriteInfo(text []byte) []byte {
	if k == nil {
		return text
	}
	sections := strings.SplitAfter(string(text), "\r\n\r\n")
	var b strings.Builder
	for i, sec := range sections {
		tail := ""
		if i < len(sections)-1 {
			tail = "\r\n"
		}
		switch {
		case strings.HasPrefix(sec, "# Commandstats\r\n"):
			b.WriteString(k.commandstats() + tail)
		case strings.HasPrefix(sec, "# Errorstats\r\n"):
			b.WriteString(k.errorstats() + tail)
		case strings.HasPrefix(sec, "# Latencystats\r\n"):
			b.WriteString(k.latencystats() + tail)
		case strings.HasPrefix(sec, "# Stats\r\n"):
			lines := strings.Split(sec, "\r\n")
			for j, l := range lines {
				switch {
				case strings.HasPrefix(l, "total_commands_processed:"):
					lines[j] = "total_commands_processed:" + strconv.FormatInt(k.totalCommands.Load(), 10)
				case strings.HasPrefix(l, "total_error_replies:"):
					lines[j] = "total_error_replies:" + strconv.FormatInt(k.totalErrors.Load(), 10)
				}
			}
			b.WriteString(strings.Join(lines, "\r\n"))
		default:
			b.WriteString(sec)
		}
	}
	return []byte(b.String())
}
