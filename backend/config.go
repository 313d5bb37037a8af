package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/raftproxy/raftproxy/raftnode"
)

// Replicated CONFIG SET. The proxy proposes a CONFIG SET of safe parameters
// to the log like any write, so every node's redis applies it at the same
// place. Redis keeps such values neither in an RDB nor anywhere a rebuild
// would find them, so the state machine records every one it applied and
// carries them in snapshots (raftnode.MachineState): after loading a
// snapshot's RDB, or emptying redis to replay the log from its start, it
// sets them again before the entries after that point are applied.

// configParam is one parameter as the log last set it.
type configParam struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// machineState is what travels in snapshots besides the RDB.
type machineState struct {
	// Config holds the parameters in the order they were last set, so that
	// aliases (hash-max-ziplist-entries and hash-max-listpack-entries) end
	// with the value set last, as they did when the log was applied.
	Config []configParam `json:"config,omitempty"`
}

// isConfigSet reports whether args is a CONFIG SET.
func isConfigSet(args [][]byte) bool {
	return len(args) >= 4 && bytes.EqualFold(args[0], []byte("config")) && bytes.EqualFold(args[1], []byte("set"))
}

// noteConfig records the parameters of a CONFIG SET that redis accepted.
// A refused one changed nothing, on every node alike.
func (m *machineState) noteConfig(args [][]byte, reply []byte) {
	if !isConfigSet(args) || len(reply) == 0 || reply[0] != '+' {
		return
	}
	for i := 2; i+1 < len(args); i += 2 {
		name := strings.ToLower(string(args[i]))
		m.Config = removeParam(m.Config, name)
		m.Config = append(m.Config, configParam{Name: name, Value: string(args[i+1])})
	}
}

func removeParam(ps []configParam, name string) []configParam {
	for i, p := range ps {
		if p.Name == name {
			return append(ps[:i], ps[i+1:]...)
		}
	}
	return ps
}

// MachineState implements raftnode.MachineState: the CONFIG SET values
// applied so far. Like Apply it runs on the applier's goroutine.
func (s *StateMachine) MachineState() (json.RawMessage, error) {
	raw, err := json.Marshal(s.state)
	if err != nil {
		return nil, fmt.Errorf("encode the replicated redis settings: %w", err)
	}
	return raw, nil
}

// RestoreMachineState implements raftnode.MachineState: it sets the values
// a snapshot carries on redis again (they may be gone: a restarted redis
// starts from its own configuration) and makes them the state. raw is nil
// after emptying redis: the log is then replayed from its start and sets
// every value again.
func (s *StateMachine) RestoreMachineState(ctx context.Context, raw json.RawMessage) error {
	var st machineState
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode the replicated redis settings %q: %w", raw, err)
		}
	}
	if s.conn == nil {
		return errNotConnected
	}
	for _, p := range st.Config {
		if err := ctx.Err(); err != nil {
			return err
		}
		if v, err := s.conn.DoValue("CONFIG", "SET", p.Name, p.Value); err != nil {
			if !v.IsError() {
				return fmt.Errorf("set %s again on redis: %w", p.Name, err)
			}
			// The same redis accepted it when the log was applied; one that
			// no longer does (another version) must not keep the node from
			// serving: it refuses alike on every node with that version.
			s.log.Error("redis refused a replicated CONFIG SET while restoring a snapshot", "param", p.Name, "value", p.Value, "err", err)
		}
	}
	s.state = st
	return nil
}

var _ raftnode.MachineState = (*StateMachine)(nil)
