package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// These tests run real redis-server processes: LoadRDB's whole point is how
// an unmodified redis behaves as a replica, which no fake can stand for.

type rdbRedis struct {
	addr string // host:port, or a unix socket path
	dir  string
	log  string // outside dir, so that a test may remove dir
}

func rdbStartRedis(t testing.TB, unix bool, extra ...string) *rdbRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH; these tests need a real one (apt-get install redis-server, or scripts/install-redis.sh): %v", err)
	}
	r := &rdbRedis{dir: t.TempDir(), log: filepath.Join(t.TempDir(), "redis.log")}
	args := []string{"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", r.log, "--daemonize", "no"}
	if unix {
		// Socket paths are limited to about 100 bytes; test names are not.
		sockDir, err := os.MkdirTemp("", "rdb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		r.addr = filepath.Join(sockDir, "redis.sock")
		// As the Supervisor runs it: no TCP port at all.
		args = append(args, "--port", "0", "--unixsocket", r.addr, "--unixsocketperm", "700")
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		r.addr = net.JoinHostPort("127.0.0.1", port)
		args = append(args, "--port", port, "--bind", "127.0.0.1")
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(r.log); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("redis log %s (tail):\n%s", r.addr, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := Dial(ctx, r.addr)
		cancel()
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.DoValue("PING")
			c.Close()
			if err == nil {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s did not come up: %v", r.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rdbConn(t testing.TB, addr string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rdbDo(t testing.TB, c *Conn, args ...string) resp.Value {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	v, err := c.DoValue(args...)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return v
}

func rdbRole(t testing.TB, c *Conn) string {
	t.Helper()
	return InfoField(rdbDo(t, c, "INFO", "replication").Str, "role")
}

// rdbSave makes redis write an RDB of its content and returns its path.
func rdbSave(t testing.TB, r *rdbRedis, c *Conn) string {
	t.Helper()
	rdbDo(t, c, "BGSAVE")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info := rdbDo(t, c, "INFO", "persistence").Str
		if InfoField(info, "rdb_bgsave_in_progress") == "0" {
			if st := InfoField(info, "rdb_last_bgsave_status"); st != "ok" {
				t.Fatalf("BGSAVE failed: rdb_last_bgsave_status:%s", st)
			}
			return filepath.Join(r.dir, "dump.rdb")
		}
		if time.Now().After(deadline) {
			t.Fatal("BGSAVE did not finish")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rdbFillSource writes one of each type, TTLs, two databases and a value
// bigger than LoadRDB's copy buffer.
func rdbFillSource(t testing.TB, c *Conn) {
	t.Helper()
	big := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(big) // random: RDB compression must not shrink it
	cmds := [][]string{
		{"SELECT", "0"},
		{"SET", "str", "hello"},
		{"SET", "str:int", "12345"},
		{"SET", "str:binary", "\x00\xff\r\n$*"},
		{"SET", "str:1MiB", string(big)},
		{"SET", "shared", "from the source"},
		{"HSET", "hash", "f1", "v1", "f2", "v2"},
		{"RPUSH", "list", "a", "b", "c"},
		{"SADD", "set", "x", "y", "z"},
		{"SADD", "intset", "1", "2", "3"},
		{"ZADD", "zset", "1", "one", "2.5", "two"},
		{"XADD", "stream", "1-1", "f", "v"},
		{"SET", "ttl:str", "v", "EX", "31536000"},
		{"HSET", "ttl:hash", "f", "v"},
		{"EXPIRE", "ttl:hash", "31536000"},
		{"SELECT", "5"},
		{"SET", "db5:str", "five"},
		{"ZADD", "db5:zset", "3", "c"},
		{"SET", "db5:ttl", "v", "PX", "86400000000"},
	}
	// Big enough for the non-compact encodings (hashtable, quicklist).
	hash, list := []string{"HSET", "hash:big"}, []string{"RPUSH", "list:big"}
	for i := range 2000 {
		hash = append(hash, fmt.Sprintf("field:%d", i), strconv.Itoa(i))
		list = append(list, fmt.Sprintf("element:%d", i))
	}
	cmds = append(cmds, []string{"SELECT", "0"}, hash, list)
	for _, cmd := range cmds {
		rdbDo(t, c, cmd...)
	}
}

// rdbFillTarget writes what a load must remove, in databases 0 and 3.
func rdbFillTarget(t testing.TB, c *Conn) {
	t.Helper()
	for _, cmd := range [][]string{
		{"SET", "old:0", "x"},
		{"SET", "shared", "from the target"},
		{"SELECT", "3"},
		{"SET", "old:3", "y"},
		{"HSET", "old:hash", "f", "v"},
		{"SELECT", "0"},
	} {
		rdbDo(t, c, cmd...)
	}
}

type rdbKey struct {
	value string
	pttl  int64
}

// rdbContent is every key of every database with its value and PTTL. The
// value is the DUMP (type, encoding and content), except for hashes and
// sets, whose DUMP lists their hash table in an order that depends on the
// process's hash seed: for them it is the sorted members and the encoding.
func rdbContent(t testing.TB, c *Conn) map[string]rdbKey {
	t.Helper()
	v := rdbDo(t, c, "CONFIG", "GET", "databases")
	n, err := strconv.Atoi(v.Elems[1].String())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]rdbKey{}
	for db := range n {
		rdbDo(t, c, "SELECT", strconv.Itoa(db))
		for cursor := "0"; ; {
			v := rdbDo(t, c, "SCAN", cursor, "COUNT", "1000")
			for _, k := range v.Elems[1].Elems {
				m[fmt.Sprintf("db%d/%q", db, k.Str)] = rdbKey{
					value: rdbValue(t, c, string(k.Str)),
					pttl:  rdbDo(t, c, "PTTL", string(k.Str)).Int,
				}
			}
			if cursor = v.Elems[0].String(); cursor == "0" {
				break
			}
		}
	}
	rdbDo(t, c, "SELECT", "0")
	return m
}

func rdbValue(t testing.TB, c *Conn, key string) string {
	var members []string
	switch typ := rdbDo(t, c, "TYPE", key).String(); typ {
	case "hash":
		v := rdbDo(t, c, "HGETALL", key)
		for i := 0; i+1 < len(v.Elems); i += 2 {
			members = append(members, fmt.Sprintf("%q=%q", v.Elems[i].Str, v.Elems[i+1].Str))
		}
	case "set":
		for _, e := range rdbDo(t, c, "SMEMBERS", key).Elems {
			members = append(members, strconv.Quote(e.String()))
		}
	default:
		return rdbDo(t, c, "DUMP", key).String()
	}
	slices.Sort(members)
	return rdbDo(t, c, "OBJECT", "ENCODING", key).String() + ":" + strings.Join(members, ",")
}

func rdbCompare(t testing.TB, want, got map[string]rdbKey) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("key %s is missing", k)
		case g.value != w.value:
			t.Errorf("key %s: the value differs", k)
		case (w.pttl < 0) != (g.pttl < 0), w.pttl >= 0 && (g.pttl > w.pttl || w.pttl-g.pttl > 60_000):
			t.Errorf("key %s: PTTL %d, want %d or a little less", k, g.pttl, w.pttl)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %s (left from before the load?)", k)
		}
	}
}

// rdbSource starts a redis, fills it, and returns its RDB and content.
func rdbSource(t testing.TB) ([]byte, map[string]rdbKey) {
	t.Helper()
	src := rdbStartRedis(t, false)
	c := rdbConn(t, src.addr)
	rdbFillSource(t, c)
	data, err := os.ReadFile(rdbSave(t, src, c))
	if err != nil {
		t.Fatal(err)
	}
	return data, rdbContent(t, c)
}

func TestLoadRDB(t *testing.T) {
	data, want := rdbSource(t)
	if n := len(want); n != 18 {
		t.Fatalf("the source has %d keys, want 18", n)
	}
	for _, tc := range []struct {
		name string
		unix bool
	}{
		{"tcp", false},
		{"unix socket and no TCP port", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := rdbStartRedis(t, tc.unix)
			c := rdbConn(t, dst.addr)
			rdbFillTarget(t, c)
			// The second round loads into a redis that was a replica
			// before; it asks for a partial resync of its own history.
			for round := 1; round <= 2; round++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				start := time.Now()
				err := LoadRDB(ctx, dst.addr, bytes.NewReader(data), int64(len(data)))
				cancel()
				if err != nil {
					t.Fatalf("round %d: LoadRDB: %v", round, err)
				}
				t.Logf("round %d: loaded %d bytes in %v", round, len(data), time.Since(start))
				rdbCompare(t, want, rdbContent(t, c))
				if role := rdbRole(t, c); role != "master" {
					t.Fatalf("round %d: role:%s after LoadRDB, want master", round, role)
				}
				rdbDo(t, c, "SET", "written:after", "1")
				if got := rdbDo(t, c, "GET", "written:after").String(); got != "1" {
					t.Fatalf("round %d: a write after the load reads back %q", round, got)
				}
			}
		})
	}
}

