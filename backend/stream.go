package backend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// Holding redis (see StateMachine.Hold). A stock redis expires a key by its
// own clock, lazily when a command touches it and actively in the
// background, so a node that applies old entries late (after a restart, a
// rebuild, a snapshot, a partition) would see keys the others saw alive as
// expired. One kind of client is exempt: a replica executes what its master
// sends as if nothing had expired, waits for the master's DELs, and deletes
// nothing on its own. So while a node catches up, its redis is made a
// replica of the state machine itself (REPLICAOF to a listener on
// 127.0.0.1, answered with +CONTINUE: redis keeps its data), the entries are
// sent down that replication stream, and before each command the keys it
// names whose deadline is before the entry's time (the proposer's clock,
// carried in the log) are deleted. Every node thus decides expiry by the
// log's time, whenever it applies. The stream carries no replies, so
// commands a client waits for are run on the ordinary connection.

// expireScript deletes the keys among KEYS whose deadline is before ARGV[1]
// (milliseconds): redis's own rule ("now > when"), with the log's time for
// now. Run by the master client, PEXPIRETIME sees an expired key too.
const expireScript = `local t = tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  local e = redis.call('PEXPIRETIME', k)
  if e >= 0 and e < t then redis.call('DEL', k) end
end`

// syncTimeout bounds the wait for the replica to acknowledge the stream.
const syncTimeout = 30 * time.Second

// stream is the master's side of the replication link of a held redis.
type stream struct {
	nc  net.Conn
	w   *bufio.Writer
	buf []byte
	// sent is the replication offset after the last byte written: the
	// replica's offset at the start of the link plus everything since.
	sent int64
	db   int // the database the replica runs the stream in; -1 unknown
	last time.Time

	acked atomic.Int64
	ackc  chan struct{} // an ACK arrived (1-buffered)
	done  chan struct{} // the link ended; err says why
	err   error
}

// newStream takes over nc, a replica's connection that was just answered
// +CONTINUE or sent a full sync: offset is the replica's offset then.
func newStream(nc net.Conn, offset int64) *stream {
	s := &stream{nc: nc, w: bufio.NewWriterSize(nc, 64<<10), sent: offset, db: -1,
		last: time.Now(), ackc: make(chan struct{}, 1), done: make(chan struct{})}
	s.acked.Store(-1)
	go s.readAcks()
	return s
}

// readAcks reads what the replica sends its master: REPLCONF ACK <offset>,
// once a second and when asked with GETACK.
func (s *stream) readAcks() {
	r := resp.NewReader(s.nc, 4096)
	for {
		args, err := r.ReadCommand()
		if err != nil {
			s.err = err
			close(s.done)
			return
		}
		if len(args) >= 3 && bytes.EqualFold(args[0], []byte("replconf")) && bytes.EqualFold(args[1], []byte("ack")) {
			if off, err := strconv.ParseInt(string(args[2]), 10, 64); err == nil {
				s.acked.Store(off)
				select {
				case s.ackc <- struct{}{}:
				default:
				}
			}
		}
	}
}

// alive reports whether the replica is still linked.
func (s *stream) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *stream) write(args ...[]byte) error {
	s.buf = resp.AppendCommand(s.buf[:0], args...)
	s.sent += int64(len(s.buf))
	s.last = time.Now()
	_, err := s.w.Write(s.buf)
	return err
}

func (s *stream) selectDB(db int) error {
	if db == s.db {
		return nil
	}
	s.db = db
	return s.write([]byte("SELECT"), []byte(strconv.Itoa(db)))
}

var expireScriptArg = []byte(expireScript)

// expireBefore deletes the keys whose deadline is before ms.
func (s *stream) expireBefore(keys [][]byte, ms int64) error {
	if len(keys) == 0 {
		return nil
	}
	args := make([][]byte, 0, 4+len(keys))
	args = append(args, []byte("EVAL"), expireScriptArg, []byte(strconv.Itoa(len(keys))))
	args = append(args, keys...)
	args = append(args, []byte(strconv.FormatInt(ms, 10)))
	return s.write(args...)
}

