package raftnode

import (
	"fmt"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// An entry this node cannot apply stops its applier: it applies everything
// before it, then nothing more, refuses reads and writes with ErrHalted,
// and says so in its log, its metrics (raftproxy_apply_halted) and /readyz.
// Two kinds of entry do that, because skipping them (as a corrupt entry is
// skipped: every node holds the same bytes, so every node skips it alike)
// would make this node diverge from members that apply them:
//
//   - an entry in a newer format than this build decodes. A member writes
//     only the format every member decodes, so this is a node rolled back
//     past the cluster's format; a restart with a build that decodes it
//     frees the node.
//   - an entry whose checksum does not match (entry.ErrChecksum): this
//     node's copy was damaged after its proposer wrote it (the leader drops
//     damaged proposals before they reach the log, see restamp), so the
//     other members hold it whole. The node's log is not to be trusted:
//     it is replaced (see OPERATIONS.md, "A damaged log entry").
//
// The node keeps taking part in raft (its WAL keeps the entries), and a
// snapshot past the entry, from the leader, also frees it.
type haltPoint struct {
	index uint64 // the entry it cannot apply
	err   error
}

// untilUnappliable returns the entries before the first one this node
// cannot apply, and that entry (nil when there is none).
func untilUnappliable(ents []*raftpb.Entry) ([]*raftpb.Entry, *raftpb.Entry) {
	for i, e := range ents {
		if e.GetType() == raftpb.EntryNormal && (entry.NewerFormat(e.GetData()) || entry.Verify(e.GetData()) != nil) {
			return ents[:i], e
		}
	}
	return ents, nil
}

// haltAt stops the applier before e, unless it could not reach it (it
// stopped first).
func (a *applier) haltAt(e *raftpb.Entry) {
	if a.applied.Load()+1 != e.GetIndex() {
		return
	}
	h := &haltPoint{index: e.GetIndex()}
	if entry.NewerFormat(e.GetData()) {
		format := int(e.GetData()[0])
		h.err = fmt.Errorf("%w: entry %d is in format %d, this build decodes up to %d; upgrade it", ErrHalted, h.index, format, entry.Version)
		a.n.log.Error("this build cannot decode a committed log entry: the node applies nothing past it and serves nothing until it runs a build that can (upgrade it; see OPERATIONS.md, Upgrading)",
			"index", h.index, "format", format, "decodes_up_to", entry.Version)
	} else {
		err := entry.Verify(e.GetData())
		h.err = fmt.Errorf("%w: this node's copy of entry %d is damaged (%w); replace this node's data", ErrHalted, h.index, err)
		a.n.log.Error("this node's copy of a committed log entry is damaged: the node applies nothing past it and serves nothing; remove it from the cluster and join it again with an empty data directory (see OPERATIONS.md, A damaged log entry)",
			"index", h.index, "err", err)
	}
	a.halt.Store(h)
	a.broadcast()
}

// unhaltPast lifts the halt once a snapshot at or past its entry is loaded:
// the snapshot holds that entry's effects.
func (a *applier) unhaltPast(index uint64) {
	if h := a.halt.Load(); h != nil && index >= h.index {
		a.halt.Store(nil)
		a.n.log.Info("a snapshot past the entry this build cannot decode was loaded; applying again", "entry", h.index, "snapshot", index)
	}
}

// Halted reports whether this node stopped applying at an entry its build
// cannot decode, and why.
func (n *Node) Halted() (bool, error) {
	if h := n.applier.halt.Load(); h != nil {
		return true, h.err
	}
	return false, nil
}
