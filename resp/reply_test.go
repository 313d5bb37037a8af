package resp

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
)

// describe renders a Value compactly so tests can compare whole trees.
func describe(v Value) string {
	k := string(rune(v.Kind))
	switch {
	case v.Null:
		if v.Str != nil || v.Elems != nil {
			return k + "nil(with data!)"
		}
		return k + "nil"
	case v.Kind == ':' || v.Kind == '#':
		return k + strconv.FormatInt(v.Int, 10)
	case v.Kind == '*' || v.Kind == '%' || v.Kind == '~' || v.Kind == '>':
		parts := make([]string, len(v.Elems))
		for i, e := range v.Elems {
			parts[i] = describe(e)
		}
		return k + "[" + strings.Join(parts, ",") + "]"
	case v.Str == nil:
		return k + "nil-str(bug)"
	}
	return k + strconv.Quote(string(v.Str))
}

var deep512 = strings.Repeat("*1\r\n", 512) + ":1\r\n"

var replyTests = []struct {
	raw  string
	want string // describe(Parse(raw))
}{
	{"+OK\r\n", `+"OK"`},
	{"+\r\n", `+""`},
	{"-ERR unknown command 'FOO'\r\n", `-"ERR unknown command 'FOO'"`},
	{":0\r\n", ":0"},
	{":-42\r\n", ":-42"},
	{":9223372036854775807\r\n", ":9223372036854775807"},
	{"$5\r\nhello\r\n", `$"hello"`},
	{"$0\r\n\r\n", `$""`},
	{"$-1\r\n", "$nil"},
	{"$6\r\na\r\nb\r\n\r\n", `$"a\r\nb\r\n"`},
	{"*-1\r\n", "*nil"},
	{"*0\r\n", "*[]"},
	{"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", `*[$"a",:1,$nil]`},
	{"*2\r\n*1\r\n+a\r\n*0\r\n", `*[*[+"a"],*[]]`},
	{"_\r\n", "_nil"},
	{"#t\r\n", "#1"},
	{"#f\r\n", "#0"},
	{",3.14\r\n", `,"3.14"`},
	{",inf\r\n", `,"inf"`},
	{",-inf\r\n", `,"-inf"`},
	{",nan\r\n", `,"nan"`},
	{",1.5e-10\r\n", `,"1.5e-10"`},
	{"(3492890328409238509324850943850943825024385\r\n", `("3492890328409238509324850943850943825024385"`},
	{"(-1\r\n", `("-1"`},
	{"!21\r\nSYNTAX invalid syntax\r\n", `!"SYNTAX invalid syntax"`},
	{"=15\r\ntxt:Some string\r\n", `="Some string"`},
	{"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", `%[+"first",:1,+"second",:2]`},
	{"%0\r\n", "%[]"},
	{"~2\r\n+a\r\n+b\r\n", `~[+"a",+"b"]`},
	{">3\r\n+message\r\n+chan\r\n$5\r\nhello\r\n", `>[+"message",+"chan",$"hello"]`},
	{"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
		"*[:2039123,:9543892]"},
	{"*2\r\n|1\r\n+ttl\r\n:3600\r\n$3\r\nfoo\r\n:1\r\n", `*[$"foo",:1]`},
	{"|0\r\n+OK\r\n", `+"OK"`},
	{"|1\r\n+a\r\n:1\r\n|1\r\n+b\r\n:2\r\n:3\r\n", ":3"},
	{"%1\r\n*1\r\n:1\r\n~1\r\n_\r\n", "%[*[:1],~[_nil]]"},
	{deep512, strings.Repeat("*[", 512) + ":1" + strings.Repeat("]", 512)},
	{"$100000\r\n" + strings.Repeat("z", 100000) + "\r\n", `$"` + strings.Repeat("z", 100000) + `"`},
}

func TestReadReplyRoundTrip(t *testing.T) {
	var all strings.Builder
	for _, tt := range replyTests {
		all.WriteString(tt.raw)
	}
	for how, r := range readers(all.String()) {
		var dst []byte
		for i, tt := range replyTests {
			var err error
			dst, err = r.ReadReply(dst[:0])
			if err != nil {
				t.Fatalf("%s: reply %d (%.40q): %v", how, i, tt.raw, err)
			}
			if string(dst) != tt.raw {
				t.Fatalf("%s: reply %d = %.60q, want %.60q", how, i, dst, tt.raw)
			}
		}
		if _, err := r.ReadReply(dst[:0]); err != io.EOF {
			t.Fatalf("%s: after last reply err = %v, want io.EOF", how, err)
		}
	}
}

