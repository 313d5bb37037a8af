package backend

import (
	"strings"
	"testing"
)

func TestWrapPlacement(t *testing.T) {
	tests := []struct {
		name, code, head, rest string
		lib                    bool
	}{
		{name: "plain", code: "return 1", rest: "return 1"},
		{name: "two lines", code: "local x = 1\nreturn x", rest: "local x = 1\nreturn x"},
		{name: "shebang", code: "#!lua flags=no-writes\nreturn 1", head: "#!lua flags=no-writes\n", rest: "return 1"},
		{name: "empty", code: "", rest: ""},
		{name: "library", code: "#!lua name=l\nredis.register_function('f', function() end)", head: "#!lua name=l\n", rest: "redis.register_function('f', function() end)", lib: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrap, prelude := WrapScript, scriptPrelude
			if tt.lib {
				wrap, prelude = WrapLibrary, libraryPrelude
			}
			got := string(wrap([]byte(tt.code)))
			if want := tt.head + prelude + tt.rest; got != want {
				t.Fatalf("wrapped:\n%q\nwant\n%q", got, want)
			}
			// The prelude adds no line: errors keep the user's line numbers.
			if strings.Count(got, "\n") != strings.Count(tt.code, "\n") {
				t.Errorf("wrapping changed the number of lines")
			}
			back, ok := Unwrap([]byte(got))
			if !ok || string(back) != tt.code {
				t.Errorf("Unwrap = %q, %v; want %q", back, ok, tt.code)
			}
		})
	}
}

func TestWrapLeavesAlone(t *testing.T) {
	for _, code := range []string{"#!lua flags=no-writes", "#!lua name=x"} {
		if got := WrapScript([]byte(code)); string(got) != code {
			t.Errorf("WrapScript(%q) = %q: a lone shebang must stay as it is", code, got)
		}
	}
	if got := WrapLibrary([]byte("return 1")); string(got) != "return 1" {
		t.Errorf("WrapLibrary without a shebang = %q, want it unchanged (redis refuses it)", got)
	}
}

func TestUnwrap(t *testing.T) {
	// A body that itself begins like a prelude is wrapped again and comes
	// back whole: the first end marker is the proxy's.
	tricky := scriptPrelude + "return 1"
	if back, ok := Unwrap(WrapScript([]byte(tricky))); !ok || string(back) != tricky {
		t.Errorf("Unwrap of a doubly wrapped body = %q, %v", back, ok)
	}
	for _, code := range []string{"return 1", "#!lua\nreturn 1", preludeStart + "no end marker"} {
		if back, ok := Unwrap([]byte(code)); ok || string(back) != code {
			t.Errorf("Unwrap(%q) = %q, %v; want it unchanged and not ok", code, back, ok)
		}
	}
	// The markers appear once in each prelude, so stripping is exact.
	for _, p := range []string{scriptPrelude, libraryPrelude} {
		if strings.Count(p, preludeEnd) != 1 || !strings.HasPrefix(p, preludeStart) || strings.Contains(p, "\n") {
			t.Errorf("prelude is not one line with one start and one end marker: %q", p)
		}
	}
}