func TestCheckRDB(t *testing.T) {
	src := rdbStartRedis(t, false)
	c := rdbConn(t, src.addr)
	rdbFillSource(t, c)
	data, err := os.ReadFile(rdbSave(t, src, c))
	if err != nil {
		t.Fatal(err)
	}
	// rdbchecksum cannot be changed at run time.
	src = rdbStartRedis(t, false, "--rdbchecksum", "no")
	c = rdbConn(t, src.addr)
	rdbFillSource(t, c)
	noChecksum, err := os.ReadFile(rdbSave(t, src, c))
	if err != nil {
		t.Fatal(err)
	}
	if footer := noChecksum[len(noChecksum)-8:]; binary.LittleEndian.Uint64(footer) != 0 {
		t.Fatalf("with rdbchecksum no redis wrote the footer %x, want zeros", footer)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(data)
		b[i] ^= 0x01
		return b
	}
	errRead := errors.New("disk on fire")
	for _, tc := range []struct {
		name    string
		r       io.Reader
		wantErr error  // nil: accepted
		errText string // also required in the error
	}{
		{"written by redis", bytes.NewReader(data), nil, ""},
		{"one byte per Read", iotest.OneByteReader(bytes.NewReader(data)), nil, ""},
		{"checksum disabled by redis", bytes.NewReader(noChecksum), nil, ""},
		{"flipped byte in the middle", bytes.NewReader(flip(len(data) / 2)), ErrBadRDB, "checksum mismatch"},
		{"flipped byte in the footer", bytes.NewReader(flip(len(data) - 1)), ErrBadRDB, "checksum mismatch"},
		{"truncated by one byte", bytes.NewReader(data[:len(data)-1]), ErrBadRDB, ""},
		{"truncated to half", bytes.NewReader(data[:len(data)/2]), ErrBadRDB, ""},
		{"header only", bytes.NewReader(data[:9]), ErrBadRDB, ""},
		{"empty", bytes.NewReader(nil), ErrBadRDB, ""},
		{"a byte appended", bytes.NewReader(append(bytes.Clone(data), 0)), ErrBadRDB, ""},
		{"not starting with REDIS", bytes.NewReader(append([]byte("RODIS"), data[5:]...)), ErrBadRDB, "REDIS"},
		{"version not digits", bytes.NewReader(append([]byte("REDIS00x0"), data[9:]...)), ErrBadRDB, "version"},
		{"read error", io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(errRead)), errRead, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size, err := CheckRDB(tc.r)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckRDB: %v", err)
				}
				if want := int64(len(data)); tc.name != "checksum disabled by redis" && size != want {
					t.Fatalf("size %d, want %d", size, want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.errText) {
				t.Fatalf("CheckRDB: %v, want %v containing %q", err, tc.wantErr, tc.errText)
			}
		})
	}

	t.Run("memory bounded", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := CheckRDB(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(data))/2 {
			t.Fatalf("CheckRDB of %d bytes allocated %d bytes", len(data), alloc)
		}
	})
}

