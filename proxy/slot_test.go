package proxy

import "testing"

// The expected slots are CLUSTER KEYSLOT of a redis 7.0 cluster node.
func TestKeySlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"", 0},
		{"123456789", 12739},
		{"{user1}:a", 8106},
		{"{user1}:b", 8106},
		{"a{}b", 13694},    // an empty tag hashes the whole key
		{"{}", 15257},      // likewise
		{"a{b}c{d}", 3300}, // only the first tag counts
		{"{{x}}", 11068},   // the tag is "{x"
		{"}{x}", 16287},
		{"hello{", 1235}, // unterminated: the whole key
		{"x{y", 2740},
		{"{a}", 15495},
	} {
		if got := keySlot([]byte(tc.key)); got != tc.slot {
			t.Errorf("keySlot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
}

// -MOVED names the slot of the command's first key by its key specs.
func TestRedirectSlot(t *testing.T) {
	tab := testTable(t)
	for _, tc := range []struct {
		args []string
		slot int
	}{
		{[]string{"PING"}, 0},
		{[]string{"PING", "foo"}, 0}, // no key
		{[]string{"GET", "foo"}, 12182},
		{[]string{"MSET", "{user1}:a", "1", "{user1}:b", "2"}, 8106},
		{[]string{"EVAL", "return 1", "1", "foo"}, 12182},
		{[]string{"ZUNIONSTORE", "bar", "1", "foo"}, 5061},
		{[]string{"XREAD", "COUNT", "1", "STREAMS", "foo", "0"}, 12182},
		{[]string{"NOSUCH", "foo"}, 0},
	} {
		args := make([][]byte, len(tc.args))
		for i, a := range tc.args {
			args[i] = []byte(a)
		}
		if got := tab.redirectSlot(args); got != tc.slot {
			t.Errorf("redirectSlot(%q) = %d, want %d", tc.args, got, tc.slot)
		}
	}
}
