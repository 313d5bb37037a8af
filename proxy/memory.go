package proxy

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/resp"
)

// The memory limit (maxmemory), enforced through the log; see
// backend/memory.go for the state machine's side. This is the leader's:
// every leaderPeriod (leader.go) it compares its redis's used memory with
// the limit the log set. Over it, it proposes the deletion of keys chosen by the
// policy on its own redis (evictScript: redis's sampling, by idle time,
// access frequency, deadline or at random), and when the policy is
// noeviction, or nothing is left to evict, or eviction falls behind by
// memorySlack, it proposes backend.MemoryCommand OVER: every node then
// refuses the writes redis flags denyoom, at the same place in the log.
// Below the limit again it proposes UNDER. The leader's memory stands for
// every node's: they hold the same data.

const (
	// memorySlack is how far over the limit eviction may lag before writes
	// are refused meanwhile (redis evicts before every command; here it
	// takes a round of the log).
	memorySlack = 0.05
	// evictBatch is the most keys one eviction proposal deletes.
	evictBatch = 64
)

// Memory is the memory limit's state as the applied log has it
// (backend.StateMachine).
type Memory interface {
	MemoryOver() bool
	MaxMemory() (int64, string)
}

func (s *Server) memoryOver() bool { return s.cfg.Memory != nil && s.cfg.Memory.MemoryOver() }

// oomRefusal is the reply to a command refused for memory, or nil.
func (c *conn) oomRefusal(sp *spec) *op {
	if !sp.denyOOM || !c.s.memoryOver() {
		return nil
	}
	return errReply(backend.OOMError)
}

// evictScript returns up to ARGV[3] keys to evict under policy ARGV[1],
// each the best of ARGV[2] random keys, as redis's eviction pool picks.
//
//go:embed lua/evict.lua
var evictScript string

// memoryController is the leader's side of the memory limit.
type memoryController struct {
	s       *Server
	rc      *backend.Conn
	evicted uint64
	// rest, after a round that found redis under its limit, holds until
	// the next entry is applied: only a write grows what redis holds
	// (redis itself checks its limit only as it runs a command), so until
	// then a round would find the same.
	rest quiet
}

// memoryTask is the memory limit as leader work (leader.go), nil without
// a memory limit configuration.
func (s *Server) memoryTask() *leaderTask {
	if s.cfg.Memory == nil {
		return nil
	}
	m := &memoryController{s: s}
	return &leaderTask{rc: &m.rc, idle: m.idle, round: func(n Group) error {
		err := m.round(n)
		if err != nil {
			s.log.Warn("memory limit round failed", "err", err)
		}
		return err
	}}
}

// idle says a round has nothing to do: no limit and none to lift, or
// under the limit with nothing applied since.
func (m *memoryController) idle(n Group) bool {
	limit, _ := m.s.cfg.Memory.MaxMemory()
	if limit <= 0 {
		return !m.s.memoryOver()
	}
	return m.rest.holds(n)
}

// used is the memory redis counts against maxmemory.
func (m *memoryController) used() (int64, error) {
	m.rc.SetDeadline(time.Now().Add(5 * time.Second))
	v, err := m.rc.DoValue("INFO", "memory")
	if err != nil {
		return 0, err
	}
	used, err := strconv.ParseInt(backend.InfoField(v.Str, "used_memory"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO memory: used_memory: %w", err)
	}
	not, _ := strconv.ParseInt(backend.InfoField(v.Str, "mem_not_counted_for_evict"), 10, 64)
	return used - not, nil
}

func (m *memoryController) round(n Group) error {
	since := quietOn(n) // before looking: a later entry may add to what redis holds
	m.rest = quiet{}
	limit, policy := m.s.cfg.Memory.MaxMemory()
	over := m.s.memoryOver()
	if limit <= 0 {
		if over {
			return m.setOver(n, false)
		}
		return nil
	}
	if m.rc == nil {
		rc, err := m.s.dialRedis(n)
		if err != nil {
			return err
		}
		m.rc = rc
	}
	used, err := m.used()
	if err != nil {
		return err
	}
	if used <= limit {
		if over {
			return m.setOver(n, false)
		}
		m.rest = since
		return nil
	}
	if policy == "noeviction" {
		if !over {
			return m.setOver(n, true)
		}
		return nil
	}
	// Evict until under, for at most one period; the rest next round.
	deadline := time.Now().Add(leaderPeriod)
	exhausted := false
	for used > limit && time.Now().Before(deadline) {
		want := min(evictBatch, max(1, int((used-limit)/1024)))
		keys, err := m.victims(policy, want)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			exhausted = true // nothing this policy may evict
			break
		}
		if err := m.evict(n, keys); err != nil {
			return err
		}
		if used, err = m.used(); err != nil {
			return err
		}
	}
	lagging := float64(used) > float64(limit)*(1+memorySlack)
	switch {
	case used > limit && (exhausted || lagging) && !over:
		return m.setOver(n, true)
	case used <= limit && over:
		return m.setOver(n, false)
	}
	return nil
}

