package slotmap

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
		if got := KeySlot([]byte(tc.key)); got != tc.slot {
			t.Errorf("KeySlot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
}
