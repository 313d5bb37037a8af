package slotmap

import (
	"cmp"
	"fmt"
	"slices"
)

// A Move takes Range from shard From to shard To. It is begun and ended
// by changes to the Map; the keys are copied in between by a mover (the
// primary group's leader), and Keys counts those copied so far. A cancelled
// move runs backwards: its keys go back from To to From, which then keeps
// the slots. Epoch is the claim of the mover driving it: each new mover
// claims a higher one, and the shards refuse the steps of an older one.
//
// A Map records a move as the routing data (begun, asked to be cancelled:
// Cancel) and as a shard's log sees it, through the mover's sync-move
// changes: Active once the shard takes part in it, Cancelled once it runs
// backwards there. The primary group's log is both, as it is a shard too.
type Move struct {
	ID        uint64 `json:"id"`
	Range     Range  `json:"range"`
	From      string `json:"from"`
	To        string `json:"to"`
	Keys      uint64 `json:"keys,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
	Cancel    bool   `json:"cancel,omitempty"`
	Active    bool   `json:"active,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
	// Finishing: the mover found the source empty and is ending the move
	// in the shards (OpFinish): the direction is final, and a mover that
	// takes over only ends it.
	Finishing bool `json:"finishing,omitempty"`
}

// Src is the shard the move's keys leave: From, or To once cancelled.
func (mv Move) Src() string {
	if mv.Cancelled {
		return mv.To
	}
	return mv.From
}

// Dst is the shard the move's keys go to, which owns the slots once the
// move ends.
func (mv Move) Dst() string {
	if mv.Cancelled {
		return mv.From
	}
	return mv.To
}

// applyMove makes a change of a move (Apply).
func (m *Map) applyMove(c Change) (uint64, error) {
	switch c.Op {
	case OpBeginMove:
		return m.beginMove(c.Range, c.Shard)
	case OpProgress:
		i, err := m.claimed(c.Move, c.Epoch)
		if err != nil {
			return 0, err
		}
		m.moves[i].Keys = c.Keys
		return c.Move, nil
	case OpEndMove:
		if slices.Contains(m.ended, c.Move) {
			return c.Move, nil // ended before: the change is a retry
		}
		i, err := m.claimed(c.Move, c.Epoch)
		if err != nil {
			return 0, err
		}
		mv := m.moves[i]
		dst := mv.Dst()
		if c.Shard != "" {
			if c.Shard != mv.From && c.Shard != mv.To {
				return 0, fmt.Errorf("%w: move %d is between %q and %q", ErrNoShard, mv.ID, mv.From, mv.To)
			}
			dst = c.Shard
		}
		to := uint16(m.shard(dst) + 1)
		for s := mv.Range.First; s <= mv.Range.Last; s++ {
			m.owner[s] = to
		}
		m.moves = slices.Delete(m.moves, i, i+1)
		m.ended = append(m.ended, mv.ID)
		return mv.ID, nil
	case OpCancelMove:
		i := m.move(c.Move)
		if i < 0 {
			return 0, fmt.Errorf("%w: %d", ErrNoMove, c.Move)
		}
		if m.moves[i].Cancel || m.moves[i].Cancelled {
			return 0, fmt.Errorf("%w: %d", ErrCancelled, c.Move)
		}
		if m.moves[i].Finishing {
			return 0, fmt.Errorf("%w: move %d copied every key and is ending", ErrFinishing, c.Move)
		}
		m.moves[i].Cancel = true
		return c.Move, nil
	case OpFinish:
		i, err := m.claimed(c.Move, c.Epoch)
		if err != nil {
			return 0, err
		}
		if m.moves[i].Cancel && !c.Cancelled {
			// A cancel came after the mover's last look: it turns first.
			return 0, fmt.Errorf("%w: move %d", ErrCancelled, c.Move)
		}
		m.moves[i].Finishing, m.moves[i].Cancelled = true, c.Cancelled
		return c.Move, nil
	case OpClaim:
		i := m.move(c.Move)
		if i < 0 {
			return 0, fmt.Errorf("%w: %d", ErrNoMove, c.Move)
		}
		m.moves[i].Epoch++
		return m.moves[i].Epoch, nil
	case OpSyncMove:
		if c.State == nil {
			return 0, fmt.Errorf("%w: sync-move without a state", ErrNoMove)
		}
		// A shard's log learns of shards added since it was made from the
		// records the change carries.
		for _, s := range c.Shards {
			if m.shard(s.ID) < 0 && !slices.Contains(m.removed, s.ID) {
				if err := m.addShard(s); err != nil {
					return 0, err
				}
			}
		}
		return m.syncMove(*c.State, c.DropCopies)
	}
	return 0, fmt.Errorf("unknown routing change %q", c.Op)
}

