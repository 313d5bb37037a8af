package test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/expiry"
)

// redisDump is the logical content of a redis-server: "db<N>/<key>" mapped
// to a rendering of the key's type, value and absolute expiry. Values are
// compared logically rather than by DUMP because a node rebuilt from an RDB
// may pick a different internal encoding for the same value.
type redisDump map[string]string

func dumpKey(db int, key string) string { return fmt.Sprintf("db%d/%s", db, key) }

// dumpRedis reads every key of every database of the redis-server at addr.
func dumpRedis(ctx context.Context, addr string) (redisDump, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	admin := newClient(addr, 1)
	defer admin.Close()
	ks, err := admin.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO keyspace on %s: %w", addr, err)
	}
	out := redisDump{}
	for _, line := range strings.Split(ks, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "db") {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		db, err := strconv.Atoi(strings.TrimPrefix(name, "db"))
		if err != nil {
			return nil, fmt.Errorf("INFO keyspace line %q: %w", line, err)
		}
		if err := dumpDB(ctx, addr, db, out); err != nil {
			return nil, fmt.Errorf("reading db %d of %s: %w", db, addr, err)
		}
	}
	return out, nil
}

func dumpDB(ctx context.Context, addr string, db int, out redisDump) error {
	cl := redis.NewClient(&redis.Options{
		Addr: addr, DB: db, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1,
		ContextTimeoutEnabled: true, ReadTimeout: 15 * time.Second,
	})
	defer cl.Close()
	var keys []string
	var cursor uint64
	for {
		batch, next, err := cl.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			return fmt.Errorf("SCAN: %w", err)
		}
		keys = append(keys, batch...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(start+500, len(keys))]
		types := make([]*redis.StatusCmd, len(batch))
		expiries := make([]*redis.Cmd, len(batch))
		if _, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				types[i] = p.Type(ctx, k)
				// PExpireTime's DurationCmd blurs -1 (no expiry); the raw integer does not.
				expiries[i] = p.Do(ctx, "PEXPIRETIME", k)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("TYPE/PEXPIRETIME: %w", err)
		}
		values := make([]redis.Cmder, len(batch))
		if _, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				switch types[i].Val() {
				case "string":
					values[i] = p.Get(ctx, k)
				case "list":
					values[i] = p.LRange(ctx, k, 0, -1)
				case "set":
					values[i] = p.SMembers(ctx, k)
				case "hash":
					values[i] = p.HGetAll(ctx, k)
				case "zset":
					values[i] = p.ZRangeWithScores(ctx, k, 0, -1)
				case "stream":
					// Logically (see renderStream): DUMP would hold each
					// consumer's seen-time, which is each node's own clock.
					values[i] = p.Do(ctx, "XINFO", "STREAM", k, "FULL", "COUNT", "0")
				default:
					values[i] = p.Dump(ctx, k)
				}
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("reading values: %w", err)
		}
		for i, k := range batch {
			if types[i].Val() == "none" {
				continue // gone since SCAN listed it (expired, through a proxy)
			}
			out[dumpKey(db, k)] = fmt.Sprintf("%s:%s|pexpireat=%s", types[i].Val(), renderValue(values[i]), expiryOf(expiries[i]))
		}
	}
	return nil
}

func renderValue(c redis.Cmder) string {
	switch c := c.(type) {
	case *redis.StringCmd:
		if c.Err() != nil {
			return "<" + c.Err().Error() + ">"
		}
		if c.Name() == "dump" {
			return hex.EncodeToString([]byte(c.Val()))
		}
		return strconv.Quote(c.Val())
	case *redis.StringSliceCmd:
		v := append([]string(nil), c.Val()...)
		if c.Name() == "smembers" {
			sort.Strings(v)
		}
		return fmt.Sprintf("%q", v)
	case *redis.MapStringStringCmd:
		var kv []string
		for k, v := range c.Val() {
			kv = append(kv, strconv.Quote(k)+"="+strconv.Quote(v))
		}
		sort.Strings(kv)
		return strings.Join(kv, ",")
	case *redis.ZSliceCmd:
		return fmt.Sprint(c.Val())
	case *redis.Cmd:
		if c.Err() != nil {
			return "<" + c.Err().Error() + ">"
		}
		return renderStream(c.Val())
	}
	return fmt.Sprintf("<%T>", c)
}