// sync waits until the replica has run everything written so far: a
// master's GETACK is answered after the commands before it. It gives up
// after limit (0: never, while the link lives).
func (s *stream) sync(limit time.Duration) error {
	want := s.sent
	if err := s.write([]byte("REPLCONF"), []byte("GETACK"), []byte("*")); err != nil {
		return fmt.Errorf("replication stream: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("replication stream: %w", err)
	}
	var expired <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		expired = t.C
	}
	for s.acked.Load() < want {
		select {
		case <-s.ackc:
		case <-s.done:
			return fmt.Errorf("redis dropped its replication link to raftproxy: %w", s.err)
		case <-expired:
			return fmt.Errorf("redis acknowledged offset %d of the replication stream, not %d, within %v", s.acked.Load(), want, limit)
		}
	}
	return nil
}

// ping keeps the link up while idle (redis drops a master silent for
// repl-timeout, 60 s by default).
func (s *stream) ping() error {
	if time.Since(s.last) < 5*time.Second {
		return nil
	}
	if err := s.write([]byte("PING")); err != nil {
		return err
	}
	return s.w.Flush()
}

func (s *stream) close() {
	s.nc.Close()
	<-s.done
}

// attachReplica makes the redis behind ctl a replica of a listener of this
// process and returns the replica's connection and the arguments of its
// PSYNC (or SYNC). The caller owns redis's replication from then on, and
// must send REPLICAOF NO ONE if it fails.
func attachReplica(ctx context.Context, ctl *Conn) (net.Conn, [][]byte, int, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("listen for redis's replication connection: %w", err)
	}
	// One connection only: should redis retry, it must be refused at once
	// rather than left waiting in the listen backlog.
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(aLongTimeAgo) })
	defer stop()
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := ctl.DoValue("REPLICAOF", "127.0.0.1", strconv.Itoa(port)); err != nil {
		return nil, nil, port, fmt.Errorf("make redis a replica: %w", err)
	}
	nc, err := ln.Accept()
	if err != nil {
		return nil, nil, port, fmt.Errorf("accept redis's replication connection: %w", err)
	}
	hctx := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	defer hctx()
	psync, err := replicaHandshake(nc)
	if err != nil {
		nc.Close()
		return nil, nil, port, fmt.Errorf("replication handshake: %w", err)
	}
	nc.SetDeadline(time.Time{})
	return nc, psync, port, nil
}

var errNoPartialSync = errors.New("redis asked for a full sync, which only a snapshot can give")

// holdRedis makes the redis behind ctl a replica of a new stream, keeping
// its data: it answers the replica's PSYNC with +CONTINUE, as a master that
// has the replica's history. ctx bounds the handshake.
func holdRedis(ctx context.Context, ctl *Conn) (*stream, error) {
	nc, psync, _, err := attachReplica(ctx, ctl)
	if err != nil {
		return nil, err
	}
	// A master turned replica asks for its own history: PSYNC <its replid>
	// <its offset + 1>. "PSYNC ? -1" or SYNC means it has none to keep.
	if len(psync) != 3 || !bytes.EqualFold(psync[0], []byte("psync")) || string(psync[1]) == "?" {
		nc.Close()
		return nil, fmt.Errorf("%w (%q)", errNoPartialSync, bytes.Join(psync, []byte(" ")))
	}
	next, err := strconv.ParseInt(string(psync[2]), 10, 64)
	if err != nil || next < 1 {
		nc.Close()
		return nil, fmt.Errorf("%w: bad offset in %q", errNoPartialSync, bytes.Join(psync, []byte(" ")))
	}
	id := make([]byte, 20)
	rand.Read(id)
	if _, err := nc.Write([]byte("+CONTINUE " + hex.EncodeToString(id) + "\r\n")); err != nil {
		nc.Close()
		return nil, fmt.Errorf("answer redis's PSYNC: %w", err)
	}
	s := newStream(nc, next-1)
	if err := s.sync(syncTimeout); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// releaseRedis ends the hold: everything sent has run, redis is a master
// again (REPLICAOF NO ONE keeps its data), and the link is closed.
func releaseRedis(ctl *Conn, s *stream) error {
	defer s.close()
	if err := s.sync(syncTimeout); err != nil {
		return err
	}
	if _, err := ctl.DoValue("REPLICAOF", "NO", "ONE"); err != nil {
		return fmt.Errorf("make redis a master again: %w", err)
	}
	return nil
}

// isReplicaError tells the replies of a redis that is still a replica
// (READONLY, MASTERDOWN) from others.
func isReplicaError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "READONLY") || strings.Contains(msg, "MASTERDOWN")
}