func (m *Map) beginMove(r Range, to string) (uint64, error) {
	if !r.valid() {
		return 0, fmt.Errorf("%w: %d-%d", ErrBadRange, r.First, r.Last)
	}
	t := m.shard(to)
	if t < 0 {
		return 0, fmt.Errorf("%w: %q", ErrNoShard, to)
	}
	o := m.owner[r.First]
	for s := r.First; s <= r.Last; s++ {
		if m.owner[s] != o || o == 0 {
			return 0, fmt.Errorf("%w: %s", ErrSplitOwner, r)
		}
	}
	if int(o) == t+1 {
		return 0, fmt.Errorf("%w: %s is %q's", ErrSameShard, r, to)
	}
	for _, mv := range m.moves {
		if mv.Range.overlaps(r) {
			return 0, fmt.Errorf("%w: %s overlaps move %d (%s)", ErrMoving, r, mv.ID, mv.Range)
		}
	}
	m.nextMove++
	m.moves = append(m.moves, Move{ID: m.nextMove, Range: r, From: m.shards[o-1].ID, To: to})
	return m.nextMove, nil
}

// claimed returns the index of move id, refusing a change of a mover
// older than the move's (epoch 0: a change that is not a mover's).
func (m *Map) claimed(id, epoch uint64) (int, error) {
	i := m.move(id)
	if i < 0 {
		return 0, fmt.Errorf("%w: %d", ErrNoMove, id)
	}
	if epoch != 0 && epoch != m.moves[i].Epoch {
		return 0, fmt.Errorf("%w: move %d is at epoch %d, not %d", ErrStaleMover, id, m.moves[i].Epoch, epoch)
	}
	return i, nil
}

func (m *Map) syncMove(st Move, dropCopies bool) (uint64, error) {
	if slices.Contains(m.ended, st.ID) {
		return 0, fmt.Errorf("%w: %d", ErrEnded, st.ID)
	}
	if i := m.move(st.ID); i >= 0 {
		cur := &m.moves[i]
		if st.Epoch < cur.Epoch || (st.Epoch == cur.Epoch && cur.Cancelled && !st.Cancelled) {
			return 0, fmt.Errorf("%w: move %d is at epoch %d, not %d", ErrStaleMover, st.ID, cur.Epoch, st.Epoch)
		}
		if st.Range != cur.Range || st.From != cur.From || st.To != cur.To {
			return 0, fmt.Errorf("%w: move %d is %s from %q to %q", ErrNoMove, st.ID, cur.Range, cur.From, cur.To)
		}
		cur.Epoch, cur.Cancelled, cur.Active = st.Epoch, cur.Cancelled || st.Cancelled, true
		return st.ID, nil
	}
	if st.ID == 0 || !st.Range.valid() || m.shard(st.To) < 0 {
		return 0, fmt.Errorf("%w: %+v", ErrNoMove, st)
	}
	from := m.shard(st.From)
	if from < 0 {
		return 0, fmt.Errorf("%w: %q", ErrNoShard, st.From)
	}
	// A shard made while moves ran got them in its copy of the routing
	// data (OpLoad), though it takes part in none (Active is false): no
	// mover ever ends them there. The routing data checked that this move
	// overlaps no move in progress, so such a copy is stale.
	if dropCopies {
		m.moves = slices.DeleteFunc(m.moves, func(mv Move) bool { return !mv.Active && mv.Range.overlaps(st.Range) })
	}
	for _, mv := range m.moves {
		if mv.Range.overlaps(st.Range) {
			return 0, fmt.Errorf("%w: %s overlaps move %d (%s)", ErrMoving, st.Range, mv.ID, mv.Range)
		}
	}
	// A shard's log hears only of the moves it takes part in, so it may
	// not know who owns slots it never held: the routing data (whose
	// begin-move checked it) says From does. Of its own slots it always
	// knows, as it took part in every move of them.
	for s := st.Range.First; s <= st.Range.Last; s++ {
		m.owner[s] = uint16(from + 1)
	}
	i, _ := slices.BinarySearchFunc(m.moves, st.ID, func(a Move, id uint64) int { return cmp.Compare(a.ID, id) })
	st.Keys, st.Active = 0, true
	m.moves = slices.Insert(m.moves, i, st)
	m.nextMove = max(m.nextMove, st.ID)
	return st.ID, nil
}

// Moving returns the move slot is part of, if this Map's shard takes part
// in it (Active).
func (m *Map) Moving(slot int) (Move, bool) {
	for _, mv := range m.moves {
		if mv.Active && mv.Range.First <= slot && slot <= mv.Range.Last {
			return mv, true
		}
	}
	return Move{}, false
}

// MoveByID returns move id, if it is in progress.
func (m *Map) MoveByID(id uint64) (Move, bool) {
	if i := m.move(id); i >= 0 {
		return m.moves[i], true
	}
	return Move{}, false
}

// Moves returns the moves in progress, oldest first.
func (m *Map) Moves() []Move { return slices.Clone(m.moves) }
