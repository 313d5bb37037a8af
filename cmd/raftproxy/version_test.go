package main

import (
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
