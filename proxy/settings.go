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
	// initial are the values before the saved ones were applied (the
	// command line's), which RAFT.CONFIG RESET restores.
	initial map[string]string
}

// Override is a saved value that replaced the command line's at start.
type Override struct {
	Name, Saved, Flag string
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

// Load applies the saved values, if any, and returns those that differ
// from the command line's, for the log: a value saved long ago must not
// override a flag unseen.
func (s *Settings) Load() ([]Override, error) {
	s.initial = map[string]string{}
	for _, st := range s.list {
		s.initial[st.Name] = st.Get()
	}
	saved, err := ReadSavedSettings(s.file)
	if err != nil {
		return nil, err
	}
	var out []Override
	for _, st := range s.list {
		v, ok := saved[st.Name]
		if !ok {
			continue
		}
		if err := st.Set(v); err != nil {
			return nil, fmt.Errorf("saved setting %s=%q in %s: %w", st.Name, v, s.file, err)
		}
		if now := st.Get(); now != s.initial[st.Name] {
			out = append(out, Override{Name: st.Name, Saved: now, Flag: s.initial[st.Name]})
		}
	}
	return out, nil
}

// ReadSavedSettings reads a settings file (SettingsFile): nothing when
// there is none.
func ReadSavedSettings(file string) (map[string]string, error) {
	saved := map[string]string{}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return saved, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved settings: %w", err)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("decode saved settings %s: %w", file, err)
	}
	return saved, nil
}

// writeSaved replaces the settings file with saved (removes it when
// empty), atomically.
func (s *Settings) writeSaved(saved map[string]string) error {
	if len(saved) == 0 {
		if err := os.Remove(s.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove saved settings: %w", err)
		}
		return nil
	}
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

// reset forgets the saved value of name (or of every setting, for "all")
// and restores the command line's.
func (s *Settings) reset(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	saved, err := ReadSavedSettings(s.file)
	if err != nil {
		return err
	}
	var targets []Setting
	if strings.EqualFold(name, "all") {
		targets = s.list
	} else if st, ok := s.find(name); ok {
		targets = []Setting{st}
	} else {
		return fmt.Errorf("Unknown option for RAFT.CONFIG RESET - '%s'", name)
	}
	for _, st := range targets {
		if v, ok := s.initial[st.Name]; ok {
			if err := st.Set(v); err != nil {
				return fmt.Errorf("restore %s=%q: %w", st.Name, v, err)
			}
		}
		delete(saved, st.Name)
	}
	return s.writeSaved(saved)
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
	saved, err := ReadSavedSettings(s.file)
	if err != nil {
		saved = map[string]string{}
	}
	saved[st.Name] = st.Get()
	return s.writeSaved(saved)
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

// raftConfig handles RAFT.CONFIG GET <pattern>, RAFT.CONFIG SET <name>
// <value> and RAFT.CONFIG RESET <name>|ALL.
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
	case sub == "reset" && len(args) == 3:
		if err := s.reset(string(args[2])); err != nil {
			return errReply("ERR " + err.Error())
		}
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	case sub == "get" || sub == "set" || sub == "reset":
		return errReply(fmt.Sprintf("ERR wrong number of arguments for 'raft.config|%s' command", sub))
	}
	return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.CONFIG HELP.", args[1]))
}
