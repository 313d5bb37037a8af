package backend

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// The replication link a snapshot is loaded by (rdbload.go): redis is made
// a replica of a listener of this process, which serves the RDB as a full
// sync. The state machine keeps the link until it has restored
// the snapshot's state, so that anything it must change before redis acts
// on its own (an older snapshot's deadlines, expiry.go) goes down the link
// as the master's commands, then ends it with REPLICAOF NO ONE.

// syncTimeout bounds the wait for the replica to acknowledge the stream.
const syncTimeout = 30 * time.Second

// replLink is the master's side of the replication link of a held redis.
type replLink struct {
	nc  net.Conn
	w   *bufio.Writer
	buf []byte
	// sent is the replication offset after the last byte written: the
	// replica's offset at the start of the link plus everything since.
	sent int64
	db   int // the database the replica runs the stream in; -1 unknown

	acked atomic.Int64
	ackc  chan struct{} // an ACK arrived (1-buffered)
	done  chan struct{} // the link ended; err says why
	err   error
}

// newStream takes over nc, a replica's connection that was just answered
// +CONTINUE or sent a full sync: offset is the replica's offset then.
func newReplLink(nc net.Conn, offset int64) *replLink {
	s := &replLink{nc: nc, w: bufio.NewWriterSize(nc, 64<<10), sent: offset, db: -1,
		ackc: make(chan struct{}, 1), done: make(chan struct{})}
	s.acked.Store(-1)
	go s.readAcks()
	return s
}

// readAcks reads what the replica sends its master: REPLCONF ACK <offset>,
// once a second and when asked with GETACK.
func (s *replLink) readAcks() {
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

func (s *replLink) write(args ...[]byte) error {
	s.buf = resp.AppendCommand(s.buf[:0], args...)
	s.sent += int64(len(s.buf))
	_, err := s.w.Write(s.buf)
	return err
}

func (s *replLink) selectDB(db int) error {
	if db == s.db {
		return nil
	}
	s.db = db
	return s.write([]byte("SELECT"), []byte(strconv.Itoa(db)))
}

// sync waits until the replica has run everything written so far: a
// master's GETACK is answered after the commands before it. It gives up
// after limit (0: never, while the link lives).
func (s *replLink) sync(limit time.Duration) error {
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

func (s *replLink) close() {
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

// releaseRedis ends the link: everything sent has run, redis is a master
// again (REPLICAOF NO ONE keeps its data), and the link is closed.
func releaseRedis(ctl *Conn, s *replLink) error {
	defer s.close()
	if err := s.sync(syncTimeout); err != nil {
		return err
	}
	if _, err := ctl.DoValue("REPLICAOF", "NO", "ONE"); err != nil {
		return fmt.Errorf("make redis a master again: %w", err)
	}
	return nil
}
