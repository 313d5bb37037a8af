// Package slotmap is the routing data of a sharded cluster: which shard
// owns each of Redis Cluster's 16384 hash slots, each shard's members, and
// the slot moves in progress.
//
// A Map changes only by Apply, in the order of a log (the primary group's),
// and Apply is deterministic: every node that applied the same changes holds
// the same Map, and a change Apply refuses leaves it as it was on every
// node. Routing answers (CLUSTER SLOTS, -MOVED) and each shard's check of
// the slots it serves come from it.
package slotmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// NumSlots is Redis Cluster's number of hash slots.
const NumSlots = 16384

// MaxShards bounds the shards of a Map (owner indexes are 16 bits).
const MaxShards = 4096

// Range is the slots First to Last, both included.
type Range struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

func (r Range) valid() bool { return 0 <= r.First && r.First <= r.Last && r.Last < NumSlots }

func (r Range) overlaps(o Range) bool { return r.First <= o.Last && o.First <= r.Last }

// Len is the number of slots in r.
func (r Range) Len() int { return r.Last - r.First + 1 }

func (r Range) String() string {
	if r.First == r.Last {
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Shard is one data group: its id (as clients see it in RAFT.SHARD LIST),
// its index (each node serves it on the client port that many above its
// first), and the ids of the nodes that hold it.
//
// A placed shard (RAFT.SHARD ADD <node-id>...) is held by its Members
// only, and a node that joins the cluster later does not join it; an
// unplaced one (INIT SHARDS, ADD without ids) by every node of the
// cluster, whatever its Members say (they name the node that made it).
type Shard struct {
	ID      string   `json:"id"`
	Index   int      `json:"index"`
	Members []uint64 `json:"members"`
	Placed  bool     `json:"placed,omitempty"`
}

// Holds reports whether node id holds shard s.
func (s Shard) Holds(id uint64) bool { return !s.Placed || slices.Contains(s.Members, id) }

func (s Shard) clone() Shard {
	s.Members = slices.Clone(s.Members)
	return s
}

// Map is the routing data. The zero Map has no shards and no owned slot.
type Map struct {
	shards []Shard // by ID
	// owner[s] is 1 + the index in shards of the shard owning slot s, or
	// 0 when none does.
	owner    [NumSlots]uint16
	moves    []Move // by ID
	nextMove uint64
	// ended are the moves that ended, so that a late step of one (an
	// older mover's) is told from a move not begun here yet.
	ended []uint64
	// removed are the shards removed, whose groups the nodes stop.
	removed []string
}

// Errors of Apply: the change is refused and the Map unchanged.
var (
	ErrNotEmpty    = errors.New("the cluster already has shards")
	ErrNoShard     = errors.New("no such shard")
	ErrShardExists = errors.New("a shard with this id exists")
	ErrShardInUse  = errors.New("the shard owns slots or takes part in a move")
	ErrBadRange    = errors.New("invalid slot range")
	ErrSplitOwner  = errors.New("the slots are not all owned by one shard")
	ErrSameShard   = errors.New("the slots are already owned by that shard")
	ErrMoving      = errors.New("some of the slots are already being moved")
	ErrNoMove      = errors.New("no such move")
	ErrBadMembers  = errors.New("a shard needs members, each named once")
	ErrStaleMover  = errors.New("the move is driven by a newer mover")
	ErrCancelled   = errors.New("the move is already cancelled")
	ErrFinishing   = errors.New("too late to cancel")
	ErrEnded       = errors.New("the move ended")
)

// Op is what a Change does.
type Op string

const (
	// OpInit gives a Map without shards the shards Shards, with the slots
	// split evenly in their order (the first ones get one more when the
	// split is not even).
	OpInit Op = "init"
	// OpAddShard adds Shards[0], owning no slot.
	OpAddShard Op = "add-shard"
	// OpRemoveShard removes shard Shard, which must own no slot and take
	// part in no move.
	OpRemoveShard Op = "remove-shard"
	// OpBeginMove starts moving Range, all owned by one shard and in no
	// other move, to shard Shard.
	OpBeginMove Op = "begin-move"
	// OpProgress records that Keys keys of move Move were copied.
	OpProgress Op = "progress"
	// OpEndMove gives the slots of move Move to its target (Dst, or Shard
	// when set): the shards have handed them off.
	OpEndMove Op = "end-move"
	// OpCancelMove asks for move Move to be turned around (Cancel): its
	// mover then sends its keys back to its source, which keeps the slots
	// when it ends.
	OpCancelMove Op = "cancel-move"
	// OpClaim gives move Move a new epoch, returned: the mover that made
	// it drives the move from then on.
	OpClaim Op = "claim"
	// OpFinish marks move Move Finishing, in the direction Cancelled says
	// (the mover's): it only ends from then on.
	OpFinish Op = "finish"
	// OpLoad makes an empty Map (a new shard's log) a copy of Map.
	OpLoad Op = "load"
	// OpSyncMove makes this Map's copy of move State what State says (in
	// a shard's log, which learns of a move and its turns this way): it
	// adds the move, or updates its epoch and direction, and refuses a
	// State older than what it holds or of a move that ended.
	OpSyncMove Op = "sync-move"
)

// Change is one entry of the routing log.
type Change struct {
	Op     Op      `json:"op"`
	Shards []Shard `json:"shards,omitempty"`
	Shard  string  `json:"shard,omitempty"`
	Range  Range   `json:"range,omitzero"`
	Move   uint64  `json:"move,omitempty"`
	Keys   uint64  `json:"keys,omitempty"`
	// Epoch, when set, is the epoch of the mover making a progress or
	// end-move change: an older one's is refused.
	Epoch uint64 `json:"epoch,omitempty"`
	// State is the move of a sync-move change, whose Shards are its
	// source's and target's records.
	State *Move `json:"state,omitempty"`
	// Map is the routing data a load change copies.
	Map *Map `json:"map,omitempty"`
	// Cancelled is the direction of a finish change.
	Cancelled bool `json:"cancelled,omitempty"`
	// DropCopies, set by the applier (never logged), makes a sync-move
	// drop the moves it overlaps that this Map's shard takes no part in
	// (copies of the routing data a shard was made with, see syncMove)
	// instead of refusing; entries of entry.PlacedFormat and later.
	DropCopies bool `json:"-"`
}

// Apply makes change c, or refuses it with an error that wraps one of the
// errors above and leaves m unchanged. A begun move's id is returned.
func (m *Map) Apply(c Change) (uint64, error) {
	switch c.Op {
	case OpInit:
		return 0, m.init(c.Shards)
	case OpAddShard:
		if len(c.Shards) != 1 {
			return 0, fmt.Errorf("%w: add-shard names one shard", ErrBadMembers)
		}
		return 0, m.addShard(c.Shards[0])
	case OpRemoveShard:
		return 0, m.removeShard(c.Shard)
	case OpBeginMove, OpProgress, OpEndMove, OpCancelMove, OpFinish, OpClaim, OpSyncMove:
		return m.applyMove(c)
	case OpLoad:
		if len(m.shards) > 0 {
			return 0, ErrNotEmpty
		}
		if c.Map == nil {
			return 0, fmt.Errorf("%w: load without a map", ErrBadMembers)
		}
		*m = *c.Map.Clone()
		return 0, nil
	}
	return 0, fmt.Errorf("unknown routing change %q", c.Op)
}

func checkMembers(s Shard) error {
	if s.ID == "" || len(s.Members) == 0 {
		return fmt.Errorf("%w: shard %q", ErrBadMembers, s.ID)
	}
	seen := map[uint64]bool{}
	for _, id := range s.Members {
		if id == 0 || seen[id] {
			return fmt.Errorf("%w: shard %q", ErrBadMembers, s.ID)
		}
		seen[id] = true
	}
	return nil
}

func (m *Map) init(shards []Shard) error {
	if len(m.shards) > 0 {
		return ErrNotEmpty
	}
	if len(shards) == 0 || len(shards) > MaxShards {
		return fmt.Errorf("%w: %d shards", ErrBadMembers, len(shards))
	}
	for i, s := range shards {
		if err := checkMembers(s); err != nil {
			return err
		}
		for _, o := range shards[:i] {
			if o.ID == s.ID {
				return fmt.Errorf("%w: %q", ErrShardExists, s.ID)
			}
		}
	}
	// The shards keep their given order for the split, then are kept by id.
	per, extra := NumSlots/len(shards), NumSlots%len(shards)
	first := 0
	ranges := make([]Range, len(shards))
	for i := range shards {
		n := per
		if i < extra {
			n++
		}
		ranges[i] = Range{first, first + n - 1}
		first += n
	}
	for _, s := range shards {
		m.shards = append(m.shards, s.clone())
	}
	slices.SortFunc(m.shards, func(a, b Shard) int { return cmpString(a.ID, b.ID) })
	for i, s := range shards {
		idx := uint16(m.shard(s.ID) + 1)
		for slot := ranges[i].First; slot <= ranges[i].Last; slot++ {
			m.owner[slot] = idx
		}
	}
	return nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Map) addShard(s Shard) error {
	if err := checkMembers(s); err != nil {
		return err
	}
	if m.shard(s.ID) >= 0 || slices.Contains(m.removed, s.ID) {
		return fmt.Errorf("%w: %q", ErrShardExists, s.ID)
	}
	if len(m.shards) >= MaxShards {
		return fmt.Errorf("%w: at most %d shards", ErrBadMembers, MaxShards)
	}
	i, _ := slices.BinarySearchFunc(m.shards, s.ID, func(a Shard, id string) int { return cmpString(a.ID, id) })
	m.shards = slices.Insert(m.shards, i, s.clone())
	// Owner indexes at or after i move up by one.
	for slot, o := range m.owner {
		if o != 0 && int(o-1) >= i {
			m.owner[slot] = o + 1
		}
	}
	return nil
}

func (m *Map) removeShard(id string) error {
	i := m.shard(id)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrNoShard, id)
	}
	for _, o := range m.owner {
		if int(o) == i+1 {
			return fmt.Errorf("%w: %q", ErrShardInUse, id)
		}
	}
	for _, mv := range m.moves {
		if mv.From == id || mv.To == id {
			return fmt.Errorf("%w: %q", ErrShardInUse, id)
		}
	}
	m.shards = slices.Delete(m.shards, i, i+1)
	m.removed = append(m.removed, id)
	for slot, o := range m.owner {
		if o != 0 && int(o-1) > i {
			m.owner[slot] = o - 1
		}
	}
	return nil
}

