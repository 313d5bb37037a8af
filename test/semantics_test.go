package test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// A family is a script of commands, one per line, run on one connection,
// with %s replaced by a key prefix. A line may start with a modifier:
//
//	sorted:  the reply is an array whose order redis does not define: sort it
//	approx:  the reply is a time or TTL: only its sign and kind compare
//
// An argument $prev stands for the previous reply (a bulk string).
var families = []struct {
	name  string
	lines string
}{
	{"strings", `
SET %s:s hello
GET %s:s
APPEND %s:s _world
STRLEN %s:s
GETRANGE %s:s 0 4
SETRANGE %s:s 6 WORLD
GET %s:s
SETNX %s:s other
SETNX %s:new v
GETSET %s:new v2
GETDEL %s:new
GET %s:new
SET %s:n 10
INCR %s:n
INCRBY %s:n 5
DECR %s:n
DECRBY %s:n 3
INCRBYFLOAT %s:n 1.5
INCR %s:s
MSET %s:a 1 %s:b 2 %s:c 3
MGET %s:a %s:b %s:missing %s:c
MSETNX %s:a 9 %s:d 4
MSETNX %s:d 4 %s:e 5
SET %s:s2 v NX
SET %s:s2 v2 XX GET
SET %s:s3 v KEEPTTL
SET %s:s4 v EX 100
approx:TTL %s:s4
SET %s:s4 v EX 0
SET %s:s4 v EX notanumber
SETEX %s:s5 100 v
approx:PTTL %s:s5
PSETEX %s:s6 100000 v
GETEX %s:s6 PERSIST
TTL %s:s6
GETEX %s:s6 EX 50
approx:TTL %s:s6
LCS %s:a %s:b
SUBSTR %s:s 0 3
GET`},
	{"keyspace", `
SET %s:k v
EXISTS %s:k %s:k %s:nokey
TYPE %s:k
TYPE %s:nokey
RENAME %s:k %s:k2
RENAME %s:nokey %s:x
RENAMENX %s:k2 %s:k3
SET %s:k4 v
RENAMENX %s:k3 %s:k4
COPY %s:k3 %s:k5
COPY %s:k3 %s:k5
COPY %s:k3 %s:k5 REPLACE
EXPIRE %s:k5 100
approx:TTL %s:k5
EXPIRE %s:k5 100 NX
EXPIRE %s:k5 200 GT
PERSIST %s:k5
TTL %s:k5
PEXPIRE %s:k5 100000
approx:PTTL %s:k5
EXPIREAT %s:k5 4102444800
EXPIRETIME %s:k5
PEXPIREAT %s:k5 4102444800000
PEXPIRETIME %s:k5
TOUCH %s:k5 %s:nokey
OBJECT ENCODING %s:k5
SET %s:int 12345
OBJECT ENCODING %s:int
DEL %s:k3 %s:k4 %s:nokey
UNLINK %s:k5
EXISTS %s:k3 %s:k4 %s:k5
EXPIRE %s:int -1
EXISTS %s:int`},
	{"lists", `
RPUSH %s:l a b c
LPUSH %s:l z
LRANGE %s:l 0 -1
LLEN %s:l
LINDEX %s:l 1
LINSERT %s:l BEFORE b x
LSET %s:l 0 first
LPOS %s:l c
LREM %s:l 1 x
LTRIM %s:l 0 2
LRANGE %s:l 0 -1
LPOP %s:l
RPOP %s:l 5
LPUSHX %s:none v
RPUSHX %s:l v
RPUSH %s:src 1 2 3
LMOVE %s:src %s:dst LEFT RIGHT
RPOPLPUSH %s:src %s:dst
LRANGE %s:dst 0 -1
LMPOP 2 %s:empty %s:src LEFT COUNT 2
LPOP %s:nolist
SET %s:str v
LPUSH %s:str x
LRANGE %s:str 0 -1`},
	{"hashes", `
HSET %s:h f1 v1 f2 v2
HSETNX %s:h f1 other
HGET %s:h f1
HMGET %s:h f1 nof f2
HLEN %s:h
HEXISTS %s:h f2
HSTRLEN %s:h f1
HINCRBY %s:h n 5
HINCRBYFLOAT %s:h x 2.5
sorted:HKEYS %s:h
sorted:HVALS %s:h
HGETALL %s:h
HDEL %s:h f1 nof
HMSET %s:h a 1 b 2
HGET %s:h a
HINCRBY %s:h f2 1
HSCAN %s:h 0 MATCH a*`},
	{"sets", `
SADD %s:s a b c d
SADD %s:s a
SCARD %s:s
SISMEMBER %s:s a
SMISMEMBER %s:s a z
sorted:SMEMBERS %s:s
SREM %s:s d z
SADD %s:t c e
sorted:SUNION %s:s %s:t
sorted:SINTER %s:s %s:t
sorted:SDIFF %s:s %s:t
SINTERCARD 2 %s:s %s:t
SUNIONSTORE %s:u %s:s %s:t
SINTERSTORE %s:i %s:s %s:t
SDIFFSTORE %s:d %s:s %s:t
sorted:SMEMBERS %s:u
SMOVE %s:s %s:t a
SISMEMBER %s:t a
SADD %s:ints 1 2 3
OBJECT ENCODING %s:ints`},
	{"sorted sets", `
ZADD %s:z 1 a 2 b 3 c
ZADD %s:z XX CH 5 a
ZADD %s:z NX 9 a 4 d
ZADD %s:z INCR 1 b
ZSCORE %s:z a
ZMSCORE %s:z a b nom
ZCARD %s:z
ZCOUNT %s:z 2 5
ZRANK %s:z c
ZREVRANK %s:z c
ZRANGE %s:z 0 -1 WITHSCORES
ZRANGE %s:z (1 5 BYSCORE LIMIT 0 2
ZRANGE %s:z + - BYLEX REV
ZREVRANGE %s:z 0 1
ZRANGEBYSCORE %s:z -inf +inf
ZINCRBY %s:z 2.5 c
ZREM %s:z d nom
ZPOPMIN %s:z
ZPOPMAX %s:z 2
ZADD %s:y 1 x 2 y
ZUNIONSTORE %s:zu 2 %s:z %s:y WEIGHTS 2 1
ZRANGE %s:zu 0 -1 WITHSCORES
ZINTER 2 %s:zu %s:y
ZDIFF 2 %s:zu %s:y WITHSCORES
ZRANGESTORE %s:zr %s:zu 0 0
ZMPOP 1 %s:zu MIN
ZLEXCOUNT %s:y - +
ZREMRANGEBYRANK %s:y 0 0
ZREMRANGEBYSCORE %s:zu -inf +inf
ZRANGE %s:y 0 -1 WITHSCORES`},
	{"bitmaps and hyperloglog", `
SETBIT %s:b 7 1
SETBIT %s:b 100 1
GETBIT %s:b 7
BITCOUNT %s:b
BITPOS %s:b 1
BITFIELD %s:bf SET u8 0 200 INCRBY u8 0 100 GET u8 0
BITFIELD_RO %s:bf GET u8 0
SET %s:x1 abc
SET %s:x2 abd
BITOP XOR %s:xo %s:x1 %s:x2
GET %s:xo
PFADD %s:hll a b c d
PFADD %s:hll a
PFCOUNT %s:hll
PFADD %s:hll2 e f
PFMERGE %s:hllm %s:hll %s:hll2
PFCOUNT %s:hllm`},
	{"geo", `
GEOADD %s:g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
GEODIST %s:g Palermo Catania km
GEOPOS %s:g Palermo nowhere
GEOHASH %s:g Palermo
GEOSEARCH %s:g FROMLONLAT 15 37 BYRADIUS 200 km ASC
GEOSEARCHSTORE %s:gs %s:g FROMMEMBER Palermo BYRADIUS 300 km ASC
ZCARD %s:gs
GEORADIUS %s:g 15 37 200 km ASC`},
	{"databases", `
SELECT 2
SET %s:db v
DBSIZE
MOVE %s:db 3
EXISTS %s:db
SELECT 3
GET %s:db
SWAPDB 3 4
GET %s:db
SELECT 4
GET %s:db
COPY %s:db %s:db2 DB 5
SELECT 5
GET %s:db2
FLUSHDB
DBSIZE
SELECT 4
DEL %s:db
SELECT 16
SELECT x`},
	{"scans, dumps and sorting", `
SELECT 6
RPUSH %s:l 3 1 2
SORT %s:l
SORT %s:l DESC LIMIT 0 2
SORT_RO %s:l
SORT %s:l STORE %s:sorted
LRANGE %s:sorted 0 -1
SADD %s:s a b c
sorted:KEYS %s:*
DBSIZE
SCAN 0 MATCH %s:* COUNT 1000 TYPE set
SADD %s:si 3 1 2
SSCAN %s:si 0
ZADD %s:z 1 a 2 b
ZSCAN %s:z 0
DUMP %s:l
MEMORY USAGE %s:l
OBJECT REFCOUNT %s:l
OBJECT ENCODING %s:s
SET %s:v value
DUMP %s:v
RESTORE %s:v2 100000 $prev
approx:PTTL %s:v2
GET %s:v2
DUMP %s:l
RESTORE %s:v2 0 $prev
RESTORE %s:v2 0 $prev REPLACE
LRANGE %s:v2 0 -1
TYPE %s:v2
FLUSHDB
DBSIZE
RANDOMKEY
SET %s:only v
RANDOMKEY
SCAN 0
FLUSHDB`},
	{"errors", `
SET %s:str v
LPUSH %s:str x
HGET %s:str f
ZADD %s:str 1 a
INCR %s:str
SET %s:k
GET
NOSUCHCMD %s:k
SET %s:k v EX
SET %s:k v NX XX
ZADD %s:z NX XX 1 a
INCRBY %s:k notanumber
OBJECT NOSUCH %s:k
CONFIG NOSUCH
LRANGE %s:k a b`},
}

