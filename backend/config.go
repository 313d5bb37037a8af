package backend

import (
	"bytes"
	"context"
	"fmt"
	"strings"
)

// Replicated CONFIG SET. The proxy proposes a CONFIG SET of safe parameters
// to the log like any write, so every node's redis applies it at the same
// place. Redis keeps such values neither in an RDB nor anywhere a rebuild
// would find them, so the state machine records every one it applied and
// carries them in snapshots (machineState.Config): after loading a
// snapshot's RDB, or emptying redis to replay the log from its start, it
// sets them again before the entries after that point are applied.

// configParam is one parameter as the log last set it.
type configParam struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// replicatedConfig is the parameters the applied log set, in the order they
// were last set, so that aliases (hash-max-ziplist-entries and
// hash-max-listpack-entries) end with the value set last, as they did when
// the log was applied. Only the applier's goroutine touches it.
type replicatedConfig struct {
	params []configParam
}

// isConfigSet reports whether args is a CONFIG SET.
func isConfigSet(args [][]byte) bool {
	return len(args) >= 4 && bytes.EqualFold(args[0], []byte("config")) && bytes.EqualFold(args[1], []byte("set"))
}

// note records the parameters of a CONFIG SET that redis accepted. A
// refused one changed nothing, on every node alike.
func (rc *replicatedConfig) note(args [][]byte, reply []byte) bool {
	if !isConfigSet(args) || len(reply) == 0 || reply[0] != '+' {
		return false
	}
	for i := 2; i+1 < len(args); i += 2 {
		name := strings.ToLower(string(args[i]))
		for j, p := range rc.params {
			if p.Name == name {
				rc.params = append(rc.params[:j], rc.params[j+1:]...)
				break
			}
		}
		rc.params = append(rc.params, configParam{Name: name, Value: string(args[i+1])})
	}
	return true
}

// noteConfig records an applied CONFIG SET (replicatedConfig.note) and
// mirrors its memory parameters.
func (s *StateMachine) noteConfig(args [][]byte, reply []byte) {
	if !s.config.note(args, reply) {
		return
	}
	for i := 2; i+1 < len(args); i += 2 {
		s.noteMemoryConfig(strings.ToLower(string(args[i])), string(args[i+1]))
	}
}

// list returns a copy for a snapshot.
func (rc *replicatedConfig) list() []configParam {
	return append([]configParam(nil), rc.params...)
}

// restoreConfig sets the values a snapshot carries on redis again (they may
// be gone: a restarted redis starts from its own configuration) and makes
// them the state. params is empty after emptying redis: the log is then
// replayed from its start and sets every value again.
func (s *StateMachine) restoreConfig(ctx context.Context, params []configParam) error {
	if len(params) > 0 && s.conn == nil {
		return errNotConnected
	}
	s.mem.max.Store(0)
	s.mem.policy.Store(nil)
	for _, p := range params {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.noteMemoryConfig(p.Name, p.Value)
		value := p.Value
		if p.Name == "maxmemory" {
			value = string(redisMaxMemory) // memory.go
		}
		if v, err := s.conn.DoValue("CONFIG", "SET", p.Name, value); err != nil {
			if !v.IsError() {
				return fmt.Errorf("set %s again on redis: %w", p.Name, err)
			}
			// The same redis accepted it when the log was applied; one that
			// no longer does (another version) must not keep the node from
			// serving: it refuses alike on every node with that version.
			s.log.Error("redis refused a replicated CONFIG SET while restoring a snapshot", "param", p.Name, "value", p.Value, "err", err)
		} else {
			// As when the log set it: the busy threshold the applier
			// keeps must be redis's, not the one redis had before.
			s.noteBusyThreshold([][]byte{[]byte("CONFIG"), []byte("SET"), []byte(p.Name), []byte(value)}, []byte("+OK"))
		}
	}
	s.config.params = append(s.config.params[:0], params...)
	return nil
}
