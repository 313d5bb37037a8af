package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const systemdDir = "../../deploy/systemd"

// unitValue returns the value of the first key= line of a unit file.
func unitValue(t *testing.T, unit, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatalf("no %s= line", key)
	}
	return m[1]
}

// TestSystemdUnits: the unit pair in deploy/systemd is one systemd
// accepts, and the example config raftproxy.service reads is one raftproxy
// accepts, pointing at the socket and directories the units make.
func TestSystemdUnits(t *testing.T) {
	readUnit := func(name string) string {
		b, err := os.ReadFile(filepath.Join(systemdDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	redisUnit, proxyUnit := readUnit("raftproxy-redis.service"), readUnit("raftproxy.service")

	conf, err := os.ReadFile(filepath.Join(systemdDir, "raftproxy.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if got := unitValue(t, proxyUnit, "ExecStart"); got != "/usr/local/bin/raftproxy --config /etc/raftproxy/raftproxy.conf" {
		t.Errorf("raftproxy.service ExecStart=%s", got)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "peer-secret")
	if err := os.WriteFile(secret, []byte("a secret of more than sixteen bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "HOST", "db1.example")
	c = strings.ReplaceAll(c, "/etc/raftproxy/peer-secret", secret)
	confFile := filepath.Join(dir, "raftproxy.conf")
	if err := os.WriteFile(confFile, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"--config", confFile}, nil)
	if err != nil {
		t.Fatalf("raftproxy does not accept deploy/systemd/raftproxy.conf: %v", err)
	}
	if sock := regexp.MustCompile(`--unixsocket (\S+)`).FindStringSubmatch(unitValue(t, redisUnit, "ExecStart")); sock == nil || sock[1] != o.redis {
		t.Errorf("raftproxy.conf redis = %s, but raftproxy-redis.service listens on %v", o.redis, sock)
	}
	if want := "/var/lib/" + unitValue(t, proxyUnit, "StateDirectory"); o.dataDir != want {
		t.Errorf("raftproxy.conf data-dir = %s, want raftproxy.service's state directory %s", o.dataDir, want)
	}
	if o.peerSecret == "" {
		t.Error("the example config has peers authenticate with no secret")
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the units' syntax is not checked by systemd")
	}
	// verify checks that ExecStart names an executable: this test's own
	// binary stands in for raftproxy and redis-server.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, unit := range map[string]string{"raftproxy-redis.service": redisUnit, "raftproxy.service": proxyUnit} {
		unit = strings.NewReplacer("/usr/local/bin/raftproxy", self, "/usr/bin/redis-server", self).Replace(unit)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", filepath.Join(dir, "raftproxy-redis.service"), filepath.Join(dir, "raftproxy.service")).CombinedOutput()
	if err != nil || strings.Contains(string(out), "raftproxy") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