// TestSemanticsAgainstRedis runs every family through the leader and a
// follower of a 3-node cluster and through a stock redis-server, compares
// every reply, then checks that all three nodes' redis-servers hold the
// same data.
func TestSemanticsAgainstRedis(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	used := map[string]bool{}
	for _, target := range []struct{ role, addr string }{{"leader", leader.Addr}, {"follower", followers[0].Addr}} {
		for _, f := range families {
			t.Run(target.role+"/"+f.name, func(t *testing.T) {
				prefix := "sem:" + target.role + ":" + strings.ReplaceAll(f.name, " ", "_")
				steps := parseFamily(f.lines)
				want := runFamily(t, stock, prefix, steps)
				got := runFamily(t, target.addr, prefix, steps)
				for i, s := range steps {
					used[strings.ToLower(s.args[0])] = true
					if got[i] != want[i] {
						t.Errorf("%s: raftproxy answered %s, redis answered %s", strings.Join(s.args, " "), got[i], want[i])
					}
				}
			})
		}
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
	t.Logf("%d distinct commands compared with a stock redis-server (plus the transaction, WATCH, script, RESP3 and cluster tests)", len(used))
}

type famStep struct {
	args   []string
	sorted bool
	approx bool
}

func parseFamily(lines string) []famStep {
	var out []famStep
	for _, l := range strings.Split(lines, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		var s famStep
		if rest, ok := strings.CutPrefix(l, "sorted:"); ok {
			s.sorted, l = true, rest
		}
		if rest, ok := strings.CutPrefix(l, "approx:"); ok {
			s.approx, l = true, rest
		}
		s.args = strings.Fields(l)
		out = append(out, s)
	}
	return out
}

func runFamily(t *testing.T, addr, prefix string, steps []famStep) []string {
	t.Helper()
	conn, err := dialRaw(addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	out := make([]string, len(steps))
	var prev respValue
	for i, s := range steps {
		args := make([]string, len(s.args))
		for j, a := range s.args {
			args[j] = strings.ReplaceAll(a, "%s", prefix)
			if a == "$prev" {
				args[j] = prev.Str
			}
		}
		v, err := conn.Do(args...)
		if err != nil {
			t.Fatalf("%q on %s: %v", args, addr, err)
		}
		prev = v
		switch {
		case s.approx && v.Kind == ':' && v.Int > 0:
			out[i] = ":positive"
		case s.sorted && v.Kind == '*':
			parts := make([]string, len(v.Arr))
			for k, e := range v.Arr {
				parts[k] = e.String()
			}
			sort.Strings(parts)
			out[i] = fmt.Sprint(parts)
		default:
			out[i] = v.String()
		}
		out[i] = strings.ReplaceAll(out[i], prefix, "%s")
	}
	return out
}

// TestMultiAcrossLeaderChange: a transaction queued on a follower while the
// leader changes still runs whole, once, on every node.
func TestMultiAcrossLeaderChange(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	conn, err := dialRaw(followers[0].Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mustDo(t, conn, "+OK", "MULTI")
	mustDo(t, conn, "+QUEUED", "INCR", "mlc:n")
	mustDo(t, conn, "+QUEUED", "RPUSH", "mlc:l", "a")
	if v, err := leader.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER", followers[1].ID); err != nil || v.IsError() {
		t.Fatalf("RAFT.TRANSFER_LEADER: %v %v", v, err)
	}
	mustDo(t, conn, "+QUEUED", "INCR", "mlc:n")
	if nl, _ := c.Leader(ctx); nl == leader {
		t.Fatalf("leadership did not move")
	}
	mustDo(t, conn, "[:1 :1 :2]", "EXEC")
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	dump := c.AssertRedisIdentical(ctx)
	if got := dump[dumpKey(0, "mlc:n")]; !strings.Contains(got, "2") {
		t.Errorf("mlc:n = %q, want 2", got)
	}
}
