package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrors runs the raftproxy binary with bad configuration from
// each source: it must stop at once with exit code 2 and say where the bad
// value came from; --help must list the environment and file mechanism.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "raftproxy.conf")
	if err := os.WriteFile(conf, []byte("# test\nlisten = 127.0.0.1:1\nidle-timeout = forever\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:2", "--data-dir", dir}
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		want     string
	}{
		{"help", []string{"--help"}, nil, 0, "RAFTPROXY_PEER_LISTEN"},
		{"bad flag", append([]string{"--max-clients", "many"}, base...), nil, 2, `invalid value "many" for flag -max-clients`},
		{"bad env", base, []string{"RAFTPROXY_TICK=soon"}, 2, `environment variable RAFTPROXY_TICK: invalid value "soon"`},
		{"bad file", append([]string{"--config", conf}, base...), nil, 2, conf + `:3: invalid value "forever" for idle-timeout`},
		{"bad address", []string{"--listen", "127.0.0.1", "--peer-listen", "127.0.0.1:2", "--data-dir", dir}, nil, 2, `flag --listen: invalid address "127.0.0.1"`},
		{"missing", nil, []string{"RAFTPROXY_LISTEN=127.0.0.1:1"}, 2, "missing required --peer-listen"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(raftproxyBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit code %d, output:\n%s\nwant exit code %d and %q", code, out, tc.wantCode, tc.want)
			}
		})
	}
}