// TestRDBCRC pins the checksum to redis's own test vector (crc64.c).
func TestRDBCRC(t *testing.T) {
	in := []byte("123456789")
	if got := rdbCRC(0, in); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(%q) = %016x, want e9c6d914c4b8d9ca", in, got)
	}
	if got := rdbCRC(rdbCRC(0, in[:4]), in[4:]); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64 in two parts = %016x", got)
	}
}

// TestRDBFullSyncToRedisCLI checks the master side against another replica
// implementation: redis-cli --rdb sends SYNC (not PSYNC) and must receive
// the exact bytes.
func TestRDBFullSyncToRedisCLI(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is not on PATH (it comes with redis-server; apt-get install redis-tools): %v", err)
	}
	data, _ := rdbSource(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out := filepath.Join(t.TempDir(), "out.rdb")
	cmd := exec.Command(cli, "-h", "127.0.0.1", "-p", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), "--rdb", out)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sync, err := replicaHandshake(nc)
	if err != nil {
		t.Fatalf("replication handshake with redis-cli: %v", err)
	}
	if err := serveFullSync(ctx, nc, sync, data[:rdbHeaderLen], bytes.NewReader(data[rdbHeaderLen:]), int64(len(data))); err != nil {
		t.Fatalf("serveFullSync: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("redis-cli --rdb: %v\n%s", err, stderr.Bytes())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("redis-cli received %d bytes, not the %d sent", len(got), len(data))
	}
}

