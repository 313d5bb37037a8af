package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/raftproxy/raftproxy/resp"
)

// Setting is one runtime setting of RAFT.CONFIG.
type Setting struct {
	Name string
	Get  func() string
	// Set validates and applies a value.
	Set func(value string) error
}

// Settings are the node's runtime settings. Values set with RAFT.CONFIG SET
// are saved in a file of the data dir and applied again at start, where
// they win over the command line (as a rewritten redis.conf would).
type Settings struct {
	file string
	mu   sync.Mutex
	list []Setting
}

// NewSettings returns the settings list, persisted in file.
func NewSettings(file string, list []Setting) *Settings {
	return &Settings{file: file, list: list}
}

func (s *Settings) find(name string) (Setting, bool) {
	for _, st := range s.list {
		if st.Name == strings.ToLower(name) {
			return st, true
		}
	}
	return Setting{}, false
}

// Load applies the saved values, if any.
func (s *Settings) Load() error {
	b, err := os.ReadFile(s.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read saved settings: %w", err)
	}
	var saved map[string]string
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("decode saved settings %s: %w", s.file, err)
	}
	for name, v := range saved {
		st, ok := s.find(name)
		if !ok {
			continue
		}
		if err := st.Set(v); err != nil {
			return fmt.Errorf("saved setting %s=%q in %s: %w", name, v, s.file, err)
		}
	}
	return nil
}

// set applies and saves one value.
func (s *Settings) set(name, value string) error {
	st, ok := s.find(name)
	if !ok {
		return fmt.Errorf("Unknown option or number of arguments for RAFT.CONFIG SET - '%s'", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := st.Set(value); err != nil {
		return fmt.Errorf("invalid argument '%s' for RAFT.CONFIG SET '%s': %w", value, st.Name, err)
	}
	saved := map[string]string{}
	if b, err := os.ReadFile(s.file); err == nil {
		json.Unmarshal(b, &saved)
	}
	saved[st.Name] = st.Get()
	b, _ := json.MarshalIndent(saved, "", "  ")
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save setting: %w", err)
	}
	if err := os.Rename(tmp, s.file); err != nil {
		return fmt.Errorf("save setting: %w", err)
	}
	return nil
}

// get returns name, value pairs of the settings matching a glob pattern.
func (s *Settings) get(pattern string) []string {
	var out []string
	for _, st := range s.list {
		if ok, _ := path.Match(strings.ToLower(pattern), st.Name); ok {
			out = append(out, st.Name, st.Get())
		}
	}
	return out
}

// SettingsFile is where a node keeps its RAFT.CONFIG values.
func SettingsFile(dataDir string) string { return filepath.Join(dataDir, "settings.json") }

// raftConfig handles RAFT.CONFIG GET <pattern> and RAFT.CONFIG SET <name> <value>.
func (c *conn) raftConfig(args [][]byte) *op {
	s := c.s.cfg.Settings
	if s == nil {
		return errReply("ERR RAFT.CONFIG is not available")
	}
	switch sub := strings.ToLower(string(args[1])); {
	case sub == "get" && len(args) == 3:
		kv := s.get(string(args[2]))
		// A map in RESP3, as redis's CONFIG GET replies.
		b := resp.AppendMapLen(nil, len(kv)/2, c.client.resp3)
		for _, x := range kv {
			b = resp.AppendBulkString(b, x)
		}
		return &op{kind: opReply, reply: b}
	case sub == "set" && len(args) == 4:
		if err := s.set(string(args[2]), string(args[3])); err != nil {
			return errReply("ERR " + err.Error())
		}
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	case sub == "get" || sub == "set":
		return errReply(fmt.Sprintf("ERR wrong number of arguments for 'raft.config|%s' command", sub))
	}
	return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.CONFIG HELP.", args[1]))
}