func TestReadReplyAppends(t *testing.T) {
	r := NewReader(strings.NewReader("+OK\r\n:1\r\n"), 0)
	dst, err := r.ReadReply([]byte("prefix"))
	if err != nil || string(dst) != "prefix+OK\r\n" {
		t.Fatalf("got %q, %v", dst, err)
	}
	dst, err = r.ReadReply(dst)
	if err != nil || string(dst) != "prefix+OK\r\n:1\r\n" {
		t.Fatalf("got %q, %v", dst, err)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range replyTests {
		v, rest, err := Parse([]byte(tt.raw + "+next\r\n"))
		if err != nil {
			t.Errorf("Parse(%.40q): %v", tt.raw, err)
			continue
		}
		if got := describe(v); got != tt.want {
			t.Errorf("Parse(%.40q) = %.80s, want %.80s", tt.raw, got, tt.want)
		}
		if string(rest) != "+next\r\n" {
			t.Errorf("Parse(%.40q) rest = %q", tt.raw, rest)
		}
	}
}

func TestReadValue(t *testing.T) {
	var all strings.Builder
	for _, tt := range replyTests {
		all.WriteString(tt.raw)
	}
	for how, r := range readers(all.String()) {
		var vals []Value
		for range replyTests {
			v, err := r.ReadValue()
			if err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			vals = append(vals, v)
		}
		// Values stay valid after later reads: they own their memory.
		for i, tt := range replyTests {
			if got := describe(vals[i]); got != tt.want {
				t.Errorf("%s: ReadValue %d = %.80s, want %.80s", how, i, got, tt.want)
			}
		}
	}
}

func TestValueMethods(t *testing.T) {
	tests := []struct {
		raw     string
		str     string
		isError bool
	}{
		{"+OK\r\n", "OK", false},
		{"-ERR bad\r\n", "ERR bad", true},
		{"!3\r\nERR\r\n", "ERR", true},
		{":-7\r\n", "-7", false},
		{"#t\r\n", "true", false},
		{"$3\r\nabc\r\n", "abc", false},
		{"$-1\r\n", "", false},
	}
	for _, tt := range tests {
		v, _, err := Parse([]byte(tt.raw))
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != tt.str || v.IsError() != tt.isError {
			t.Errorf("%q: String = %q, IsError = %v", tt.raw, v.String(), v.IsError())
		}
	}
}

func TestReplyErrors(t *testing.T) {
	const unexpected = "unexpected EOF"
	tests := []struct{ in, err string }{
		{"X\r\n", "Protocol error: invalid reply type 'X'"},
		{"*1\r\nX\r\n", "Protocol error: invalid reply type 'X'"},
		{":abc\r\n", "Protocol error: invalid integer"},
		{":\r\n", "Protocol error: invalid integer"},
		{":01\r\n", "Protocol error: invalid integer"},
		{"+OK\n", "Protocol error: expected CRLF"},
		{"$3\r\nabcd\r\n", "Protocol error: expected CRLF after bulk"},
		{"$-2\r\n", "Protocol error: invalid bulk length"},
		{"=-1\r\n", "Protocol error: invalid bulk length"},
		{"$536870913\r\n", "Protocol error: invalid bulk length"},
		{"$?\r\n", "Protocol error: invalid bulk length"},
		{"*-2\r\n", "Protocol error: invalid multibulk length"},
		{"~-1\r\n", "Protocol error: invalid multibulk length"},
		{"*2147483648\r\n", "Protocol error: invalid multibulk length"},
		{"#x\r\n", "Protocol error: invalid boolean"},
		{"_x\r\n", "Protocol error: invalid null"},
		{",abc\r\n", "Protocol error: invalid double"},
		{",\r\n", "Protocol error: invalid double"},
		{"(12a\r\n", "Protocol error: invalid big number"},
		{"(\r\n", "Protocol error: invalid big number"},
		{":" + strings.Repeat("1", 70_000), "Protocol error: reply line too long"},
		{"*2\r\n:1\r\n", unexpected},
		{"$5\r\nab", unexpected},
		{"+OK", unexpected},
		{"|1\r\n+a\r\n:1\r\n", unexpected},
	}
	for _, tt := range tests {
		for how, r := range readers(tt.in) {
			dst, err := r.ReadReply([]byte("keep"))
			if err == nil || err.Error() != tt.err {
				t.Errorf("ReadReply(%.40q) %s: err = %v, want %q", tt.in, how, err, tt.err)
			}
			if string(dst) != "keep" {
				t.Errorf("ReadReply(%.40q) %s: dst = %.40q, want it truncated back", tt.in, how, dst)
			}
		}
		if _, _, err := Parse([]byte(tt.in)); err == nil || err.Error() != tt.err {
			t.Errorf("Parse(%.40q): err = %v, want %q", tt.in, err, tt.err)
		}
	}
	// Parse, which recurses, refuses what ReadReply and Skip relay: a reply
	// nested deeper than maxDepth, as redis sends for a Lua table that holds
	// itself (~8000 levels, ending in an error).
	deep := strings.Repeat("*1\r\n", 8000) + "-ERR reached lua stack limit\r\n"
	for how, r := range readers(deep) {
		if got, err := r.ReadReply(nil); err != nil || string(got) != deep {
			t.Errorf("ReadReply of an 8000-deep reply %s: %d bytes, %v", how, len(got), err)
		}
	}
	if n, err := Skip([]byte(deep + "+next\r\n")); n != len(deep) || err != nil {
		t.Errorf("Skip of an 8000-deep reply: %d, %v", n, err)
	}
	if _, _, err := Parse([]byte("*1\r\n" + deep512)); err == nil || err.Error() != "Protocol error: reply nesting too deep" {
		t.Errorf("Parse of a 513-deep reply: %v", err)
	}
	if _, err := NewReader(strings.NewReader(""), 0).ReadReply(nil); err != io.EOF {
		t.Errorf("empty stream: err = %v, want io.EOF", err)
	}
	if _, _, err := Parse(nil); err != io.ErrUnexpectedEOF {
		t.Errorf("Parse(nil): err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadReplyZeroAllocs(t *testing.T) {
	reply := []byte("*3\r\n$5\r\nhello\r\n:42\r\n%1\r\n+k\r\n_\r\n")
	r := NewReader(&loopReader{data: reply}, 4096)
	dst := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(1000, func() {
		var err error
		if dst, err = r.ReadReply(dst[:0]); err != nil || !bytes.Equal(dst, reply) {
			t.Fatalf("got %q, %v", dst, err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadReply allocs = %v, want 0", allocs)
	}
}

func TestHugeClaimedReplyIsCheap(t *testing.T) {
	r := NewReader(strings.NewReader("$524288000\r\nshort"), 0)
	dst, err := r.ReadReply(nil)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v", err)
	}
	if cap(dst) > 1<<20 {
		t.Errorf("dst grew to %d bytes for a 5-byte body", cap(dst))
	}
}

func TestMapArray(t *testing.T) {
	second := func(i int, elem []byte) []byte {
		if i == 1 {
			return []byte(":9\r\n")
		}
		return elem
	}
	tests := []struct{ in, want string }{
		{"*3\r\n+OK\r\n:1\r\n$1\r\nx\r\n", "*3\r\n+OK\r\n:9\r\n$1\r\nx\r\n"},
		{"*2\r\n*1\r\n:1\r\n:2\r\n", "*2\r\n*1\r\n:1\r\n:9\r\n"}, // nested elements stay whole
		{"*-1\r\n", "*-1\r\n"},
		{"-EXECABORT x\r\n", "-EXECABORT x\r\n"},
		{"*2\r\n:1\r\n", "*2\r\n:1\r\n"},                 // truncated: kept as it is
		{"*2\r\n:1\r\n$5\r\nab", "*2\r\n:1\r\n$5\r\nab"}, // malformed element: kept
	}
	for _, tt := range tests {
		if got := MapArray([]byte(tt.in), second); string(got) != tt.want {
			t.Errorf("MapArray(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
