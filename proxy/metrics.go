package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricClass is the class label of client command metrics: what the
// proxy did with the command (by the way it completed, so EXEC counts as a
// write and a write refused before reaching the log as its own class).
type metricClass uint8

const (
	mProxy    metricClass = iota // answered by the proxy (PING, INFO, RAFT.*, +QUEUED, ...)
	mWrite                       // proposed to raft
	mRead                        // linearizable read (ReadIndex, or through the log)
	mLocal                       // run on the local redis only
	mBlocking                    // blocking command (BLPOP, XREAD BLOCK, ...)
	mRefused                     // refused by the proxy (unknown, not supported, redirected)
	nClasses
)

func (m metricClass) String() string {
	switch m {
	case mWrite:
		return "write"
	case mRead:
		return "read"
	case mLocal:
		return "local"
	case mBlocking:
		return "blocking"
	case mRefused:
		return "refused"
	}
	return "proxy"
}

// metricClassOf is the class of a command by its table entry.
func metricClassOf(c class) metricClass {
	switch c {
	case classWrite:
		return mWrite
	case classRead:
		return mRead
	case classLocal:
		return mLocal
	case classRefused:
		return mRefused
	}
	return mProxy
}

// Metrics are a Server's client series. Every labelled child is resolved
// here, so recording a command costs one counter add and one histogram
// Observe, with no label lookup and no allocation.
type Metrics struct {
	commands    *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	connections prometheus.GaugeFunc
	count       [nClasses][2]prometheus.Counter // [class][0: ok, 1: error]
	duration    [nClasses]prometheus.Observer
	// expiredKeys counts the keys this node had deleted through the log
	// as expired (proxy/expiry.go).
	expiredKeys prometheus.Counter
	// evictedKeys counts the keys the leader evicted for maxmemory
	// (proxy/memory.go).
	evictedKeys prometheus.Counter
}

// NewMetrics creates the client series; conns counts the open client
// connections. Servers make their own; tests use it to list the names.
func NewMetrics(conns func() int) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "raftproxy_client_commands_total",
			Help: "Client commands answered, by class (write, read, local, blocking, proxy, refused) and result (ok, or error for an error reply)."},
			[]string{"class", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "raftproxy_client_command_duration_seconds",
			Help:    "Time from reading a client command to writing its reply, by class.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, // 0.1ms to 13s
			[]string{"class"}),
		connections: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "raftproxy_client_connections",
			Help: "Open client connections."}, func() float64 { return float64(conns()) }),
		expiredKeys: prometheus.NewCounter(prometheus.CounterOpts{Name: "raftproxy_expired_keys_total",
			Help: "Keys this node found expired by the log's time (as leader sampling keys, or as a read finding them) and had deleted through the log."}),
		evictedKeys: prometheus.NewCounter(prometheus.CounterOpts{Name: "raftproxy_evicted_keys_total",
			Help: "Keys this node, as leader, evicted through the log to keep used memory under maxmemory."}),
	}
	for c := range nClasses {
		m.count[c][0] = m.commands.WithLabelValues(c.String(), "ok")
		m.count[c][1] = m.commands.WithLabelValues(c.String(), "error")
		m.duration[c] = m.durations.WithLabelValues(c.String())
	}
	return m
}

// Collectors returns the server's series, for a registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.commands, m.durations, m.connections, m.expiredKeys, m.evictedKeys}
}

// Metrics returns the server's client series.
func (s *Server) Metrics() *Metrics { return s.metrics }

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// record counts o once its reply is written.
func (m *Metrics) record(o *op, now time.Time) {
	cls := o.cls
	switch o.kind {
	case opWrite:
		cls = mWrite
	case opRead, opLogRead:
		cls = mRead
	case opLocal:
		cls = mLocal
	case opBlock:
		cls = mBlocking
	}
	m.count[cls][b2u(o.failed)].Inc()
	if !o.start.IsZero() {
		m.duration[cls].Observe(now.Sub(o.start).Seconds())
	}
}

// isErrorReply reports whether raw is a RESP error (simple or, in RESP3,
// blob).
func isErrorReply(raw []byte) bool { return len(raw) > 0 && (raw[0] == '-' || raw[0] == '!') }