// rdbStuckReader yields head, then blocks until released, then yields
// tail, or fails if it has none: a snapshot source that stalls.
type rdbStuckReader struct {
	head, tail  io.Reader
	release     chan struct{}
	stuck       chan struct{} // closed once it blocks
	releaseOnce sync.Once
	stuckOnce   sync.Once
}

func newRDBStuckReader(t *testing.T, head, tail []byte) *rdbStuckReader {
	s := &rdbStuckReader{head: bytes.NewReader(head), release: make(chan struct{}), stuck: make(chan struct{})}
	if tail != nil {
		s.tail = bytes.NewReader(tail)
	}
	t.Cleanup(s.unblock)
	return s
}

func (s *rdbStuckReader) unblock() { s.releaseOnce.Do(func() { close(s.release) }) }

func (s *rdbStuckReader) Read(p []byte) (int, error) {
	n, err := s.head.Read(p)
	if err != io.EOF {
		return n, err
	}
	s.stuckOnce.Do(func() { close(s.stuck) })
	<-s.release
	if s.tail == nil {
		return 0, io.ErrClosedPipe
	}
	return s.tail.Read(p)
}

// rdbUntouched checks that redis is a writable master with the target's
// original content.
func rdbUntouched(t *testing.T, c *Conn) {
	t.Helper()
	if role := rdbRole(t, c); role != "master" {
		t.Fatalf("role:%s, want master", role)
	}
	rdbDo(t, c, "SELECT", "3")
	old3 := rdbDo(t, c, "GET", "old:3").String()
	rdbDo(t, c, "SELECT", "0")
	if old0 := rdbDo(t, c, "GET", "old:0").String(); old0 != "x" || old3 != "y" {
		t.Fatalf("the original keys read %q and %q after a failed load", old0, old3)
	}
	rdbDo(t, c, "SET", "written:after", "1")
}

