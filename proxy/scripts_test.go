package proxy

import (
	"bytes"
	"testing"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/resp"
)

func TestUnwrapFix(t *testing.T) {
	code := "#!lua name=l\nredis.register_function('f', function() return 1 end)"
	wrapped := string(backend.WrapLibrary([]byte(code)))
	entry := func(c string) []byte {
		b := resp.AppendArrayLen(nil, 4)
		b = resp.AppendBulkString(b, "library_name")
		b = resp.AppendBulkString(b, "l")
		b = resp.AppendBulkString(b, "library_code")
		return resp.AppendBulkString(b, c)
	}
	list := func(c string) []byte {
		b := resp.AppendArrayLen(nil, 4)
		b = append(b, entry(c)...)
		b = resp.AppendNullBulk(b)
		return append(b, ":7\r\n+x\r\n"...)
	}
	tests := []struct{ name, in, want string }{
		{"withcode", string(list(wrapped)), string(list(code))},
		{"plain", string(list(code)), string(list(code))},
		{"empty", "*0\r\n", "*0\r\n"},
		{"error", "-ERR x\r\n", "-ERR x\r\n"},
		{"truncated", string(list(wrapped))[:20], string(list(wrapped))[:20]},
	}
	for _, tt := range tests {
		if got := string(unwrapFix([]byte(tt.in))); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTxFix(t *testing.T) {
	fix := txFix(map[int]fixer{1: bulkFix("abc")})
	in := "*3\r\n+OK\r\n$3\r\nxyz\r\n:1\r\n"
	if got := string(fix([]byte(in))); got != "*3\r\n+OK\r\n$3\r\nabc\r\n:1\r\n" {
		t.Errorf("got %q", got)
	}
	for _, in := range []string{"-EXECABORT x\r\n", "*-1\r\n", "*2\r\n+OK\r\n$3\r\nxyz\r\n"} {
		want := in
		if in[1] == '2' {
			want = "*2\r\n+OK\r\n$3\r\nabc\r\n"
		}
		if got := string(fix([]byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	// SCRIPT LOAD's error passes unchanged.
	errIn := "*2\r\n+OK\r\n-ERR Error compiling script\r\n"
	if got := string(fix([]byte(errIn))); got != errIn {
		t.Errorf("got %q", got)
	}
}

func TestMapBulks(t *testing.T) {
	upper := func(b []byte) []byte { return bytes.ToUpper(b) }
	tests := []struct{ in, want string }{
		{"$3\r\nabc\r\n", "$3\r\nABC\r\n"},
		{"$-1\r\n", "$-1\r\n"},
		{"*2\r\n$1\r\na\r\n$-1\r\n", "*2\r\n$1\r\nA\r\n$-1\r\n"}, // a null bulk last
		{"%1\r\n$1\r\nk\r\n_\r\n", "%1\r\n$1\r\nK\r\n_\r\n"},
		{"*1\r\n:5\r\n", "*1\r\n:5\r\n"},
	}
	for _, tt := range tests {
		got, rest, ok := mapBulks(nil, []byte(tt.in), upper, 0)
		if !ok || len(rest) != 0 || string(got) != tt.want {
			t.Errorf("mapBulks(%q) = %q, rest %q, ok %v; want %q", tt.in, got, rest, ok, tt.want)
		}
	}
	if _, _, ok := mapBulks(nil, []byte("*2\r\n$1\r\na\r\n"), upper, 0); ok {
		t.Errorf("a truncated array was accepted")
	}
}
