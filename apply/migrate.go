package apply

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// A slot move copies keys from its source shard to its target in batches,
// each in three steps that the shards' logs carry (OpRoute requests, beside
// the routing changes), proposed by the mover on the primary group's
// leader:
//
//  1. export, in the source's log: the batch's keys are locked (commands
//     naming them are refused with -TRYAGAIN) and their values (DUMP) and
//     deadlines returned to the mover, as of that entry;
//  2. import, in the target's log: the keys are restored (RESTORE … ABSTTL
//     REPLACE), type, value and deadline;
//  3. drop, in the source's log: the keys are deleted and unlocked.
//
// A key is thus served by the source while it exists there and by the
// target after (the source answers -ASK for a key it does not hold, and
// the target accepts commands sent after ASKING), and is never written in
// between. The source creates no key in a moving slot, so once a pass finds
// none left the slots can change hands. Each step names the mover's epoch:
// a step of a mover that was superseded (a leader change) is refused, so
// one mover at a time copies a move's keys.

// Move step ops.
const (
	StepExport = "export"
	StepImport = "import"
	StepDrop   = "drop"
)

// MoveStep is one step of move Move by the mover of epoch Epoch.
type MoveStep struct {
	Op    string     `json:"op"`
	Move  uint64     `json:"move"`
	Epoch uint64     `json:"epoch"`
	Keys  []MovedKey `json:"keys,omitempty"`
	// Locked: export also every key the move holds locked (a batch an
	// earlier mover left half done).
	Locked bool `json:"locked,omitempty"`
}

// MovedKey is a key of a batch: export answers with its value and
// deadline, import restores them.
type MovedKey struct {
	DB  int    `json:"db"`
	Key []byte `json:"key"`
	// Deadline is when the key expires (ms since the epoch), 0 never.
	Deadline int64  `json:"deadline,omitempty"`
	Dump     []byte `json:"dump,omitempty"`
}

// LockedText is the refusal of a write to a key being copied to another
// shard that moment; the write had no effect, and may be sent again.
const LockedText = "TRYAGAIN a key of this command is being copied to another shard"

// routeArg is the argument of an OpRoute request: a routing change, or a
// move step.
type routeArg struct {
	slotmap.Change
	Step *MoveStep `json:"step,omitempty"`
}

type lockKey struct {
	db  int
	key string
}

// lockState is a lock in a snapshot.
type lockState struct {
	DB   int    `json:"db"`
	Key  []byte `json:"key"`
	Move uint64 `json:"move"`
}

// maxExportBytes bounds the values one export carries (one key may exceed
// it alone).
const maxExportBytes = 8 << 20

var (
	errRehashing = resp.AppendError(nil, "TRYAGAIN Multiple keys request during rehashing of slot")
	// errLocked refuses a write to a key being copied to the target.
	errLocked = resp.AppendError(nil, LockedText)
	nilBulk   = "$-1\r\n"
)

// moveStep applies a move step, as this shard's log orders it.
func (m *Machine) moveStep(c *fsm.Command, st *MoveStep) ([]byte, error) {
	rt := m.routing.Load()
	if rt == nil || m.shard == nil {
		return resp.AppendError(nil, "ERR a move step in a cluster that is not sharded"), nil
	}
	mv, ok := rt.MoveByID(st.Move)
	switch {
	case !ok:
		return resp.AppendError(nil, fmt.Sprintf("ERR no move %d in this shard's log", st.Move)), nil
	case mv.Epoch != st.Epoch:
		return resp.AppendError(nil, fmt.Sprintf("ERR %v: move %d is at epoch %d, not %d", slotmap.ErrStaleMover, st.Move, mv.Epoch, st.Epoch)), nil
	}
	self := m.shard()
	want := mv.Src()
	if st.Op == StepImport {
		want = mv.Dst()
	}
	if self != want && st.Op == StepExport && st.Locked && len(st.Keys) == 0 {
		// The finishing of a batch a mover left, in the direction this
		// shard no longer has: it turned with nothing locked.
		return resp.AppendBulk(nil, []byte("[]")), nil
	}
	if self != want {
		return resp.AppendError(nil, fmt.Sprintf("ERR move %d: %s is a step of shard %s", st.Move, st.Op, want)), nil
	}
	switch st.Op {
	case StepExport:
		return m.export(c, mv, st)
	case StepImport:
		return m.importKeys(c, st.Keys)
	case StepDrop:
		return m.drop(c, mv, st.Keys)
	}
	return resp.AppendError(nil, fmt.Sprintf("ERR unknown move step %q", st.Op)), nil
}

func inMove(mv slotmap.Move, key []byte) bool {
	s := slotmap.KeySlot(key)
	return mv.Range.First <= s && s <= mv.Range.Last
}

