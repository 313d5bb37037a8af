package proxy

import (
	"strings"
	"testing"
)

func TestRewriteSpop(t *testing.T) {
	tests := []struct {
		cmd   string
		eval  bool
		count string
	}{
		{"SPOP s", true, ""},
		{"SPOP s 3", true, "3"},
		{"SPOP s 0", true, "0"},
		{"SPOP s 9223372036854775807", true, "9223372036854775807"},
		// Left for redis to refuse, identically on every node.
		{"SPOP s -1", false, ""}, {"SPOP s abc", false, ""}, {"SPOP s 01", false, ""}, {"SPOP s +1", false, ""},
		{"SPOP s 9223372036854775808", false, ""}, {"SPOP s 1 2", false, ""},
	}
	for _, tt := range tests {
		in := fields(tt.cmd)
		out := rewriteSpop(in)
		if !tt.eval {
			if len(out) != len(in) || string(out[0]) != "SPOP" {
				t.Errorf("%s: rewritten to %q, want it unchanged", tt.cmd, out)
			}
			continue
		}
		if string(out[0]) != "EVAL" || string(out[1]) != spopScript || string(out[2]) != "1" || string(out[3]) != "s" {
			t.Errorf("%s: rewritten to %q", tt.cmd, out[:min(len(out), 4)])
			continue
		}
		if seed, ok := redisCount(out[4]); !ok || seed >= 1<<31 {
			t.Errorf("%s: seed %q is not an int32 for math.randomseed", tt.cmd, out[4])
		}
		if tt.count == "" && len(out) != 5 || tt.count != "" && (len(out) != 6 || string(out[5]) != tt.count) {
			t.Errorf("%s: arguments %q", tt.cmd, out[4:])
		}
	}
}

func TestSpopScriptSorts(t *testing.T) {
	if !strings.Contains(spopScript, "table.sort(m)") {
		t.Error("SPOP must pick from the members in a node-independent order")
	}
}