func (m *Map) shard(id string) int {
	i, ok := slices.BinarySearchFunc(m.shards, id, func(a Shard, id string) int { return cmpString(a.ID, id) })
	if !ok {
		return -1
	}
	return i
}

func (m *Map) move(id uint64) int {
	return slices.IndexFunc(m.moves, func(mv Move) bool { return mv.ID == id })
}

// Owner is the id of the shard that owns slot, or "" when none does (a Map
// before init). During a move the source still owns the moving slots.
func (m *Map) Owner(slot int) string {
	if slot < 0 || slot >= NumSlots || m.owner[slot] == 0 {
		return ""
	}
	return m.shards[m.owner[slot]-1].ID
}

// Shards returns the shards, by id.
func (m *Map) Shards() []Shard {
	out := make([]Shard, len(m.shards))
	for i, s := range m.shards {
		out[i] = s.clone()
	}
	return out
}

// AnyPlaced reports whether some shard is placed on some nodes only: then
// a node no longer applies every shard's log.
func (m *Map) AnyPlaced() bool {
	return slices.ContainsFunc(m.shards, func(s Shard) bool { return s.Placed })
}

// Removed returns the ids of the shards removed.
func (m *Map) Removed() []string { return slices.Clone(m.removed) }

// Shard returns the record of shard id.
func (m *Map) Shard(id string) (Shard, bool) {
	i := m.shard(id)
	if i < 0 {
		return Shard{}, false
	}
	return m.shards[i].clone(), true
}