// export locks the batch's keys that exist and answers their values and
// deadlines (a JSON array of MovedKey in a bulk string).
func (m *Machine) export(c *fsm.Command, mv slotmap.Move, st *MoveStep) ([]byte, error) {
	var keys []MovedKey
	seen := map[lockKey]bool{}
	add := func(db int, key []byte) {
		lk := lockKey{db, string(key)}
		if !seen[lk] && inMove(mv, key) {
			seen[lk] = true
			keys = append(keys, MovedKey{DB: db, Key: key})
		}
	}
	for _, k := range st.Keys {
		add(k.DB, k.Key)
	}
	if st.Locked {
		var held []lockKey
		for lk, id := range m.locks {
			if id == mv.ID {
				held = append(held, lk)
			}
		}
		// The map's order is random; the batch's must be the log's.
		slices.SortFunc(held, func(a, b lockKey) int { return cmp.Or(cmp.Compare(a.db, b.db), cmp.Compare(a.key, b.key)) })
		for _, lk := range held {
			add(lk.db, []byte(lk.key))
		}
	}
	// DUMP runs like any command at this entry's time, so a key that
	// expired by then is deleted first and not moved.
	dumps := make([][]byte, len(keys))
	cmds := make([]fsm.Command, len(keys))
	for i, k := range keys {
		i := i
		cmds[i] = fsm.Command{Index: c.Index, DB: k.DB, Args: [][]byte{[]byte("DUMP"), k.Key}, TimeMs: c.TimeMs, Live: c.Live,
			Reply: func(raw []byte) { dumps[i] = append([]byte(nil), raw...) }}
	}
	if len(cmds) > 0 {
		if err := m.redis.Apply(cmds); err != nil {
			return nil, err
		}
	}
	out := keys[:0]
	size := 0
	for i, k := range keys {
		v, _, err := resp.Parse(dumps[i])
		if err != nil || v.Kind != '$' || string(dumps[i]) == nilBulk {
			delete(m.locks, lockKey{k.DB, string(k.Key)}) // gone (expired): nothing to move
			continue
		}
		if size > 0 && size+len(v.Str) > maxExportBytes {
			// The rest wait for a later batch (the mover scans again),
			// so that a batch's log entries stay bounded; a key locked
			// by an earlier export stays in this one.
			if _, held := m.locks[lockKey{k.DB, string(k.Key)}]; !held {
				continue
			}
		}
		size += len(v.Str)
		k.Dump = append([]byte(nil), v.Str...)
		out = append(out, k)
	}
	// One round trip per database for the deadlines.
	byDB := map[int][]int{}
	for i := range out {
		byDB[out[i].DB] = append(byDB[out[i].DB], i)
	}
	for db, idx := range byDB {
		names := make([][]byte, len(idx))
		for j, i := range idx {
			names[j] = out[i].Key
		}
		d, err := m.redis.KeyDeadlines(db, names)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			if d[j] > 0 {
				out[i].Deadline = d[j]
			}
		}
	}
	if m.locks == nil && len(out) > 0 {
		m.locks = map[lockKey]uint64{}
	}
	for i := range out {
		m.locks[lockKey{out[i].DB, string(out[i].Key)}] = mv.ID
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return resp.AppendBulk(nil, b), nil
}

// importKeys restores exported keys with their deadlines, replacing what
// the target holds under their names: only an earlier copy of the same
// locked value can be there, since clients reach the target for a key only
// once the source no longer holds it.
func (m *Machine) importKeys(c *fsm.Command, keys []MovedKey) ([]byte, error) {
	var failed []byte
	run := make([]fsm.Command, len(keys))
	for i, k := range keys {
		args := [][]byte{[]byte("RESTORE"), k.Key, []byte("0"), k.Dump}
		if k.Deadline > 0 {
			args[2] = strconv.AppendInt(nil, k.Deadline, 10)
			args = append(args, []byte("ABSTTL"))
		}
		args = append(args, []byte("REPLACE"))
		run[i] = fsm.Command{Index: c.Index, DB: k.DB, Args: args, TimeMs: c.TimeMs, Live: c.Live,
			Reply: func(raw []byte) {
				if len(raw) > 0 && raw[0] == '-' && failed == nil {
					failed = append([]byte(nil), raw...)
				}
			}}
	}
	if err := m.applyRun(run); err != nil {
		return nil, err
	}
	if failed != nil {
		return failed, nil
	}
	return resp.AppendInt(nil, int64(len(keys))), nil
}

