package proxy

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/raftproxy/raftproxy/backend"
)

// docs/COMMANDS.md must be what the command table says today: a change to
// the table without `make docs` fails here.
func TestCommandsDocIsCurrent(t *testing.T) {
	c, err := backend.Dial(context.Background(), startRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmds, err := c.DoValue("COMMAND")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := c.DoValue("COMMAND", "DOCS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.DoValue("INFO", "server")
	if err != nil {
		t.Fatal(err)
	}
	version := backend.InfoField(info.Str, "redis_version")
	committed, err := os.ReadFile("../docs/COMMANDS.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`redis-server (\S+)'s`).FindSubmatch(committed)
	if m == nil {
		t.Fatal("docs/COMMANDS.md does not say which redis-server it was generated from")
	}
	if string(m[1]) != version {
		t.Skipf("docs/COMMANDS.md was generated from redis-server %s and this machine has %s: the command lists differ between versions", m[1], version)
	}
	rows, err := DescribeCommands(cmds, docs)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCommandsMarkdown(&buf, rows, version); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), committed) {
		t.Errorf("docs/COMMANDS.md is out of date: run make docs")
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Behavior == "unknown" || (r.Behavior == "refused" && r.Notes == "") {
			t.Errorf("%s: behaviour %q without a reason", r.Name, r.Behavior)
		}
		seen[r.Name] = true
	}
	for _, name := range []string{"get", "set", "config|set", "client|list", "watch", "raft.cluster"} {
		if !seen[name] {
			t.Errorf("%s is missing from the document", name)
		}
	}
}
