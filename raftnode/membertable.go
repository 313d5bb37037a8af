package raftnode

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// Member is one node of the cluster as clients and peers reach it.
type Member struct {
	ID       uint64 `json:"id"`
	Addr     string `json:"addr"`      // client (RESP) address
	PeerAddr string `json:"peer_addr"` // raft transport address
	// Format is the newest log entry format the member's build decodes
	// (entry.Version); 0 for a build from before members advertised it,
	// which decodes format unadvertisedFormat.
	Format int `json:"format,omitempty"`
}

// unadvertisedFormat is the entry format a member that does not advertise
// one decodes: builds from before advertising all decode format 4.
const unadvertisedFormat = 4

// decodes is the newest entry format m decodes.
func (m Member) decodes() int {
	if m.Format == 0 {
		return unadvertisedFormat
	}
	return m.Format
}

// IDString formats a node or cluster id the way every interface shows it.
func IDString(id uint64) string { return strconv.FormatUint(id, 16) }

// ParseID parses an id shown by IDString.
func ParseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("invalid node id %q: want a non-zero hex number", s)
	}
	return id, nil
}

// confContext travels in a ConfChange so that every node learns the member's
// addresses from the log, and the proposing node can find its waiting client.
type confContext struct {
	Member  Member `json:"member"`
	ReqNode uint64 `json:"req_node,omitempty"`
	ReqSeq  uint64 `json:"req_seq,omitempty"`
}

func decodeConfContext(cc *raftpb.ConfChange) (confContext, error) {
	var c confContext
	if len(cc.GetContext()) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(cc.GetContext(), &c); err != nil {
		return c, fmt.Errorf("decode conf change context %q: %w", cc.GetContext(), err)
	}
	return c, nil
}

// membership is the cluster's members as applied from the log.
type membership struct {
	mu       sync.RWMutex
	members  map[uint64]Member
	learners map[uint64]bool
	removed  map[uint64]bool
	// format is the cluster's entry format: the newest that every member
	// decodes, kept with the members (see logFormat).
	format atomic.Int32
	// changedc is closed, and replaced, at every change (changed).
	changedc chan struct{}
}

func newMembership() *membership {
	return &membership{members: map[uint64]Member{}, learners: map[uint64]bool{}, removed: map[uint64]bool{},
		changedc: make(chan struct{})}
}

// changed returns a channel closed at the next change of the members.
func (m *membership) changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changedc
}

// noteChange wakes the waiters of changed; m.mu is held for writing.
func (m *membership) noteChange() {
	close(m.changedc)
	m.changedc = make(chan struct{})
}

func (m *membership) add(mem Member, learner bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.ID] = mem
	m.learners[mem.ID] = learner
	delete(m.removed, mem.ID)
	m.refreshFormat()
	m.noteChange()
}

func (m *membership) remove(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.members, id)
	delete(m.learners, id)
	m.removed[id] = true
	m.refreshFormat()
	m.noteChange()
}

// refreshFormat recomputes the cluster's format; m.mu is held for writing.
func (m *membership) refreshFormat() {
	f := entry.Version
	for _, mem := range m.members {
		f = min(f, mem.decodes())
	}
	m.format.Store(int32(f))
}

// logFormat is the entry format this node writes: the newest that every
// member decodes, as far as this node has applied the log, and never above
// what this build writes. It changes only with membership, which every
// node applies at the same index, so the members never disagree on it at a
// point of the log; an upgraded member raises it by advertising its newer
// build (refreshOwnRecord), after which no member is left that cannot
// decode the newer format.
func (m *membership) logFormat() int {
	f := int(m.format.Load())
	if f == 0 { // no member applied yet
		return unadvertisedFormat
	}
	return max(f, entry.MinFormat)
}

// hasLearners reports whether any member is a learner.
func (m *membership) hasLearners() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, l := range m.learners {
		if l {
			return true
		}
	}
	return false
}

func (m *membership) get(id uint64) (Member, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mem, ok := m.members[id]
	return mem, ok
}

func (m *membership) isRemoved(id uint64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.removed[id]
}

// MemberInfo is a member with its voting right.
type MemberInfo struct {
	Member
	Voting bool
}

func (m *membership) list() []MemberInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]MemberInfo, 0, len(m.members))
	for id, mem := range m.members {
		out = append(out, MemberInfo{Member: mem, Voting: !m.learners[id]})
	}
	slices.SortFunc(out, func(a, b MemberInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// restore replaces the members with those of a snapshot.
func (m *membership) restore(list []MemberInfo, removed []uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members = map[uint64]Member{}
	m.learners = map[uint64]bool{}
	for _, id := range removed {
		m.removed[id] = true
	}
	for _, mi := range list {
		m.members[mi.ID] = mi.Member
		m.learners[mi.ID] = !mi.Voting
	}
	m.refreshFormat()
	m.noteChange()
}

// removedIDs lists the members ever removed; they stay refused forever.
func (m *membership) removedIDs() []uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]uint64, 0, len(m.removed))
	for id := range m.removed {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