// drop deletes and unlocks the keys of a batch that the move holds locked.
func (m *Machine) drop(c *fsm.Command, mv slotmap.Move, keys []MovedKey) ([]byte, error) {
	var run []fsm.Command
	for _, k := range keys {
		lk := lockKey{k.DB, string(k.Key)}
		if m.locks[lk] != mv.ID {
			continue
		}
		delete(m.locks, lk)
		run = append(run, fsm.Command{Index: c.Index, DB: k.DB, Args: [][]byte{[]byte("DEL"), k.Key}, TimeMs: c.TimeMs, Live: c.Live})
	}
	if err := m.applyRun(run); err != nil {
		return nil, err
	}
	return resp.AppendInt(nil, int64(len(run))), nil
}

// unlockMove drops the locks of move id: it ended, or turned around so
// that this shard receives its keys (they stay, as the only copy or a
// stale one the move replaces).
func (m *Machine) unlockMove(id uint64) {
	for lk, mid := range m.locks {
		if mid == id {
			delete(m.locks, lk)
		}
	}
}

// afterRoute settles the locks after routing change ch was applied to rt.
func (m *Machine) afterRoute(ch slotmap.Change, rt *slotmap.Map) {
	if len(m.locks) == 0 || m.shard == nil {
		return
	}
	switch ch.Op {
	case slotmap.OpEndMove:
		m.unlockMove(ch.Move)
	case slotmap.OpSyncMove:
		if mv, ok := rt.MoveByID(ch.State.ID); ok && mv.Src() != m.shard() {
			m.unlockMove(mv.ID)
		}
	}
}

// scriptWhileMoving refuses a script on a shard moving slots out: a script
// may write keys it did not declare, which could make a key the move
// already took, or one it will not see again.
func (m *Machine) scriptWhileMoving(c *fsm.Command) []byte {
	if c.Killable == 0 {
		return nil
	}
	rt, self := m.routing.Load(), m.shard()
	for _, mv := range rt.Moves() {
		if mv.Active && mv.Src() == self {
			return resp.AppendError(nil, "TRYAGAIN scripts wait while this shard moves slots out")
		}
	}
	return nil
}

// servedHere checks keys against this shard's log at this point: nil when
// the command runs, else its refusal. A key in a slot this shard neither
// owns nor imports is refused; a key in a slot it moves out is served only
// while it holds it: a command whose keys it all holds runs, one whose keys
// it holds none of is sent to the target (-ASK, naming the target shard,
// which the proxy turns into its leader's address), and one that mixes
// both, or writes a locked key, is retried (-TRYAGAIN).
func (m *Machine) servedHere(c *fsm.Command, keys [][]byte, run *[]fsm.Command) ([]byte, error) {
	rt := m.routing.Load()
	self := m.shard()
	var moving [][]byte
	var mv slotmap.Move
	for _, k := range keys {
		slot := slotmap.KeySlot(k)
		if cur, ok := rt.Moving(slot); ok {
			switch self {
			case cur.Dst():
				// Only a client the source sent here: one proposed before
				// the move turned around, to what was its source, would
				// write beside the copy the move brings back.
				if !c.Asking {
					return resp.AppendError(nil, fmt.Sprintf("TRYAGAIN slot %d is being moved to this shard", slot)), nil
				}
				continue
			case cur.Src():
				moving, mv = append(moving, k), cur
				continue
			}
		} else if rt.Owner(slot) == self {
			continue
		}
		return resp.AppendError(nil, fmt.Sprintf("TRYAGAIN slot %d is not served by this shard", slot)), nil
	}
	if len(moving) == 0 {
		return nil, nil
	}
	// A locked key is being copied: it stays here, unchanged, until its
	// drop, so a read may still see it, but a write would be lost with the
	// drop. The proxy tries such a write again for a client that waits for
	// each reply (conn.retryLocked), as redis blocks clients while MIGRATE
	// runs.
	if c.Op == entry.OpWatch || m.mayWrite(c) {
		for _, k := range moving {
			if _, locked := m.locks[lockKey{c.DB, string(k)}]; locked {
				return errLocked, nil
			}
		}
	}
	// Whether the keys exist depends on the commands before this one.
	if err := m.applyRun(*run); err != nil {
		return nil, err
	}
	*run = (*run)[:0]
	d, err := m.redis.KeyDeadlines(c.DB, moving)
	if err != nil {
		return nil, err
	}
	alive := 0
	for _, dl := range d {
		if dl == -1 || dl >= c.TimeMs {
			alive++
		}
	}
	switch alive {
	case len(moving):
		return nil, nil
	case 0:
		return resp.AppendError(nil, fmt.Sprintf("ASK %d %s", slotmap.KeySlot(moving[0]), mv.Dst())), nil
	}
	return errRehashing, nil
}