// Assignment is a range of slots and the shard that owns it.
type Assignment struct {
	Range
	Shard string `json:"shard"`
}

// Assignments returns the owned slots as maximal ranges of one owner, in
// slot order: what CLUSTER SLOTS lists.
func (m *Map) Assignments() []Assignment {
	var out []Assignment
	for s := 0; s < NumSlots; {
		o := m.owner[s]
		e := s
		for e+1 < NumSlots && m.owner[e+1] == o {
			e++
		}
		if o != 0 {
			out = append(out, Assignment{Range{s, e}, m.shards[o-1].ID})
		}
		s = e + 1
	}
	return out
}

// Ranges returns the slots shard id owns, as maximal ranges.
func (m *Map) Ranges(id string) []Range {
	var out []Range
	for _, a := range m.Assignments() {
		if a.Shard == id {
			out = append(out, a.Range)
		}
	}
	return out
}

// wire is a Map's encoding, for snapshots of the routing log.
type wire struct {
	Shards   []Shard      `json:"shards"`
	Slots    []Assignment `json:"slots"`
	Moves    []Move       `json:"moves,omitempty"`
	NextMove uint64       `json:"next_move,omitempty"`
	Ended    []uint64     `json:"ended,omitempty"`
	Removed  []string     `json:"removed,omitempty"`
}

