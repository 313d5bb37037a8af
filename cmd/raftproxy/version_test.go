package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/version"
)

func TestVersionText(t *testing.T) {
	got := versionText(version.Info{Release: "1.2.3", Commit: "0123456789abcdef", Modified: true, Go: "go1.26.8", EntryFormat: 4})
	want := "raftproxy 1.2.3\ncommit: 0123456789abcdef (uncommitted changes)\ngo: go1.26.8\nlog entry format: 4 (decodes 1-4)\n"
	if got != want {
		t.Errorf("versionText:\n got %q\nwant %q", got, want)
	}
}

// TestVersionCommand runs built binaries: `raftproxy version` and
// `--version` answer without any of the flags a server needs, and name the
// commit, whether Go recorded it (-buildvcs) or the Makefile stamped it.
func TestVersionCommand(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout (git rev-parse HEAD: %v): no commit to expect", err)
	}
	dir := t.TempDir()
	builds := []struct {
		name   string
		args   []string
		commit string
	}{
		{"buildvcs", []string{"-buildvcs=true"}, strings.TrimSpace(string(head))},
		{"stamped", []string{"-buildvcs=false", "-ldflags", "-X github.com/raftproxy/raftproxy/version.commit=0123abcd"}, "0123abcd"},
	}
	for _, b := range builds {
		bin := dir + "/" + b.name
		args := append(append([]string{"build"}, b.args...), "-o", bin, ".")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
		for _, arg := range []string{"version", "--version"} {
			out, err := exec.Command(bin, arg).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", b.name, arg, err, out)
			}
			if !strings.HasPrefix(string(out), "raftproxy "+version.Release+"\ncommit: "+b.commit) || !strings.Contains(string(out), "log entry format: ") {
				t.Errorf("%s: raftproxy %s printed %q, want commit %s", b.name, arg, out, b.commit)
			}
		}
	}
}

// TestLogFormats: --log-format json writes one JSON object per line that a
// collector can parse, with the level and message; text writes key=value.
func TestLogFormats(t *testing.T) {
	var b strings.Builder
	log, _, err := newLogger(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("raftproxy serving", "listen", "127.0.0.1:7001")
	log.Debug("not shown")
	var rec map[string]any
	if err := json.Unmarshal([]byte(b.String()), &rec); err != nil {
		t.Fatalf("json log line %q: %v", b.String(), err)
	}
	if rec["level"] != "INFO" || rec["msg"] != "raftproxy serving" || rec["listen"] != "127.0.0.1:7001" || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("json log: %q", b.String())
	}
	b.Reset()
	log, _, _ = newLogger(&b, "info", "text")
	log.Info("raftproxy serving", "listen", "127.0.0.1:7001")
	if !strings.Contains(b.String(), `level=INFO msg="raftproxy serving" listen=127.0.0.1:7001`) {
		t.Errorf("text log: %q", b.String())
	}
}
