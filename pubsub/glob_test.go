package pubsub

import "testing"

// The expectations follow redis 7.0's stringmatchlen (util.c) and its own
// tests (tests/unit/keyspace.tcl, pubsub.tcl); test/pubsub_test.go checks a
// set of them against a stock redis-server.
func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pat, s string
		want   bool
	}{
		{"*", "anything", true},
		{"*", "", false}, // stringmatchlen never enters its loop for an empty string
		{"", "", true},
		{"", "a", false},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*a", "ba", true},
		{"**a", "ba", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true},
		{"h[b-a]llo", "hbllo", true}, // reversed range
		{"h[a-b]llo", "hcllo", false},
		{"[\\]]", "]", true},
		{"[\\-]", "-", true},
		{"\\*", "*", true},
		{"\\*", "a", false},
		{"\\?", "?", true},
		{"a\\", "a\\", true}, // a trailing backslash is literal
		{"[abc", "a", true},  // unterminated class: what it listed so far
		{"[abc", "d", false},
		{"[", "[", false},
		{"[^", "x", true},
		{"news.*", "news.art", true},
		{"news.*", "news", false},
		{"*.*", "a.b", true},
		{"[a-]", "-", false}, // 'a-]' is not a range of three: literal a, then -, then ]
		{"[a-]", "a", true},
		{"a?", "a", false},
		{"a*", "", false},
		{"[\xff-\x01]", "\x00", true}, // signed chars: -1..1
	}
	for _, c := range cases {
		if got := globMatch([]byte(c.pat), []byte(c.s)); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

func TestGlobMatchAbusive(t *testing.T) {
	// Redis bounds the work of patterns like this one (skipLongerMatches).
	pat := []byte("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b")
	s := make([]byte, 5000)
	for i := range s {
		s[i] = 'a'
	}
	if globMatch(pat, s) {
		t.Fatal("matched")
	}
}
