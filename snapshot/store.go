// Package snapshot stores the node's snapshots: RDB files made by the local
// redis (BGSAVE) or received from a peer, each with a metadata file saying
// which log index it reflects and how to verify it.
//
// A snapshot is two files in the store's directory, written atomically
// (temporary file, fsync, rename, fsync of the directory), RDB first:
//
//	<term>-<index>.rdb   the RDB bytes
//	<term>-<index>.meta  JSON Meta
//
// A snapshot exists once its .meta file does; an .rdb without one is an
// interrupted write and is removed.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/raftproxy/raftproxy/internal/fsutil"
)

// Meta describes one snapshot.
type Meta struct {
	Index  uint64 `json:"index"`
	Term   uint64 `json:"term"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// State is the raft node's own state at Index (members, applier
	// bookkeeping); opaque here.
	State json.RawMessage `json:"state,omitempty"`
}

func (m Meta) name() string { return fmt.Sprintf("%016x-%016x", m.Term, m.Index) }

// ErrNoSnapshot is returned when the store has no valid snapshot.
var ErrNoSnapshot = errors.New("no snapshot")

// Store is a directory of snapshots.
type Store struct {
	dir  string
	keep int
	log  *slog.Logger
}

// Open opens (creating) the store in dir, keeping at most keep snapshots.
func Open(dir string, keep int, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create snapshot dir %s: %w", dir, err)
	}
	if keep < 1 {
		keep = 1
	}
	return &Store{dir: dir, keep: keep, log: log}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the RDB file of m.
func (s *Store) Path(m Meta) string { return filepath.Join(s.dir, m.name()+".rdb") }

// Save streams an RDB from src into the store as the snapshot m (whose Size
// and SHA256 it fills in) and returns the stored metadata.
func (s *Store) Save(m Meta, src io.Reader) (Meta, error) {
	tmp, err := os.CreateTemp(s.dir, m.name()+".rdb.tmp*")
	if err != nil {
		return m, fmt.Errorf("create snapshot file: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return m, fmt.Errorf("write snapshot %s: %w", m.name(), err)
	}
	m.Size, m.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), s.Path(m)); err != nil {
		return m, fmt.Errorf("store snapshot %s: %w", m.name(), err)
	}
	return m, s.writeMeta(m)
}

// Adopt moves a verified RDB file at path (on the store's file system) into
// the store as m.
func (s *Store) Adopt(path string, m Meta) error {
	if err := fsutil.Sync(path); err != nil {
		return err
	}
	if err := os.Rename(path, s.Path(m)); err != nil {
		return fmt.Errorf("adopt received snapshot %s: %w", path, err)
	}
	return s.writeMeta(m)
}

func (s *Store) writeMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode snapshot meta: %w", err)
	}
	final := filepath.Join(s.dir, m.name()+".meta")
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write snapshot meta: %w", err)
	}
	if err := fsutil.Sync(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("store snapshot meta: %w", err)
	}
	return fsutil.Sync(s.dir)
}

// List returns the snapshots whose metadata is readable, newest first.
func (s *Store) List() ([]Meta, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var out []Meta
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".meta") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		var m Meta
		if err := json.Unmarshal(b, &m); err != nil {
			s.log.Warn("ignoring unreadable snapshot metadata", "file", e.Name(), "err", err)
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int {
		switch {
		case a.Index > b.Index:
			return -1
		case a.Index < b.Index:
			return 1
		}
		return 0
	})
	return out, nil
}

// Verify checks that m's RDB file has the recorded size and checksum.
func (s *Store) Verify(m Meta) error {
	return VerifyFile(s.Path(m), m)
}

// VerifyFile checks that the file at path has m's size and checksum.
func VerifyFile(path string, m Meta) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", path, err)
	}
	if n != m.Size {
		return fmt.Errorf("snapshot %s holds %d bytes, its metadata says %d", path, n, m.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != m.SHA256 {
		return fmt.Errorf("snapshot %s has sha256 %s, its metadata says %s", path, sum, m.SHA256)
	}
	return nil
}

// Newest returns the newest snapshot that passes Verify among those that
// ok accepts (e.g. those the WAL knows). Corrupt ones are logged and skipped.
func (s *Store) Newest(ok func(Meta) bool) (Meta, error) {
	all, err := s.List()
	if err != nil {
		return Meta{}, err
	}
	for _, m := range all {
		if ok != nil && !ok(m) {
			continue
		}
		if err := s.Verify(m); err != nil {
			s.log.Error("snapshot is corrupt; trying an older one", "index", m.Index, "err", err)
			continue
		}
		return m, nil
	}
	return Meta{}, ErrNoSnapshot
}

// Purge removes all but the newest keep snapshots, and stray files of
// interrupted writes.
func (s *Store) Purge() {
	all, err := s.List()
	if err != nil {
		return
	}
	live := map[string]bool{}
	for i, m := range all {
		if i < s.keep {
			live[m.name()] = true
		}
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		name := e.Name()
		base, _, _ := strings.Cut(name, ".")
		if live[base] || strings.HasSuffix(name, ".snap.db") {
			continue // received files are adopted or removed by their receiver
		}
		if strings.HasSuffix(name, ".rdb") || strings.HasSuffix(name, ".meta") || strings.Contains(name, ".tmp") {
			os.Remove(filepath.Join(s.dir, name))
		}
	}
}