// renderStream renders XINFO STREAM FULL: the entries, the radix tree's
// size (the node layout, which XTRIM ~ depends on), the groups and every
// pending entry with its delivery time and count. A consumer's seen-time is
// left out: redis sets it from each node's clock and nothing but XINFO reads
// it (docs/SEMANTICS.md, "Streams").
func renderStream(v any) string {
	switch v := v.(type) {
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			if i > 0 && (v[i-1] == "seen-time" || v[i-1] == "active-time") {
				parts[i] = "<clock>"
				continue
			}
			parts[i] = renderStream(e)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case map[any]any:
		return fmt.Sprintf("<map %v>", v)
	}
	return fmt.Sprint(v)
}

// diffDumps describes up to ten differences, or returns "" if equal.
func diffDumps(a, b redisDump) string {
	var diffs []string
	for k, va := range a {
		if vb, ok := b[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: %s vs missing", k, va))
		} else if va != vb {
			diffs = append(diffs, fmt.Sprintf("  %s: %s vs %s", k, va, vb))
		}
	}
	for k, vb := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: missing vs %s", k, vb))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	sort.Strings(diffs)
	n := len(diffs)
	if n > 10 {
		diffs = append(diffs[:10], "  ...")
	}
	return fmt.Sprintf("%d keys differ (%d vs %d keys in all):\n%s", n, len(a), len(b), strings.Join(diffs, "\n"))
}

// stringValue is how dumpRedis renders a plain string key with no TTL.
func stringValue(v string) string { return fmt.Sprintf("string:%s|pexpireat=-1", strconv.Quote(v)) }

// wrongReadsError reports reads that succeeded with a wrong value or no
// value: unlike an error reply, that is never acceptable, not even while a
// node is recovering.
type wrongReadsError struct{ msg string }

func (e *wrongReadsError) Error() string { return e.msg }

// checkValues reads keys through a client with pipelined GETs. It returns a
// *wrongReadsError if any read succeeded with the wrong value, else a plain
// error if some reads failed.
func checkValues(ctx context.Context, cl *redis.Client, want map[string]string) error {
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var wrong, failed []string
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(start+500, len(keys))]
		cmds := make([]*redis.StringCmd, len(batch))
		// Errors are reported per key below, so Pipelined's first error adds nothing.
		_, _ = cl.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		for i, k := range batch {
			got, err := cmds[i].Result()
			switch {
			case errors.Is(err, redis.Nil):
				wrong = append(wrong, fmt.Sprintf("%s: missing, want %q", k, want[k]))
			case err != nil:
				failed = append(failed, fmt.Sprintf("%s: %v", k, err))
			case got != want[k]:
				wrong = append(wrong, fmt.Sprintf("%s: %q, want %q", k, got, want[k]))
			}
		}
	}
	summary := func(bad []string, what string) string {
		n := len(bad)
		if n > 10 {
			bad = append(bad[:10], "...")
		}
		return fmt.Sprintf("%d of %d keys %s:\n  %s", n, len(keys), what, strings.Join(bad, "\n  "))
	}
	if len(wrong) > 0 {
		return &wrongReadsError{summary(wrong, "read wrong")}
	}
	if len(failed) > 0 {
		return errors.New(summary(failed, "failed to read"))
	}
	return nil
}

// expiryOf renders a key's deadline as the log set it: a raftproxy node's
// redis stores it shifted (package expiry), a stock redis's holds it as is
// (no real deadline comes near the shift, 557 years from 1970).
func expiryOf(c *redis.Cmd) string {
	v, err := c.Int64()
	if err != nil {
		return "<" + err.Error() + ">"
	}
	if v >= expiry.Shift/2 {
		v = expiry.Deadline(v)
	}
	return strconv.FormatInt(v, 10)
}

// writeKeys pipelines n SETs of prefix:i = vi to addr, each expecting +OK,
// and returns a sample of them (every every-th key and the last) to read
// back later.
func writeKeys(addr, prefix string, n, every int) (map[string]string, error) {
	return writeKeysIn(addr, prefix, n, every, n)
}

// writeKeysIn is writeKeys in pipelines of at most chunk commands: the
// proxy batches a pipeline into few log entries, so small pipelines make
// many entries (to cross snapshot thresholds counted in entries).
func writeKeysIn(addr, prefix string, n, every, chunk int) (map[string]string, error) {
	cmds := make([][]string, n)
	wantOK := make([]string, n)
	sample := map[string]string{}
	for i := range cmds {
		k, v := fmt.Sprintf("%s:%d", prefix, i), fmt.Sprintf("v%d", i)
		cmds[i] = []string{"SET", k, v}
		wantOK[i] = "+OK"
		if i%every == 0 || i == n-1 {
			sample[k] = v
		}
	}
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		if err := pipelineRaw(addr, cmds[lo:hi], wantOK[lo:hi]); err != nil {
			return nil, fmt.Errorf("writing keys %d-%d through %s: %w", lo, hi, addr, err)
		}
	}
	return sample, nil
}
