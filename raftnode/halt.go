package raftnode

import (
	"fmt"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// A member upgraded to a build with a newer entry format writes entries an
// older member cannot decode. Skipping such an entry, as a corrupt one is
// skipped (every node holds the same bytes, so every node skips it alike),
// would make the old member diverge from the members that apply it. So the
// applier stops at it: it applies everything before it, then nothing more,
// refuses reads and writes with ErrHalted, and says so in its log, its
// metrics (raftproxy_apply_halted) and /readyz. The node keeps taking part
// in raft (its WAL keeps the entries), so a restart with an upgraded build
// applies them; a snapshot past the entry, from the leader, also frees it.
type haltPoint struct {
	index  uint64 // the entry it cannot decode
	format int
	err    error
}

// untilNewerFormat returns the entries before the first one in a newer
// format than this build decodes, and that entry (nil when there is none).
func untilNewerFormat(ents []*raftpb.Entry) ([]*raftpb.Entry, *raftpb.Entry) {
	for i, e := range ents {
		if e.GetType() == raftpb.EntryNormal && entry.NewerFormat(e.GetData()) {
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
	format := int(e.GetData()[0])
	h := &haltPoint{index: e.GetIndex(), format: format,
		err: fmt.Errorf("%w: entry %d is in format %d, this build decodes up to %d", ErrHalted, e.GetIndex(), format, entry.Version)}
	a.halt.Store(h)
	a.n.log.Error("this build cannot decode a committed log entry: the node applies nothing past it and serves nothing until it runs a build that can (upgrade it; see OPERATIONS.md, Upgrading)",
		"index", h.index, "format", format, "decodes_up_to", entry.Version)
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
