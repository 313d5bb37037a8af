package backend

import (
	"context"
	"encoding/json"
	"fmt"
)

// machineState is the replicated state the state machine keeps beside
// redis's keyspace, which an RDB does not carry; it travels in snapshots
// (fsm.MachineState). Each feature owns one field.
type machineState struct {
	// Scripts are the registry's bodies (see Scripts), in sha order.
	Scripts [][]byte `json:"scripts,omitempty"`
	// Config is what CONFIG SET through the log set (config.go).
	Config []configParam `json:"config,omitempty"`
	// ACL is the client users, as ACL LIST lines (acl.go).
	ACL []string `json:"acl,omitempty"`
	// Deadlines is how the RDB stores deadlines (expiry.go); empty: as
	// real times, from a version that let redis expire keys by its clock.
	Deadlines string `json:"deadlines,omitempty"`
	// MemoryOver is the memory limit's state (memory.go).
	MemoryOver bool `json:"memory_over,omitempty"`
}

// MachineState implements fsm.MachineState.
func (s *StateMachine) MachineState() (json.RawMessage, error) {
	st := machineState{Scripts: s.scripts.list(), Config: s.config.list(), Deadlines: deadlinesFormat, MemoryOver: s.mem.over.Load()}
	if s.conn == nil {
		return nil, errNotConnected
	}
	var err error
	if st.ACL, err = s.aclList(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode the state machine's state: %w", err)
	}
	return b, nil
}

// RestoreMachineState implements fsm.MachineState.
func (s *StateMachine) RestoreMachineState(ctx context.Context, raw json.RawMessage) error {
	var st machineState
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode the state machine's state from a snapshot: %w", err)
		}
	}
	if s.conn == nil {
		return errNotConnected
	}
	if len(raw) > 0 && st.Deadlines != deadlinesFormat {
		if err := s.convertLegacy(ctx); err != nil {
			s.dropConn()
			return err
		}
	}
	if err := s.release(); err != nil {
		s.dropConn()
		return fmt.Errorf("make redis a master after loading a snapshot: %w", err)
	}
	s.scripts.restore(st.Scripts)
	s.mem.over.Store(st.MemoryOver)
	if err := s.restoreConfig(ctx, st.Config); err != nil {
		return err
	}
	return s.restoreACL(ctx, st.ACL)
}
