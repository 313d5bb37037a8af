package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

type workload int

const (
	wSet workload = iota
	wGet
	wIncr
	wMixed
	wMset
	wMget
	wTx
	wCache
)

const multiKeys = 10 // keys per MSET / MGET

func parseWorkload(s string) (workload, bool) {
	for w := wSet; w <= wCache; w++ {
		if w.String() == s {
			return w, true
		}
	}
	return 0, false
}

func (w workload) String() string {
	switch w {
	case wSet:
		return "set"
	case wGet:
		return "get"
	case wIncr:
		return "incr"
	case wMixed:
		return "mixed"
	case wMset:
		return "mset"
	case wMget:
		return "mget"
	case wTx:
		return "tx"
	case wCache:
		return "cache"
	}
	return "workload(" + strconv.Itoa(int(w)) + ")"
}

// replies is the number of replies one op gets.
func (w workload) replies() int {
	if w == wTx {
		return 4 // +OK +QUEUED +QUEUED *2
	}
	return 1
}

type loadConfig struct {
	addr     string
	password string
	clients  int
	duration time.Duration
	pipeline int
	workload workload
	keys     uint64
	value    int
	json     bool

	cpuProfile string
}

func runLoad(args []string, stdout, stderr io.Writer) error {
	var cfg loadConfig
	var wl string
	var keys int64
	fs := newFlagSet("load", "[flags]", stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:6379", "server `HOST:PORT`")
	fs.StringVar(&cfg.password, "password", "", "AUTH with this password (the server's requirepass)")
	fs.IntVar(&cfg.clients, "clients", 50, "concurrent clients, one connection each")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run")
	fs.IntVar(&cfg.pipeline, "pipeline", 1, "commands (ops) each client sends before reading their replies")
	fs.StringVar(&wl, "workload", "set", "set, get, incr, mixed, mset, mget, tx or cache (80% GET / 20% SET ... PX 60000 of keys of their own: every key has a deadline)")
	fs.Int64Var(&keys, "keys", 100000, "key space: keys are key:0..key:N-1")
	fs.IntVar(&cfg.value, "value", 16, "value size in bytes")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object instead of a line")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the generator to `FILE` (go tool pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var ok bool
	if cfg.workload, ok = parseWorkload(wl); !ok {
		return usagef("unknown workload %q", wl)
	}
	switch {
	case cfg.clients < 1:
		return usagef("-clients must be at least 1")
	case cfg.pipeline < 1:
		return usagef("-pipeline must be at least 1")
	case cfg.duration <= 0:
		return usagef("-duration must be positive")
	case keys < 1:
		return usagef("-keys must be at least 1")
	case cfg.value < 0:
		return usagef("-value must not be negative")
	}
	cfg.keys = uint64(keys)

	res, err := load(cfg)
	if err != nil {
		return err
	}
	return res.print(stdout)
}

// loadClient is one connection and everything its hot loop touches, so the
// loop shares nothing with other clients.
type loadClient struct {
	conn  *net.TCPConn
	rd    *resp.Reader
	src   countingReader // what rd reads from
	rng   *rand.Rand
	kind  workload
	keys  uint64
	value []byte

	out   []byte // the commands of one pipeline
	reply []byte // the reply being read
	key   []byte // scratch for key names

	hist    Hist
	ops     uint64
	errs    uint64
	samples errSamples // first distinct error texts
	end     time.Time
}

// Command names, kept as []byte so encoding them never converts.
type names struct {
	set, get, incr, mset, mget, multi, exec, px, ttl []byte
}

func newNames() names {
	return names{[]byte("SET"), []byte("GET"), []byte("INCR"), []byte("MSET"), []byte("MGET"), []byte("MULTI"), []byte("EXEC"),
		[]byte("PX"), []byte("60000")}
}

// keyName puts "<prefix>key:<n>" into c.key and returns it.
func (c *loadClient) keyName(prefix string, n uint64) []byte {
	c.key = append(c.key[:0], prefix...)
	c.key = append(c.key, "key:"...)
	c.key = strconv.AppendUint(c.key, n, 10)
	return c.key
}

func (c *loadClient) randKey() []byte { return c.keyName("", c.rng.Uint64N(c.keys)) }

// appendOp appends the commands of one op.
func (c *loadClient) appendOp(dst []byte, n *names) []byte {
	switch c.kind {
	case wSet:
		return resp.AppendCommand(dst, n.set, c.randKey(), c.value)
	case wGet:
		return resp.AppendCommand(dst, n.get, c.randKey())
	case wIncr:
		// Counters live apart from the keys SET writes ('x' values), so
		// incr after set in the same database does not fail.
		return resp.AppendCommand(dst, n.incr, c.keyName("counter:", c.rng.Uint64N(c.keys)))
	case wMixed:
		if c.rng.Uint32N(5) == 0 {
			return resp.AppendCommand(dst, n.set, c.randKey(), c.value)
		}
		return resp.AppendCommand(dst, n.get, c.randKey())
	case wMset:
		dst = resp.AppendArrayLen(dst, 1+2*multiKeys)
		dst = resp.AppendBulk(dst, n.mset)
		for range multiKeys {
			dst = resp.AppendBulk(dst, c.randKey())
			dst = resp.AppendBulk(dst, c.value)
		}
		return dst
	case wMget:
		dst = resp.AppendArrayLen(dst, 1+multiKeys)
		dst = resp.AppendBulk(dst, n.mget)
		for range multiKeys {
			dst = resp.AppendBulk(dst, c.randKey())
		}
		return dst
	case wTx:
		k := c.rng.Uint64N(c.keys)
		dst = resp.AppendCommand(dst, n.multi)
		dst = resp.AppendCommand(dst, n.set, c.keyName("", k), c.value)
		dst = resp.AppendCommand(dst, n.incr, c.keyName("counter:", k))
		return resp.AppendCommand(dst, n.exec)
	case wCache:
		k := c.keyName("cache:", c.rng.Uint64N(c.keys))
		if c.rng.Uint32N(5) == 0 {
			return resp.AppendCommand(dst, n.set, k, c.value, n.px, n.ttl)
		}
		return resp.AppendCommand(dst, n.get, k)
	}
	panic("unknown workload " + c.kind.String())
}

// run sends pipelines of ops until deadline. The latency of an op runs from
// the write of its pipeline to the read of its (last) reply.
func (c *loadClient) run(n *names, pipeline int, deadline time.Time) error {
	per := c.kind.replies()
	for {
		c.out = c.out[:0]
		for range pipeline {
			c.out = c.appendOp(c.out, n)
		}
		sent := time.Now()
		if _, err := c.conn.Write(c.out); err != nil {
			return err
		}
		var now time.Time
		reads := c.src.reads
		for range pipeline {
			failed := false
			for i := range per {
				var err error
				if c.reply, err = c.rd.ReadReply(c.reply[:0]); err != nil {
					if errors.Is(err, io.EOF) {
						err = errors.New("server closed the connection")
					}
					return err
				}
				if c.failed(c.kind == wTx && i == per-1) {
					failed = true
				}
			}
			// Replies that came in the same read arrived together: only
			// a read since the last timestamp needs a new one (time.Now
			// is a visible share of the CPU at -pipeline 16 otherwise).
			if c.src.reads != reads || now.IsZero() {
				now, reads = time.Now(), c.src.reads
			}
			if failed {
				c.errs++
			} else {
				c.ops++
				c.hist.Record(now.Sub(sent))
			}
		}
		if !now.Before(deadline) {
			c.end = now
			return nil
		}
	}
}

// failed reports whether c.reply is an error reply (for EXEC: an error, a
// null (aborted) reply or an array holding an error) and samples its text.
func (c *loadClient) failed(exec bool) bool {
	r := c.reply
	switch {
	case r[0] == '-':
		c.samples.add(r[1 : len(r)-2])
		return true
	case !exec || r[0] != '*':
		return false
	case bytes.HasPrefix(r, []byte("*-1\r\n")):
		c.samples.add([]byte("EXEC returned null: transaction aborted"))
		return true
	case !bytes.Contains(r, []byte("\r\n-")):
		return false // fast path: no element can be an error
	}
	v, _, err := resp.Parse(r)
	if err != nil {
		return false
	}
	for _, e := range v.Elems {
		if e.IsError() {
			c.samples.add(e.Str)
			return true
		}
	}
	return false
}

// countingReader counts the reads that reach the connection.
type countingReader struct {
	r     io.Reader
	reads uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// errSamples keeps the first few distinct error texts.
type errSamples []string

const maxSamples = 5

func (s *errSamples) add(text []byte) {
	if len(*s) >= maxSamples {
		return
	}
	text = text[:min(len(text), 200)]
	for _, t := range *s {
		if t == string(text) {
			return
		}
	}
	*s = append(*s, string(text))
}

func (s *errSamples) merge(o errSamples) {
	for _, t := range o {
		s.add([]byte(t))
	}
}

// connectAll opens n connections to addr, each logged in with password
// when it is set, or none.
func connectAll(addr, password string, n int) ([]*net.TCPConn, error) {
	conns := make([]*net.TCPConn, 0, n)
	for range n {
		c, err := dialAuth(addr, password)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// replyGrace is how long after the end of a run a reply may still take.
const replyGrace = 10 * time.Second

func load(cfg loadConfig) (*loadResult, error) {
	conns, err := connectAll(cfg.addr, cfg.password, cfg.clients)
	if err != nil {
		return nil, err
	}
	value := bytes.Repeat([]byte{'x'}, cfg.value)
	seed := uint64(time.Now().UnixNano())
	clients := make([]*loadClient, len(conns))
	for i, conn := range conns {
		defer conn.Close()
		c := &loadClient{
			conn:  conn,
			src:   countingReader{r: conn},
			rng:   rand.New(rand.NewPCG(seed, uint64(i))),
			kind:  cfg.workload,
			keys:  cfg.keys,
			value: value,
		}
		c.rd = resp.NewReader(&c.src, 64<<10)
		clients[i] = c
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	begin := time.Now()
	deadline := begin.Add(cfg.duration)
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		if err := c.conn.SetDeadline(deadline.Add(replyGrace)); err != nil {
			return nil, err
		}
		wg.Go(func() {
			n := newNames()
			errs[i] = c.run(&n, cfg.pipeline, deadline)
		})
	}
	wg.Wait()

	res := &loadResult{
		Workload:     cfg.workload.String(),
		Pipeline:     cfg.pipeline,
		Clients:      cfg.clients,
		ErrorSamples: []string{},
		json:         cfg.json,
	}
	var hist Hist
	var samples errSamples
	end := begin
	for i, c := range clients {
		if err := errs[i]; err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no reply within %v after the end of the run", replyGrace)
			}
			return nil, fmt.Errorf("client %d on %s: %w", i, cfg.addr, err)
		}
		hist.Merge(&c.hist)
		res.Ops += c.ops
		res.Errors += c.errs
		samples.merge(c.samples)
		if c.end.After(end) {
			end = c.end
		}
	}
	res.ErrorSamples = append(res.ErrorSamples, samples...)
	res.Seconds = end.Sub(begin).Seconds()
	if res.Seconds > 0 {
		res.OpsPerSec = float64(res.Ops) / res.Seconds
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	res.P50 = ms(hist.Quantile(0.50))
	res.P90 = ms(hist.Quantile(0.90))
	res.P99 = ms(hist.Quantile(0.99))
	res.P999 = ms(hist.Quantile(0.999))
	res.Max = ms(hist.Max())
	return res, nil
}

// loadResult is the outcome of a load run. Ops and the latencies count
// only ops that succeeded; failed ones are counted in Errors.
type loadResult struct {
	Workload     string   `json:"workload"`
	Pipeline     int      `json:"pipeline"`
	Clients      int      `json:"clients"`
	Ops          uint64   `json:"ops"`
	Seconds      float64  `json:"seconds"`
	OpsPerSec    float64  `json:"ops_per_sec"`
	P50          float64  `json:"p50_ms"`
	P90          float64  `json:"p90_ms"`
	P99          float64  `json:"p99_ms"`
	P999         float64  `json:"p999_ms"`
	Max          float64  `json:"max_ms"`
	Errors       uint64   `json:"errors"`
	ErrorSamples []string `json:"error_samples"`

	json bool
}

func (r *loadResult) print(w io.Writer) error {
	if r.json {
		return json.NewEncoder(w).Encode(r)
	}
	_, err := fmt.Fprintf(w, "%s P%d c%d: %.0f ops/s  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  errors %d\n",
		r.Workload, r.Pipeline, r.Clients, r.OpsPerSec, r.P50, r.P90, r.P99, r.P999, r.Max, r.Errors)
	for _, s := range r.ErrorSamples {
		if err == nil {
			_, err = fmt.Fprintf(w, "  error: %s\n", s)
		}
	}
	return err
}

func runFill(args []string, stdout, stderr io.Writer) error {
	var addr, password string
	var keys int64
	var value, pipeline, clients int
	fs := newFlagSet("fill", "[flags]", stderr)
	fs.StringVar(&addr, "addr", "127.0.0.1:6379", "server `HOST:PORT`")
	fs.StringVar(&password, "password", "", "AUTH with this password (the server's requirepass)")
	fs.Int64Var(&keys, "keys", 1000000, "write key:0..key:N-1")
	fs.IntVar(&value, "value", 100, "value size in bytes")
	fs.IntVar(&pipeline, "pipeline", 256, "SETs each client sends before reading their replies")
	fs.IntVar(&clients, "clients", 8, "concurrent clients, one connection each; each writes a contiguous range of keys")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case keys < 1:
		return usagef("-keys must be at least 1")
	case value < 0:
		return usagef("-value must not be negative")
	case pipeline < 1:
		return usagef("-pipeline must be at least 1")
	case clients < 1:
		return usagef("-clients must be at least 1")
	}
	clients = int(min(int64(clients), keys))

	conns, err := connectAll(addr, password, clients)
	if err != nil {
		return err
	}
	val := bytes.Repeat([]byte{'x'}, value)
	type outcome struct {
		errs    uint64
		samples errSamples
		err     error
	}
	out := make([]outcome, clients)
	begin := time.Now()
	var wg sync.WaitGroup
	for i, conn := range conns {
		defer conn.Close()
		lo, hi := keys*int64(i)/int64(clients), keys*int64(i+1)/int64(clients)
		wg.Go(func() {
			o := &out[i]
			o.err = fill(conn, uint64(lo), uint64(hi), val, pipeline, &o.errs, &o.samples)
			if o.err != nil {
				o.err = fmt.Errorf("client %d on %s: %w", i, addr, o.err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin).Seconds()

	var errs uint64
	var samples errSamples
	for _, o := range out {
		if o.err != nil {
			return o.err
		}
		errs += o.errs
		samples.merge(o.samples)
	}
	fmt.Fprintf(stdout, "fill: %d keys of %d bytes in %.2f s: %.0f keys/s  errors %d\n", keys, value, elapsed, float64(keys)/elapsed, errs)
	if errs > 0 {
		for _, s := range samples {
			fmt.Fprintf(stderr, "  error: %s\n", s)
		}
		return fmt.Errorf("%d of %d SETs failed", errs, keys)
	}
	return nil
}

// fill SETs key:lo..key:hi-1 in pipelines.
func fill(conn *net.TCPConn, lo, hi uint64, value []byte, pipeline int, errs *uint64, samples *errSamples) error {
	rd := resp.NewReader(conn, 64<<10)
	set := []byte("SET")
	var out, key, reply []byte
	for k := lo; k < hi; {
		n := min(uint64(pipeline), hi-k)
		out = out[:0]
		for j := range n {
			key = strconv.AppendUint(append(key[:0], "key:"...), k+j, 10)
			out = resp.AppendCommand(out, set, key, value)
		}
		k += n
		if err := conn.SetDeadline(time.Now().Add(replyGrace)); err != nil {
			return err
		}
		if _, err := conn.Write(out); err != nil {
			return err
		}
		for range n {
			var err error
			if reply, err = rd.ReadReply(reply[:0]); err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("server closed the connection")
				}
				return err
			}
			if reply[0] == '-' {
				*errs++
				samples.add(reply[1 : len(reply)-2])
			}
		}
	}
	return nil
}
