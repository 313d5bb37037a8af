package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	required := []string{"--listen", "127.0.0.1:7000", "--peer-listen", "127.0.0.1:7001", "--data-dir", dir}
	good := write("good.conf", `# a comment
request-timeout = 3s
tick: 50ms
requirepass = "with space # and quote\""
max-request-bytes = 1mb
`)
	pass := write("pass", "s3cret\n")
	tests := []struct {
		name    string
		args    []string
		env     []string
		check   func(t *testing.T, o options)
		wantErr string // substring; "" means success
		warn    string // substring of a warning
	}{
		{name: "defaults", args: required, check: func(t *testing.T, o options) {
			if o.requestTimeout != 5*time.Second || o.advertise != "127.0.0.1:7000" || o.maxClients != 10000 || o.maxRequest != 512<<20 {
				t.Errorf("defaults: %+v", o)
			}
		}},
		{name: "file", args: append([]string{"--config", good}, required...), check: func(t *testing.T, o options) {
			if o.requestTimeout != 3*time.Second || o.tick != 50*time.Millisecond || o.requirePass != `with space # and quote"` || o.maxRequest != 1<<20 {
				t.Errorf("from file: %+v", o)
			}
		}},
		{name: "env beats file, flag beats env",
			args: append([]string{"--config", good, "--tick", "20ms"}, required...),
			env:  []string{"RAFTPROXY_REQUEST_TIMEOUT=2s", "RAFTPROXY_TICK=30ms", "PATH=/bin"},
			check: func(t *testing.T, o options) {
				if o.requestTimeout != 2*time.Second || o.tick != 20*time.Millisecond {
					t.Errorf("precedence: timeout %v (want env's 2s), tick %v (want flag's 20ms)", o.requestTimeout, o.tick)
				}
			}},
		{name: "config file from the environment", args: required, env: []string{"RAFTPROXY_CONFIG=" + good},
			check: func(t *testing.T, o options) {
				if o.tick != 50*time.Millisecond {
					t.Errorf("tick %v, want the file's 50ms", o.tick)
				}
			}},
		{name: "everything from the environment", env: []string{"RAFTPROXY_LISTEN=127.0.0.1:1", "RAFTPROXY_PEER_LISTEN=127.0.0.1:2",
			"RAFTPROXY_DATA_DIR=" + dir, "RAFTPROXY_FOLLOWER_PROXY=false", "RAFTPROXY_MAX_CLIENTS=5"},
			check: func(t *testing.T, o options) {
				if o.listen != "127.0.0.1:1" || o.followerProxy || o.maxClients != 5 {
					t.Errorf("from env: %+v", o)
				}
			}},
		{name: "unknown env var warns", args: required, env: []string{"RAFTPROXY_LISTN=x"}, warn: "RAFTPROXY_LISTN"},
		{name: "password file", args: append([]string{"--requirepass-file", pass}, required...), check: func(t *testing.T, o options) {
			if o.requirePass != "s3cret" {
				t.Errorf("requirepass %q, want s3cret", o.requirePass)
			}
		}},
		{name: "password twice", args: append([]string{"--requirepass-file", pass, "--requirepass", "x"}, required...), wantErr: "not both"},
		{name: "empty password file", args: append([]string{"--redis-password-file", write("empty", "\n")}, required...), wantErr: "is empty"},

		{name: "missing required", args: []string{"--listen", "127.0.0.1:1"}, wantErr: "missing required --peer-listen (or RAFTPROXY_PEER_LISTEN"},
		{name: "bad env duration", args: required, env: []string{"RAFTPROXY_TICK=soon"}, wantErr: `environment variable RAFTPROXY_TICK: invalid value "soon"`},
		{name: "bad file duration", args: append([]string{"--config", write("bad.conf", "\n\ntick = soon\n")}, required...), wantErr: "bad.conf:3: invalid value \"soon\" for tick"},
		{name: "unknown file key", args: append([]string{"--config", write("unk.conf", "listn = x\n")}, required...), wantErr: `unk.conf:1: unknown setting "listn"`},
		{name: "config in the file", args: append([]string{"--config", write("rec.conf", "config = x\n")}, required...), wantErr: `unknown setting "config"`},
		{name: "repeated file key", args: append([]string{"--config", write("dup.conf", "tick = 1s\ntick = 2s\n")}, required...), wantErr: "dup.conf:2: \"tick\" is already set on line 1"},
		{name: "line without separator", args: append([]string{"--config", write("sep.conf", "tick 1s\n")}, required...), wantErr: "sep.conf:1: want"},
		{name: "missing config file", args: append([]string{"--config", filepath.Join(dir, "nope")}, required...), wantErr: "flag --config: read config file"},
		{name: "bad address", args: []string{"--listen", "localhost", "--peer-listen", "127.0.0.1:1", "--data-dir", dir}, wantErr: `flag --listen: invalid address "localhost"`},
		{name: "bad port from env", args: []string{"--listen", "127.0.0.1:1", "--data-dir", dir}, env: []string{"RAFTPROXY_PEER_LISTEN=h:70000"}, wantErr: "environment variable RAFTPROXY_PEER_LISTEN: invalid port \"70000\""},
		{name: "range from file", args: append([]string{"--config", write("range.conf", "election-ticks = 1\n")}, required...), wantErr: `range.conf:1: invalid value "1" for --election-ticks: want at least 2`},
		{name: "pubsub limit too small", args: append([]string{"--pubsub-output-buffer-limit", "0"}, required...), wantErr: "want at least 1kb"},
		{name: "bad byte size", args: append([]string{"--max-request-bytes", "lots"}, required...), wantErr: "want a number of bytes"},
		{name: "bad log level", args: append([]string{"--log-level", "loud"}, required...), wantErr: "flag --log-level: invalid --log-level"},
		{name: "bad log format", args: append([]string{"--log-format", "xml"}, required...), wantErr: `flag --log-format: invalid --log-format "xml": want text or json`},
		{name: "positional argument", args: append(required, "extra"), wantErr: `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(o.warnings, "\n"), tc.warn) {
				t.Errorf("warnings %q, want one naming %s", o.warnings, tc.warn)
			}
			if tc.warn == "" && len(o.warnings) > 0 {
				t.Errorf("unexpected warnings %q", o.warnings)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"100", 100, true}, {"64kb", 64 << 10, true}, {"32MB", 32 << 20, true}, {"1gb", 1 << 30, true},
		{"2k", 2000, true}, {"3m", 3e6, true}, {"7b", 7, true},
		{"", 0, false}, {"-1", 0, false}, {"1.5mb", 0, false}, {"mb", 0, false}, {"99999999999999gb", 0, false},
	} {
		got, err := parseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"peer-listen": "RAFTPROXY_PEER_LISTEN", "tick": "RAFTPROXY_TICK", "tls-client-ca": "RAFTPROXY_TLS_CLIENT_CA"} {
		if got := envName(in); got != want {
			t.Errorf("envName(%q) = %q, want %q", in, got, want)
		}
	}
}