func TestLoadRDBContextEnds(t *testing.T) {
	data, _ := rdbSource(t)
	const timeout = time.Second
	for _, tc := range []struct {
		name    string
		given   int  // bytes the source yields before it blocks
		cancel  bool // cancelled before the call rather than a deadline
		wantErr error
	}{
		{"cancelled before the call", len(data), true, context.Canceled},
		{"source blocks at once", 0, false, context.DeadlineExceeded},
		{"source blocks in the header", 5, false, context.DeadlineExceeded},
		{"source blocks mid-payload", len(data) / 2, false, context.DeadlineExceeded},
		{"source blocks before the footer", len(data) - 8, false, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := rdbStartRedis(t, false)
			c := rdbConn(t, dst.addr)
			rdbFillTarget(t, c)
			src := newRDBStuckReader(t, data[:tc.given], nil)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if tc.cancel {
				cancel()
			}
			start := time.Now()
			err := LoadRDB(ctx, dst.addr, src, int64(len(data)))
			elapsed := time.Since(start)
			t.Logf("after %v: %v", elapsed, err)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("LoadRDB: %v, want %v", err, tc.wantErr)
			}
			// Past the deadline only the REPLICAOF NO ONE after it.
			if elapsed > timeout+time.Second {
				t.Fatalf("LoadRDB returned %v after it was started with a %v timeout", elapsed, timeout)
			}
			// Redis had the payload only in part, so it kept its data.
			rdbUntouched(t, c)
		})
	}
}

func TestLoadRDBFailures(t *testing.T) {
	data, _ := rdbSource(t)
	flipped := bytes.Clone(data)
	flipped[len(data)/2] ^= 0x01
	for _, tc := range []struct {
		name    string
		src     []byte
		size    int
		prepare func(t *testing.T, r *rdbRedis)
		wantErr error
		errText []string
	}{
		// Redis 7.0 exits on a corrupt RDB from its master ("Wrong RDB
		// checksum ... Aborting now"): the footer must be held back.
		{name: "corrupt payload", src: flipped, size: len(data), wantErr: ErrBadRDB, errText: []string{"checksum mismatch"}},
		{name: "source shorter than size", src: data[:len(data)-100], size: len(data), wantErr: ErrBadRDB, errText: []string{"ended"}},
		{name: "not an RDB", src: append([]byte("HELLO"), data[5:]...), size: len(data), wantErr: ErrBadRDB, errText: []string{"REDIS"}},
		{name: "size too small for an RDB", src: data, size: 10, wantErr: ErrBadRDB},
		{
			// Removing the dir is the way to make it unwritable for a
			// redis running as root. Redis retries opening its temp file
			// for 5 s before it gives up.
			name: "dir not writable", src: data, size: len(data),
			prepare: func(t *testing.T, r *rdbRedis) {
				if err := os.RemoveAll(r.dir); err != nil {
					t.Fatal(err)
				}
			},
			errText: []string{"Opening the temp file", "No such file or directory"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := rdbStartRedis(t, false)
			c := rdbConn(t, dst.addr)
			rdbFillTarget(t, c)
			if tc.prepare != nil {
				tc.prepare(t, dst)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := LoadRDB(ctx, dst.addr, bytes.NewReader(tc.src), int64(tc.size))
			t.Logf("LoadRDB: %v", err)
			if err == nil {
				t.Fatal("LoadRDB succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("LoadRDB: %v, want %v", err, tc.wantErr)
			}
			for _, s := range tc.errText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not say %q", s)
				}
			}
			rdbUntouched(t, c)
		})
	}
}

// TestLoadRDBConcurrentReplicaof has another client turn redis back into a
// master in the middle of the transfer: LoadRDB must fail, not hang or
// crash, and redis must stay usable.
func TestLoadRDBConcurrentReplicaof(t *testing.T) {
	data, _ := rdbSource(t)
	dst := rdbStartRedis(t, false)
	c := rdbConn(t, dst.addr)
	rdbFillTarget(t, c)
	src := newRDBStuckReader(t, data[:len(data)/2], data[len(data)/2:])
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- LoadRDB(ctx, dst.addr, src, int64(len(data)))
	}()
	select {
	case <-src.stuck:
	case err := <-done:
		t.Fatalf("LoadRDB returned before the transfer stalled: %v", err)
	}
	other := rdbConn(t, dst.addr)
	rdbDo(t, other, "REPLICAOF", "NO", "ONE")
	// Let the source go on: LoadRDB now writes to a redis that left.
	src.unblock()
	select {
	case err := <-done:
		t.Logf("LoadRDB: %v", err)
		if err == nil {
			t.Fatal("LoadRDB succeeded although redis stopped replicating mid-transfer")
		}
	case <-time.After(40 * time.Second):
		t.Fatal("LoadRDB hangs")
	}
	rdbUntouched(t, c)
}

