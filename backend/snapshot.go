package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// Snapshots: loading one into redis (Reset) and making one from redis
// (StartSnapshot, a BGSAVE whose RDB file is handed over).

// Reset implements fsm.StateMachine: it waits for redis, then loads
// the RDB into it (or empties it). A loaded redis stays a replica of the
// load's link until RestoreMachineState (or the next Apply) releases it.
func (s *StateMachine) Reset(ctx context.Context, rdb io.Reader, size int64) error {
	s.dropConn()
	for {
		c, id, err := s.connect(ctx)
		if err == nil {
			st, err := s.reset(ctx, c, rdb, size)
			if err != nil {
				c.Close()
				return err
			}
			s.conn, s.st = c, st
			s.runID.Store(&id)
			// Until redis has been asked, any database may hold deadlines.
			s.vol.markAll()
			s.volChecked = time.Time{}
			return nil
		}
		s.log.Warn("waiting for the local redis", "addr", s.addr, "err", err)
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// connect opens the apply connection and learns what snapshots need.
func (s *StateMachine) connect(ctx context.Context) (*Conn, string, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.gate.Dial(dctx, s.addr, s.password)
	if err != nil {
		return nil, "", err
	}
	id, err := c.RunID()
	if err != nil && strings.Contains(err.Error(), "BUSY") {
		// A script left running (by this node before it restarted, or by
		// a client of redis itself): Reset replaces redis's content anyway,
		// so the script is stopped, however it has to be.
		StopStrayScript(ctx, s.gate, s.addr, s.password, s.log)
	}
	if err == nil {
		// A failed BGSAVE must not make this redis refuse the writes the
		// other nodes apply, and redis must not save on its own: snapshots
		// read the RDB file, so only raftproxy may trigger one. Nor may it
		// refuse writes or evict keys by its own memory (memory.go).
		_, err = c.DoValue("CONFIG", "SET", "stop-writes-on-bgsave-error", "no", "save", "", "maxmemory", "0")
	}
	var dir, file resp.Value
	if err == nil {
		s.learnBusyThreshold(c)
		dir, err = c.DoValue("CONFIG", "GET", "dir")
	}
	if err == nil {
		file, err = c.DoValue("CONFIG", "GET", "dbfilename")
	}
	if err != nil {
		c.Close()
		return nil, "", err
	}
	if len(dir.Elems) == 2 && len(file.Elems) == 2 {
		s.dir, s.dbfilename = string(dir.Elems[1].Str), string(file.Elems[1].Str)
	}
	return c, id, nil
}

func (s *StateMachine) reset(ctx context.Context, c *Conn, rdb io.Reader, size int64) (*replLink, error) {
	if rdb == nil {
		// A redis left held by an earlier failure is read-only.
		if _, err := c.DoValue("REPLICAOF", "NO", "ONE"); err != nil {
			return nil, err
		}
		if _, err := c.DoValue("FLUSHALL", "SYNC"); err != nil {
			return nil, err
		}
		s.log.Info("emptied the local redis to rebuild it from the log", "addr", s.addr)
		return nil, nil
	}
	start := time.Now()
	hold := s.gate.hold() // through the load, and as long as the link lives (stHold)
	st, err := loadRDB(ctx, s.addr, s.password, rdb, size, true)
	if err != nil {
		hold()
		return nil, err
	}
	s.stHold = hold
	s.log.Info("loaded a snapshot into the local redis", "addr", s.addr, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	return st, nil
}

// StartSnapshot implements fsm.StateMachine: BGSAVE forks redis now,
// between two applies, so the RDB holds exactly what was applied; writing
// it happens in the child while applying goes on.
//
// The caller must not load an RDB into redis (Reset with an RDB) before the
// job's reader is closed: a replica's full sync renames its RDB onto the
// same file.
func (s *StateMachine) StartSnapshot(ctx context.Context) (fsm.SnapshotJob, error) {
	if s.conn == nil {
		return nil, errNotConnected
	}
	if s.dir == "" {
		return nil, errors.New("redis did not say where it writes RDB files (CONFIG GET dir)")
	}
	// Redis 7 refuses CONFIG SET dbfilename (a protected config), so the
	// RDB goes to redis's own dbfilename; connect turned automatic saves
	// off, so only raftproxy writes that file.
	hz, err := s.raiseHz()
	if err != nil {
		return nil, s.fail(err)
	}
	raw, err := s.conn.Do([]byte("BGSAVE"))
	if err != nil {
		return nil, s.fail(err)
	}
	if len(raw) > 0 && raw[0] == '-' {
		return nil, fmt.Errorf("redis refused BGSAVE: %s", strings.TrimSpace(string(raw[1:])))
	}
	name := s.dbfilename
	return &bgsave{gate: s.gate, addr: s.addr, password: s.password, path: filepath.Join(s.dir, name), hz: hz}, nil
}

// snapshotHz is the cron rate a snapshot's BGSAVE runs with. Redis notices
// its child finished only in its cron, and raftproxy runs its own
// redis-servers at hz 1 (supervisor.go), which would add up to a second to
// every snapshot.
const snapshotHz = 10

// raiseHz sets redis's hz to snapshotHz if it is lower, and returns the
// value to restore once the BGSAVE is done ("" when it was not changed). A
// redis that refuses CONFIG keeps its own.
func (s *StateMachine) raiseHz() (string, error) {
	v, err := s.conn.DoValue("CONFIG", "GET", "hz")
	if err != nil {
		return "", err
	}
	if v.IsError() || len(v.Elems) != 2 {
		return "", nil
	}
	old := string(v.Elems[1].Str)
	if n, err := strconv.Atoi(old); err != nil || n >= snapshotHz {
		return "", nil
	}
	if _, err := s.conn.DoValue("CONFIG", "SET", "hz", strconv.Itoa(snapshotHz)); err != nil {
		return "", err
	}
	return old, nil
}

func (s *StateMachine) fail(err error) error {
	s.dropConn()
	return fmt.Errorf("talk to redis: %w", err)
}

// bgsave is an RDB being written by a redis child process.
type bgsave struct {
	gate                 *Hibernation
	addr, password, path string
	hz                   string // to restore once it is written, if not ""
}

func (b *bgsave) Wait(ctx context.Context) (io.ReadCloser, error) {
	c, err := b.gate.Dial(ctx, b.addr, b.password)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if b.hz != "" {
		defer func() {
			// Unless something else changed it meanwhile (a CONFIG SET
			// through the log).
			c.SetDeadline(time.Now().Add(5 * time.Second))
			v, err := c.DoValue("CONFIG", "GET", "hz")
			if err == nil && len(v.Elems) == 2 && string(v.Elems[1].Str) == strconv.Itoa(snapshotHz) {
				c.DoValue("CONFIG", "SET", "hz", b.hz)
			}
		}()
	}
	for {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		v, err := c.DoValue("INFO", "persistence")
		if err != nil {
			return nil, err
		}
		if InfoField(v.Str, "rdb_bgsave_in_progress") == "0" {
			if st := InfoField(v.Str, "rdb_last_bgsave_status"); st != "ok" {
				os.Remove(b.path)
				return nil, fmt.Errorf("redis BGSAVE failed (rdb_last_bgsave_status:%s); see the redis log", st)
			}
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f, err := os.Open(b.path)
	if err != nil {
		return nil, fmt.Errorf("read the RDB redis wrote: raftproxy needs to read files in redis's dir (same host or a shared volume): %w", err)
	}
	if _, err := CheckRDB(f); err != nil {
		f.Close()
		os.Remove(b.path)
		return nil, fmt.Errorf("RDB written by redis at %s: %w", b.path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return removeOnClose{f}, nil
}

// removeOnClose deletes redis's copy once the snapshot store has its own,
// so a stale RDB never lies around to be mistaken for a newer one.
type removeOnClose struct{ *os.File }

func (r removeOnClose) Close() error {
	err := r.File.Close()
	os.Remove(r.Name())
	return err
}
