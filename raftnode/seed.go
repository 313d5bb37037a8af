package raftnode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/snapshot"
	rwal "github.com/raftproxy/raftproxy/wal"
)

const (
	// A seeded cluster starts from a snapshot at index 1 of term 1: its log
	// is empty after it, and the first leader's term is above it.
	seedIndex, seedTerm = 1, 1
	// seedLoadTimeout bounds the trial load of a seed RDB into the local
	// redis (redis parses about 100 MiB a second).
	seedLoadTimeout = 30 * time.Minute
)

// initSeeded creates a one-member cluster whose first state is the RDB file
// cfg.SeedRDB (a raftproxy backup, or a stock redis's dump.rdb): the file
// becomes the snapshot at index 1, with this node the only voter, and the
// node starts from it as a restarted node would. Members that join later
// receive it by the usual snapshot streaming, because the log before index 2
// exists only as that snapshot. The caller holds h.mu and has checked that
// the data dir has no cluster.
func (h *Host) initSeeded() (*Node, error) {
	path := h.cfg.SeedRDB
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open seed RDB: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("seed RDB %s: %w", path, err)
	}
	// Loading it into the local redis before anything is written checks
	// that this redis accepts it (format version, checksum, modules): a
	// refused file must fail INIT, not make a cluster whose every node
	// fails to load its first snapshot.
	ctx, cancel := context.WithTimeout(context.Background(), seedLoadTimeout)
	defer cancel()
	if err := h.cfg.StateMachine.Reset(ctx, f, fi.Size()); err != nil {
		return nil, fmt.Errorf("seed RDB %s: the local redis cannot load it: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seed RDB %s: %w", path, err)
	}

	id, cid := RandomID(), RandomID()
	self := h.cfg.Self
	self.ID = id
	// A state with no state machine's fields, not none: the RDB comes from
	// a stock redis, whose content the state machine may have to convert
	// (backend's legacy deadlines), as it would a snapshot of an older
	// version.
	state, err := json.Marshal(nodeState{Members: []MemberInfo{{Member: self, Voting: true}}, LastSeq: map[uint64]uint64{}})
	if err != nil {
		return nil, fmt.Errorf("encode seed snapshot state: %w", err)
	}
	if err := os.MkdirAll(h.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	store, err := h.openStore()
	if err != nil {
		return nil, err
	}
	meta, err := store.Save(snapshot.Meta{Index: seedIndex, Term: seedTerm, State: state}, f)
	if err != nil {
		return nil, fmt.Errorf("store seed RDB %s as the first snapshot: %w", path, err)
	}
	if meta.Size != fi.Size() {
		return nil, fmt.Errorf("seed RDB %s changed while it was read (%d bytes, then %d)", path, fi.Size(), meta.Size)
	}

	// The WAL is built beside its final place and moved there whole: a
	// crash midway leaves no WAL, so the data dir still has no cluster.
	final := walDir(h.cfg.DataDir)
	tmp := final + ".seed"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	w, err := rwal.Create(zapToSlog(h.cfg.Logger), tmp, rwal.Metadata{NodeID: id, ClusterID: cid})
	if err != nil {
		return nil, err
	}
	cs := &raftpb.ConfState{Voters: []uint64{id}}
	err = w.SaveSnapshot(&walpb.Snapshot{Index: proto.Uint64(seedIndex), Term: proto.Uint64(seedTerm), ConfState: cs})
	if err == nil {
		_, err = w.Save(&raftpb.HardState{Term: proto.Uint64(seedTerm), Commit: proto.Uint64(seedIndex)}, nil)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = rwal.Rename(tmp, final)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("create the seeded cluster's wal: %w", err)
	}
	n, err := h.restart()
	if err != nil {
		return nil, err
	}
	// A single voter elects itself at once instead of after a timeout.
	n.core.campaign()
	n.log.Info("initialised new cluster from a seed RDB", "cluster", IDString(cid), "rdb", path, "bytes", meta.Size, "sha256", meta.SHA256)
	return n, nil
}
