package wal

import (
	"fmt"
	"os"
	"sync"
)

// Syncer makes the WALs of one process durable together. A process that
// hosts several raft groups (a sharded node) would otherwise pay one
// fdatasync per group per round of writes, each costing as much CPU as the
// round's other work; with a Syncer, a WAL that must make a save durable
// waits for one syncfs(2) of the file system its WALs share, and every WAL
// written meanwhile rides on the same call (a group commit across groups,
// as RabbitMQ's Ra shares one WAL among its queues).
//
// syncfs also waits for every other file being written on that file system
// (a redis BGSAVE of any shard, a snapshot being received), so a lone group
// keeps its own fdatasync: a WAL switches to the Syncer once a second one
// is attached (Log.ShareSync) and stays on it.
type Syncer struct {
	dir  *os.File     // a directory on the shared file system
	sync func() error // syncfs of dir's file system; replaced in tests

	mu      sync.Mutex
	cond    *sync.Cond
	running bool   // a round's sync is under way
	next    *round // the round that starts after the running one; nil: none yet
	logs    int    // WALs attached
}

// round is one sync shared by every Sync call made before it began and
// after the round before it did.
type round struct {
	finished bool
	err      error
}

// NewSyncer returns a Syncer for the WALs in the file system holding dir, or
// nil (each WAL syncs itself) where the system has no syncfs.
func NewSyncer(dir string) (*Syncer, error) {
	if !haveSyncfs {
		return nil, nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("wal syncer: %w", err)
	}
	s := &Syncer{dir: f}
	s.sync = func() error { return syncfs(f) }
	s.cond = sync.NewCond(&s.mu)
	return s, nil
}

// Close releases the directory. Sync must not be called after it.
func (s *Syncer) Close() error {
	if s == nil {
		return nil
	}
	return s.dir.Close()
}

// Sync returns once everything written to the file system before the call
// is durable: after a sync that began after the call did. The caller whose
// round is due runs it; the others wait for it.
func (s *Syncer) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = &round{}
	}
	r := s.next
	for !r.finished {
		if s.running {
			s.cond.Wait()
			continue
		}
		// r is due and nobody runs it. Later callers wait for a round of
		// their own: this one may begin before their writes.
		s.running, s.next = true, nil
		s.mu.Unlock()
		err := s.sync()
		s.mu.Lock()
		r.finished, r.err = true, err
		s.running = false
		s.cond.Broadcast()
	}
	if r.err != nil {
		return fmt.Errorf("syncfs of the wal file system: %w", r.err)
	}
	return nil
}

// attach counts a WAL in dir as sharing s, if dir is on s's file system,
// and reports whether it is.
func (s *Syncer) attach(dir string) bool {
	if !sameFileSystem(s.dir, dir) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs++
	return true
}

func (s *Syncer) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs--
}

// crowded reports whether more than one WAL is attached: one syncfs then
// does what would be several fdatasyncs.
func (s *Syncer) crowded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs > 1
}