// TestLoadRDBLargeTiming measures LoadRDB for a ~100 MB RDB of 1M keys.
func TestLoadRDBLargeTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement, not a check: it fills 1M keys (~100 MB); run without -short to measure LoadRDB")
	}
	const keys, valueLen = 1_000_000, 100
	src := rdbStartRedis(t, false)
	c := rdbConn(t, src.addr)
	value := func(i int) []byte {
		b := make([]byte, valueLen)
		rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16)}).Read(b)
		return b
	}
	start := time.Now()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	const batch = 1000
	for i := 0; i < keys; i += batch {
		for j := i; j < i+batch; j++ {
			if err := c.Write([][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%07d", j), value(j)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		for range batch {
			raw, err := c.ReadReply(nil)
			if err != nil || string(raw) != "+OK\r\n" {
				t.Fatalf("SET: %q %v", raw, err)
			}
		}
	}
	t.Logf("filled %d keys of %d bytes in %v", keys, valueLen, time.Since(start))
	path := rdbSave(t, src, c)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	mb := float64(st.Size()) / 1e6

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start = time.Now()
	if _, err := CheckRDB(f); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("CheckRDB: %.1f MB in %v (%.0f MB/s)", mb, d, mb/d.Seconds())

	dst := rdbStartRedis(t, false)
	dc := rdbConn(t, dst.addr)
	rdbFillTarget(t, dc)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start = time.Now()
	if err := LoadRDB(ctx, dst.addr, f, st.Size()); err != nil {
		t.Fatalf("LoadRDB: %v", err)
	}
	d = time.Since(start)
	t.Logf("LoadRDB: %d keys, %.1f MB RDB in %v (%.0f MB/s)", keys, mb, d, mb/d.Seconds())

	if n := rdbDo(t, dc, "DBSIZE").Int; n != keys {
		t.Fatalf("DBSIZE %d after the load, want %d", n, keys)
	}
	for _, i := range []int{0, 1, keys / 2, keys - 1} {
		if got := rdbDo(t, dc, "GET", fmt.Sprintf("key:%07d", i)).Str; !bytes.Equal(got, value(i)) {
			t.Fatalf("key:%07d differs after the load", i)
		}
	}
	if role := rdbRole(t, dc); role != "master" {
		t.Fatalf("role:%s after LoadRDB", role)
	}

	// Cancelled while redis loads: redis has flushed its data already and
	// answers -LOADING to REPLICAOF NO ONE until it is done, so LoadRDB must
	// retry that for redis to end up a master, with the new content.
	rdbDo(t, dc, "FLUSHALL")
	rdbDo(t, dc, "SET", "marker", "1")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	watch := rdbConn(t, dst.addr)
	go func() {
		defer cancel()
		for ctx.Err() == nil {
			watch.SetDeadline(time.Now().Add(time.Minute))
			v, err := watch.DoValue("INFO", "persistence")
			if err != nil || InfoField(v.Str, "loading") == "1" {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	start = time.Now()
	err = LoadRDB(ctx, dst.addr, f, st.Size())
	t.Logf("cancelled while loading, after %v: %v", time.Since(start), err)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("LoadRDB: %v, want %v", err, context.Canceled)
	}
	if role := rdbRole(t, dc); role != "master" {
		t.Fatalf("role:%s after LoadRDB was cancelled during the load", role)
	}
	if n := rdbDo(t, dc, "DBSIZE").Int; n != keys {
		t.Fatalf("DBSIZE %d after a load cancelled while redis loaded, want %d", n, keys)
	}
}