// MarshalJSON encodes m with its slots as ranges.
func (m *Map) MarshalJSON() ([]byte, error) {
	return json.Marshal(wire{Shards: m.shards, Slots: m.Assignments(), Moves: m.moves, NextMove: m.nextMove, Ended: m.ended, Removed: m.removed})
}

// UnmarshalJSON decodes what MarshalJSON encoded, refusing a map that is
// not whole (a slot of an unknown shard, overlapping ranges).
func (m *Map) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var n Map
	for _, s := range w.Shards {
		if err := n.addShard(s); err != nil {
			return fmt.Errorf("decode routing map: %w", err)
		}
	}
	for _, a := range w.Slots {
		i := n.shard(a.Shard)
		if !a.Range.valid() || i < 0 {
			return fmt.Errorf("decode routing map: %w: %s of %q", ErrBadRange, a.Range, a.Shard)
		}
		for s := a.First; s <= a.Last; s++ {
			if n.owner[s] != 0 {
				return fmt.Errorf("decode routing map: %w: slot %d twice", ErrBadRange, s)
			}
			n.owner[s] = uint16(i + 1)
		}
	}
	for i, mv := range w.Moves {
		from := n.shard(mv.From)
		if !mv.Range.valid() || from < 0 || n.shard(mv.To) < 0 || mv.ID == 0 || mv.ID > w.NextMove {
			return fmt.Errorf("decode routing map: bad move %+v", mv)
		}
		for s := mv.Range.First; s <= mv.Range.Last; s++ {
			if int(n.owner[s]) != from+1 {
				return fmt.Errorf("decode routing map: move %d: slot %d is not %q's", mv.ID, s, mv.From)
			}
		}
		for _, o := range w.Moves[:i] {
			if o.ID == mv.ID || o.Range.overlaps(mv.Range) {
				return fmt.Errorf("decode routing map: moves %d and %d overlap", o.ID, mv.ID)
			}
		}
	}
	n.moves, n.nextMove, n.ended, n.removed = w.Moves, w.NextMove, w.Ended, w.Removed
	*m = n
	return nil
}

// ForNewShard is a copy of m for the log of a shard being made (OpLoad):
// without the moves in progress, which the new shard takes no part in, so
// that no mover would ever end them in its log.
func (m *Map) ForNewShard() *Map {
	c := m.Clone()
	c.moves = nil
	return c
}

// Clone returns a copy of m that shares nothing with it: a Map that was
// handed to readers is never changed, a clone is.
func (m *Map) Clone() *Map {
	c := &Map{owner: m.owner, nextMove: m.nextMove, moves: slices.Clone(m.moves), ended: slices.Clone(m.ended), removed: slices.Clone(m.removed)}
	c.shards = m.Shards()
	return c
}
