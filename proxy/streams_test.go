package proxy

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRewriteXadd(t *testing.T) {
	tests := []struct {
		cmd string
		pos string // position of "*" among the arguments after the key; "" if unchanged
	}{
		{"XADD s * f v", "1"},
		{"XADD s NOMKSTREAM MAXLEN ~ 10 LIMIT 5 * f v", "7"},
		{"XADD s MINID = 5 * f v", "4"},
		{"XADD s maxlen 10 * f v", "3"},
		{"XADD s 1-1 f *", ""},
		{"XADD s 5-* f v", ""},
		{"XADD s MAXLEN 10 1-1 * *", ""},
		{"XADD s", ""},
	}
	for _, tt := range tests {
		in := fields(tt.cmd)
		out := rewriteXadd(in, 1700000000000)
		if tt.pos == "" {
			if string(out[0]) != "XADD" {
				t.Errorf("%s: rewritten to %q, want it unchanged", tt.cmd, out)
			}
			continue
		}
		if string(out[0]) != "EVAL" || string(out[1]) != xaddScript || string(out[3]) != "s" ||
			string(out[4]) != "1700000000000" || string(out[5]) != tt.pos || len(out) != len(in)+4 {
			t.Errorf("%s: rewritten to %q", tt.cmd, out[2:])
		}
	}
}