// victims samples the keys to evict on the leader's redis, database by
// database, as redis does.
func (m *memoryController) victims(policy string, want int) ([]dbKey, error) {
	var out []dbKey
	samples := "5"
	for db := 0; db < m.s.databases && len(out) < want; db++ {
		m.rc.SetDeadline(time.Now().Add(5 * time.Second))
		raw, err := m.rc.DoIn(db, []byte("EVAL"), []byte(evictScript), []byte("0"), []byte(policy), []byte(samples), []byte(strconv.Itoa(want-len(out))))
		if err != nil {
			return nil, err
		}
		v, _, err := resp.Parse(raw)
		if err != nil || v.IsError() {
			return nil, fmt.Errorf("eviction sample answered %q", raw)
		}
		for _, k := range v.Elems {
			out = append(out, dbKey{db, append([]byte(nil), k.Str...)})
		}
	}
	return out, nil
}

type dbKey struct {
	db  int
	key []byte
}

// evict deletes keys through the log and waits for this node to apply it.
func (m *memoryController) evict(n Group, keys []dbKey) error {
	byDB := map[int][][]byte{}
	for _, k := range keys {
		byDB[k.db] = append(byDB[k.db], k.key)
	}
	ctx, cancel := context.WithTimeout(m.s.baseContext(), m.s.timeout())
	defer cancel()
	for db, ks := range byDB {
		args := append([][]byte{[]byte("UNLINK")}, ks...)
		raw, err := n.ProposeRequest(ctx, entry.Request{DB: db, Args: args}).Wait(ctx)
		if err != nil {
			return fmt.Errorf("evict through the log: %w", err)
		}
		if v, _, err := resp.Parse(raw); err == nil && v.Kind == ':' {
			m.s.metrics.evictedKeys.Add(float64(v.Int))
		}
	}
	return nil
}

// setOver proposes the memory state.
func (m *memoryController) setOver(n Group, over bool) error {
	state := "UNDER"
	if over {
		state = "OVER"
		m.s.log.Warn("used memory is over maxmemory: writes that need memory are refused with OOM until it is not", "policy", "see CONFIG GET maxmemory-policy")
	} else {
		m.s.log.Info("used memory is under maxmemory again: writes are accepted")
	}
	ctx, cancel := context.WithTimeout(m.s.baseContext(), m.s.timeout())
	defer cancel()
	_, err := n.ProposeRequest(ctx, entry.Request{Args: [][]byte{[]byte(backend.MemoryCommand), []byte(state)}}).Wait(ctx)
	return err
}

// configGetFix shows the maxmemory the log set in CONFIG GET's reply (redis
// itself holds 0).
func (s *Server) configGetFix(raw []byte) []byte {
	if s.cfg.Memory == nil || !bytes.Contains(raw, []byte("maxmemory")) {
		return raw
	}
	v, _, err := resp.Parse(raw)
	if err != nil || (v.Kind != '*' && v.Kind != '%') {
		return raw
	}
	max, _ := s.cfg.Memory.MaxMemory()
	elems := v.Elems
	out := resp.AppendMapLen(nil, len(elems)/2, v.Kind == '%')
	for i := 0; i+1 < len(elems); i += 2 {
		out = resp.AppendBulk(out, elems[i].Str)
		if string(elems[i].Str) == "maxmemory" {
			out = resp.AppendBulkString(out, strconv.FormatInt(max, 10))
		} else {
			out = resp.AppendBulk(out, elems[i+1].Str)
		}
	}
	return out
}
