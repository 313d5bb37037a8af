package proxy

import "testing"

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