func TestRewriteXclaim(t *testing.T) {
	const now = 1000000
	tests := []struct {
		cmd  string
		want string // ARGV after the key, or "" if unchanged
	}{
		{"XCLAIM s g c 10 1-1 2", "1000000 g c 10 2 1-1 2 1000000 0"},
		{"XCLAIM s g c -5 1-1 IDLE 300 JUSTID", "1000000 g c 0 1 1-1 999700 0 JUSTID"},
		{"XCLAIM s g c 0 1-1 TIME 5 FORCE RETRYCOUNT 3 LASTID 9-9", "1000000 g c 0 1 1-1 5 1 RETRYCOUNT 3 LASTID 9-9"},
		// Times in the future, or negative, become now, as in redis.
		{"XCLAIM s g c 0 1-1 TIME 2000000", "1000000 g c 0 1 1-1 1000000 0"},
		{"XCLAIM s g c 0 1-1 IDLE -5", "1000000 g c 0 1 1-1 1000000 0"},
		// Left for redis to refuse.
		{"XCLAIM s g c abc 1-1", ""},
		// Checked by redis with a min-idle-time nothing reaches, without FORCE.
		{"XCLAIM s g c 0 1-1 NOSUCH", "check 1 g c 9223372036854775807 1-1 NOSUCH"},
		{"XCLAIM s g c 0 1-1 IDLE", "check 1 g c 9223372036854775807 1-1 IDLE"},
		{"XCLAIM s g c 0 1-1 IDLE +1", "check 1 g c 9223372036854775807 1-1 IDLE +1"},
		{"XCLAIM s g c 0 1-1 LASTID x FORCE", "check 1 g c 9223372036854775807 1-1 LASTID x FORCE"},
		{"XCLAIM s g c 0 JUSTID LASTID 5-5", "check 0 g c 9223372036854775807 JUSTID LASTID 5-5"},
	}
	for _, tt := range tests {
		out := rewriteXclaim(fields(tt.cmd), now)
		if tt.want == "" {
			if string(out[0]) != "XCLAIM" {
				t.Errorf("%s: rewritten, want it unchanged", tt.cmd)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(tt.want, "check "); ok {
			if string(out[0]) != "EVAL" || string(out[1]) != xclaimCheckScript || string(out[3]) != "s" || string(joinArgs(out[4:])) != rest {
				t.Errorf("%s: %q, want the check script with %q", tt.cmd, out, rest)
			}
			continue
		}
		if string(out[0]) != "EVAL" || string(out[1]) != xclaimScript || string(out[3]) != "s" {
			t.Fatalf("%s: rewritten to %q", tt.cmd, out)
		}
		if got := string(joinArgs(out[4:])); got != tt.want {
			t.Errorf("%s: ARGV %q, want %q", tt.cmd, got, tt.want)
		}
	}
}

func TestRewriteXautoclaim(t *testing.T) {
	tests := []struct{ cmd, want string }{
		{"XAUTOCLAIM s g c 10 0", "7 g c 10 0 100 0 g c 10 0"},
		{"XAUTOCLAIM s g c 10 (1-1 COUNT 5 JUSTID", "7 g c 10 (1-1 5 1 g c 10 (1-1 COUNT 5 JUSTID"},
		{"XAUTOCLAIM s g c 10 0 COUNT 576460752303423487", "7 g c 10 0 1099511627776 0 g c 10 0 COUNT 576460752303423487"},
		{"XAUTOCLAIM s g c 10 0 COUNT 576460752303423488", ""},
		{"XAUTOCLAIM s g c 10 0 COUNT 0", ""}, {"XAUTOCLAIM s g c x 0", ""}, {"XAUTOCLAIM s g c 0 0 NOPE", ""},
	}
	for _, tt := range tests {
		out := rewriteXautoclaim(fields(tt.cmd), 7)
		if tt.want == "" {
			if string(out[0]) != "XAUTOCLAIM" {
				t.Errorf("%s: rewritten, want it unchanged", tt.cmd)
			}
			continue
		}
		if got := string(joinArgs(out[4:])); string(out[0]) != "EVAL" || got != tt.want {
			t.Errorf("%s: %q, want EVAL with ARGV %q", tt.cmd, got, tt.want)
		}
	}
}

func TestRewriteXreadgroup(t *testing.T) {
	out, fix, o := determinizeStream("xreadgroup", fields("XREADGROUP GROUP g c COUNT 2 STREAMS a b > 0"), 9, false)
	if o != nil || fix == nil || string(out[0]) != "EVAL" || string(joinArgs(out[2:])) != "2 a b 9 g c GROUP g c COUNT 2 STREAMS a b > 0" {
		t.Errorf("rewritten to %q (early %v)", out, o)
	}
	// Queued in MULTI, BLOCK runs non-blocking: rewritten like the rest,
	// without BLOCK, which redis refuses in scripts; a timeout redis
	// refuses is left to it.
	out, _, o = determinizeStream("xreadgroup", fields("XREADGROUP GROUP g c BLOCK 0 COUNT 1 block 5 STREAMS a >"), 9, false)
	if o != nil || string(out[0]) != "EVAL" || string(joinArgs(out[3:])) != "a 9 g c GROUP g c COUNT 1 STREAMS a >" {
		t.Errorf("XREADGROUP BLOCK in MULTI: %q (early %v)", out[3:], o)
	}
	for _, cmd := range []string{"XREADGROUP GROUP g c BLOCK -1 STREAMS a >", "XREADGROUP GROUP g c BLOCK 1.5 STREAMS a >",
		"XREADGROUP GROUP g c BLOCK 9223372036854775807 STREAMS a >", "XREADGROUP GROUP g c BLOCK 0 BLOCK x STREAMS a >"} {
		if out, _, o := determinizeStream("xreadgroup", fields(cmd), 9, false); o != nil || string(out[0]) != "XREADGROUP" {
			t.Errorf("%s: %q, want it left for redis", cmd, out)
		}
	}
	for _, cmd := range []string{"XREADGROUP GROUP g c STREAMS a", "XREADGROUP STREAMS a >", "XREADGROUP GROUP g c BAD STREAMS a >"} {
		if out, _, o := determinizeStream("xreadgroup", fields(cmd), 9, false); o != nil || string(out[0]) != "XREADGROUP" {
			t.Errorf("%s: %q, want it left for redis", cmd, out)
		}
	}
	// Options in any order; names that are option words are names.
	out, _, o = determinizeStream("xreadgroup", fields("XREADGROUP COUNT 2 NOACK GROUP block streams STREAMS a >"), 9, false)
	if o != nil || string(joinArgs(out[2:])) != "1 a 9 block streams COUNT 2 NOACK GROUP block streams STREAMS a >" {
		t.Errorf("options in another order: %q (early %v)", out[2:], o)
	}
}

func TestXreadgroupFix(t *testing.T) {
	tests := []struct {
		resp3   bool
		in, out string
	}{
		{false, "$-1\r\n", "*-1\r\n"},
		{false, "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n$-1\r\n", "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*-1\r\n"},
		{false, "*1\r\n*2\r\n$1\r\ns\r\n*0\r\n", "*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"},
		{true, "_\r\n", "_\r\n"},
		{true, "*2\r\n*2\r\n$1\r\na\r\n*0\r\n*2\r\n$1\r\nb\r\n*1\r\n*2\r\n$3\r\n1-0\r\n_\r\n", "%2\r\n$1\r\na\r\n*0\r\n$1\r\nb\r\n*1\r\n*2\r\n$3\r\n1-0\r\n_\r\n"},
		{false, "-ERR x\r\n", "-ERR x\r\n"},
	}
	for _, tt := range tests {
		if got := string(xreadgroupFix(tt.resp3)([]byte(tt.in))); got != tt.out {
			t.Errorf("%q (resp3 %v): %q, want %q", tt.in, tt.resp3, got, tt.out)
		}
	}
}

func joinArgs(args [][]byte) []byte {
	var b []byte
	for i, a := range args {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, a...)
	}
	return b
}

// TestIsStrictStreamID: what redis 7.0.15's XCLAIM takes as an ID (checked
// with redis-server: the others are "Unrecognized XCLAIM option").
func TestIsStrictStreamID(t *testing.T) {
	for _, id := range []string{"1-1", "5", "+5", " 5", "007-1", "1-+2", "1- 5", "1--9223372036854775809", "1--05", "1--0", "+0-+0",
		"18446744073709551615-18446744073709551615"} {
		if !isStrictStreamID([]byte(id)) {
			t.Errorf("%q: not an ID, redis takes it", id)
		}
	}
	for _, id := range []string{"1--1", "5-", "-5", "0x5", "5 ", "-0", "-05", " -5", "1-99999999999999999999",
		"1--99999999999999999999", "1-18446744073709551616", "-", "+", "", "JUSTID", "1-*"} {
		if isStrictStreamID([]byte(id)) {
			t.Errorf("%q: an ID, redis refuses it", id)
		}
	}
}

// TestStreamBlock: what XREAD/XREADGROUP ... BLOCK wait on, for how long,
// and how "$" is resolved.
func TestStreamBlock(t *testing.T) {
	for _, tt := range []struct {
		cmd     string
		keys    string
		wait    bool
		timeout time.Duration
		resolve bool
	}{
		{"XREAD BLOCK 100 STREAMS a b $ 0", "a b", true, 100 * time.Millisecond, true},
		{"XREAD COUNT 2 BLOCK 0 STREAMS a 0-1", "a", true, 0, false},
		{"XREAD BLOCK -1 STREAMS a $", "a", false, 0, false},
		{"XREAD BLOCK 1.5 STREAMS a $", "a", false, 0, false},
		{"XREAD BLOCK 10 STREAMS a b $", "", false, 0, false},
		{"XREAD BLOCK 10 GROUP g c STREAMS a $", "a", false, 10 * time.Millisecond, false},
		{"XREAD BLOCK 10 BLOCK -1 STREAMS a $", "a", false, 0, false},
		{"XREADGROUP GROUP g c BLOCK 5 NOACK STREAMS a b > >", "a b", true, 5 * time.Millisecond, false},
	} {
		b := &blockCall{args: fields(tt.cmd)}
		name := strings.ToLower(string(b.args[0]))
		streamBlock(b, name, b.args, false)
		if got := string(bytes.Join(b.keys, []byte(" "))); got != tt.keys || b.wait != tt.wait || b.timeout != tt.timeout || (b.resolve != nil) != tt.resolve {
			t.Errorf("%s: keys %q wait %v timeout %v resolve %v", tt.cmd, got, b.wait, b.timeout, b.resolve != nil)
		}
		if name == "xreadgroup" {
			if b.line != "group:g" || b.reader || b.attempt == nil || b.fix == nil {
				t.Errorf("%s: line %q reader %v", tt.cmd, b.line, b.reader)
			}
			a1, a2 := b.attempt(false), b.attempt(true)
			if string(a1[1]) != xreadgroupScript || string(a2[1]) != xreadgroupWaitedScript {
				t.Errorf("%s: attempts are not the XREADGROUP scripts", tt.cmd)
			}
		} else if tt.wait && !b.reader {
			t.Errorf("%s: XREAD must be a reader", tt.cmd)
		}
	}
	b := &blockCall{args: fields("XREAD BLOCK 0 STREAMS a b c $ 5 $")}
	streamBlock(b, "xread", b.args, false)
	if all := b.resolve.apply([]byte("*3\r\n$3\r\n1-1\r\n$1\r\n5\r\n$3\r\n0-0\r\n")); all || string(joinArgs(b.args)) != "XREAD BLOCK 0 STREAMS a b c 1-1 5 0-0" {
		t.Errorf("resolved to %q (all %v)", joinArgs(b.args), all)
	}
	b = &blockCall{args: fields("XREAD BLOCK 0 STREAMS a b $ $")}
	streamBlock(b, "xread", b.args, false)
	if all := b.resolve.apply([]byte("*2\r\n$3\r\n1-1\r\n$1\r\n$\r\n")); all || string(joinArgs(b.args)) != "XREAD BLOCK 0 STREAMS a b 1-1 $" {
		t.Errorf("a key of another type keeps $: %q (all %v)", joinArgs(b.args), all)
	}
	b = &blockCall{args: fields("XREAD BLOCK 0 STREAMS a $")}
	streamBlock(b, "xread", b.args, false)
	if all := b.resolve.apply([]byte("*1\r\n$3\r\n2-0\r\n")); !all {
		t.Error("only $ IDs, all resolved: the first attempt is skipped")
	}
	if !quietStreamScript(b.resolve.eval, false) || quietStreamScript(rewriteXreadgroup(fields("XREADGROUP GROUP g c STREAMS a >"), 1, xreadgroupScript), false) ||
		!quietStreamScript(rewriteXreadgroup(fields("XREADGROUP GROUP g c STREAMS a >"), 1, xreadgroupWaitedScript), true) {
		t.Error("quietStreamScript")
	}
}
