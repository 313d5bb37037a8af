package resp

import (
	"errors"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// readers returns the ways each test feeds its input: whole, and one byte
// per Read into a tiny buffer, which exercises every refill and growth path.
func readers(in string) map[string]*Reader {
	return map[string]*Reader{
		"whole":   NewReader(strings.NewReader(in), 4096),
		"onebyte": NewReader(iotest.OneByteReader(strings.NewReader(in)), 16),
	}
}

// readCommands reads commands until an error and returns them as strings.
func readCommands(r *Reader) ([][]string, error) {
	var cmds [][]string
	for {
		args, err := r.ReadCommand()
		if err != nil {
			return cmds, err
		}
		cmd := make([]string, len(args))
		for i, a := range args {
			cmd[i] = string(a)
		}
		cmds = append(cmds, cmd)
	}
}

func TestReadCommand(t *testing.T) {
	big := strings.Repeat("x", 100_000)
	tests := []struct {
		name string
		in   string
		want [][]string
		err  string // "" means io.EOF after the commands
	}{
		{"array", "*1\r\n$4\r\nPING\r\n", [][]string{{"PING"}}, ""},
		{"pipelined", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
			[][]string{{"SET", "k", "v"}, {"GET", "k"}}, ""},
		{"binary safe", "*2\r\n$3\r\nSET\r\n$8\r\na\r\nb\x00c\r\n\r\n", [][]string{{"SET", "a\r\nb\x00c\r\n"}}, ""},
		{"zero length bulk", "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n", [][]string{{"SET", "", ""}}, ""},
		{"empty arrays skipped", "*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*0\r\n", [][]string{{"PING"}}, ""},
		{"big bulk", "*2\r\n$4\r\nECHO\r\n$100000\r\n" + big + "\r\n", [][]string{{"ECHO", big}}, ""},
		{"inline", "PING\r\nSET k v\n  set   k\t v  \r\n",
			[][]string{{"PING"}, {"SET", "k", "v"}, {"set", "k", "v"}}, ""},
		{"empty lines skipped", "\r\n\n   \t\r\n\x00junk\r\nPING\r\n", [][]string{{"PING"}}, ""},
		{"inline then array", "PING\r\n*1\r\n$4\r\nPING\r\nPING\n", [][]string{{"PING"}, {"PING"}, {"PING"}}, ""},
		{"quotes", `SET "a b" 'c d' "" ''` + "\r\n", [][]string{{"SET", "a b", "c d", "", ""}}, ""},
		{"double quote escapes", `"\n\r\t\b\a\\\"\x41\x4g\q\x"` + "\n",
			[][]string{{"\n\r\t\b\a\\\"Ax4gqx"}}, ""},
		{"single quote escapes", `'it\'s' 'a\nb\'` + "'\n", [][]string{{"it's", `a\nb'`}}, ""},
		{"quote inside token", `foo"bar baz" x'y'` + "\n", [][]string{{"foobar baz", "xy"}}, ""},
		{"quote before tab", "\"a\"\t'b'\r\n", [][]string{{"a", "b"}}, ""},
		{"nul ends inline line", "GET a\x00b c\r\n", [][]string{{"GET", "a"}}, ""},
		{"vertical tab", "\va\vb\r\n", [][]string{{"a\vb"}}, ""},
		{"cr inside inline", "a\rb\r\n", [][]string{{"a", "b"}}, ""},

		{"multibulk not a number", "*abc\r\n", nil, "Protocol error: invalid multibulk length"},
		// Redis skips an array of zero or fewer elements without a reply.
		{"multibulk negative", "*-2\r\n*1\r\n$4\r\nPING\r\n", [][]string{{"PING"}}, ""},
		{"multibulk most negative", "*-9223372036854775808\r\nPING\r\n", [][]string{{"PING"}}, ""},
		{"multibulk below int64", "*-9223372036854775809\r\n", nil, "Protocol error: invalid multibulk length"},
		{"multibulk leading zero", "*01\r\n$1\r\na\r\n", nil, "Protocol error: invalid multibulk length"},
		{"multibulk plus sign", "*+1\r\n$1\r\na\r\n", nil, "Protocol error: invalid multibulk length"},
		{"multibulk too many", "*2147483648\r\n", nil, "Protocol error: invalid multibulk length"},
		{"multibulk empty", "*\r\n", nil, "Protocol error: invalid multibulk length"},
		{"multibulk bare newline", "*1\n$1\r\na\r\n", nil, "Protocol error: invalid multibulk length"},
		{"expected dollar", "*1\r\n:1\r\n", nil, "Protocol error: expected '$', got ':'"},
		{"expected dollar second", "*2\r\n$1\r\na\r\nX", [][]string(nil), "Protocol error: expected '$', got 'X'"},
		{"bulk not a number", "*1\r\n$abc\r\n", nil, "Protocol error: invalid bulk length"},
		{"bulk negative", "*1\r\n$-1\r\n", nil, "Protocol error: invalid bulk length"},
		{"bulk too big", "*1\r\n$536870913\r\n", nil, "Protocol error: invalid bulk length"},
		{"bulk overflow", "*1\r\n$99999999999999999999\r\n", nil, "Protocol error: invalid bulk length"},
		{"mbulk count too long", "*" + strings.Repeat("1", 70_000), nil, "Protocol error: too big mbulk count string"},
		{"bulk count too long", "*1\r\n$" + strings.Repeat("1", 70_000), nil, "Protocol error: too big bulk count string"},
		{"inline too long", strings.Repeat("a", 70_000), nil, "Protocol error: too big inline request"},
		{"unbalanced double", `SET "abc` + "\r\n", nil, "Protocol error: unbalanced quotes in request"},
		{"unbalanced single", "SET 'abc\r\n", nil, "Protocol error: unbalanced quotes in request"},
		{"unbalanced trailing backslash", `SET "abc\` + "\n", nil, "Protocol error: unbalanced quotes in request"},
		{"text after closing quote", `SET "abc"def` + "\n", nil, "Protocol error: unbalanced quotes in request"},
		{"text after closing single quote", "SET 'abc'def\n", nil, "Protocol error: unbalanced quotes in request"},
		{"bulk without crlf", "*1\r\n$3\r\nabcde\r\n", nil, "Protocol error: expected CRLF after bulk"},
		{"bulk with lf only", "*1\r\n$3\r\nabc\n\n", nil, "Protocol error: expected CRLF after bulk"},

		{"eof mid count", "*1", nil, io.ErrUnexpectedEOF.Error()},
		{"eof mid bulk", "*1\r\n$3\r\nab", nil, io.ErrUnexpectedEOF.Error()},
		{"eof before crlf", "*1\r\n$3\r\nabc", nil, io.ErrUnexpectedEOF.Error()},
		{"eof before second arg", "*2\r\n$3\r\nabc\r\n", nil, io.ErrUnexpectedEOF.Error()},
		{"eof mid inline", "PING", nil, io.ErrUnexpectedEOF.Error()},
		{"eof after command", "PING\r\n", [][]string{{"PING"}}, ""},
		{"empty input", "", nil, ""},
	}
	for _, tt := range tests {
		for how, r := range readers(tt.in) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				got, err := readCommands(r)
				if !slices.EqualFunc(got, tt.want, slices.Equal) {
					t.Errorf("commands = %q, want %q", got, tt.want)
				}
				if tt.err == "" {
					if err != io.EOF {
						t.Errorf("err = %v, want io.EOF", err)
					}
					return
				}
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				var pe *ProtocolError
				if isProto := errors.As(err, &pe); isProto == strings.HasPrefix(tt.err, "unexpected EOF") {
					t.Errorf("err %T: ProtocolError = %v", err, isProto)
				}
			})
		}
	}
}

func TestReadCommandEOFIsExact(t *testing.T) {
	r := NewReader(strings.NewReader("*1\r\n$1\r\na"), 0)
	if _, err := r.ReadCommand(); err != io.ErrUnexpectedEOF {
		t.Fatalf("mid-command err = %v, want io.ErrUnexpectedEOF itself", err)
	}
	r = NewReader(strings.NewReader(""), 0)
	if _, err := r.ReadCommand(); err != io.EOF {
		t.Fatalf("boundary err = %v, want io.EOF itself", err)
	}
	// Other read errors are passed through unchanged.
	boom := errors.New("boom")
	r = NewReader(iotest.ErrReader(boom), 0)
	if _, err := r.ReadCommand(); err != boom {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestArgsOwned(t *testing.T) {
	in := "*2\r\n$3\r\nGET\r\n$5\r\nfirst\r\nSET second v\r\n*2\r\n$3\r\nGET\r\n$5\r\nthird\r\n"
	for how, r := range readers(in) {
		var kept [][][]byte
		for {
			args, err := r.ReadCommand()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			kept = append(kept, args)
		}
		want := [][]string{{"GET", "first"}, {"SET", "second", "v"}, {"GET", "third"}}
		for i, args := range kept {
			for j, a := range args {
				if string(a) != want[i][j] {
					t.Errorf("%s: cmd %d arg %d = %q, want %q", how, i, j, a, want[i][j])
				}
			}
		}
		// Appending to one arg must not overwrite the next one.
		_ = append(kept[0][0], "XXXXX"...)
		if string(kept[0][1]) != "first" {
			t.Errorf("%s: append to arg 0 clobbered arg 1: %q", how, kept[0][1])
		}
	}
}

func TestReadCommandAllocs(t *testing.T) {
	cmd := "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
	src := &loopReader{data: []byte(cmd)}
	r := NewReader(src, 4096)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := r.ReadCommand(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("ReadCommand allocs = %v, want <= 2", allocs)
	}
}

func TestHugeClaimedBulkIsCheap(t *testing.T) {
	in := "*2\r\n$3\r\nSET\r\n$524288000\r\n0123456789"
	for how, size := range map[string]int{"small buffer": 16, "default buffer": 0, "big buffer": 1 << 20} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := NewReader(strings.NewReader(in), size)
		_, err := r.ReadCommand()
		runtime.ReadMemStats(&after)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("%s: err = %v, want io.ErrUnexpectedEOF", how, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20+uint64(size) {
			t.Errorf("%s: allocated %d bytes for a 10-byte body", how, alloc)
		}
	}
}

func TestBuffered(t *testing.T) {
	r := NewReader(strings.NewReader("PING\r\nPING\r\n"), 0)
	if _, err := r.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	if r.Buffered() != 6 {
		t.Errorf("Buffered = %d, want 6", r.Buffered())
	}
	if _, err := r.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	if r.Buffered() != 0 {
		t.Errorf("Buffered = %d, want 0", r.Buffered())
	}
}

func TestParseInt(t *testing.T) {
	good := map[string]int64{"0": 0, "7": 7, "-1": -1, "123": 123,
		"9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63}
	for s, want := range good {
		if got, ok := parseInt([]byte(s)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-", "+1", "01", "-0", "1a", " 1", "9223372036854775808",
		"-9223372036854775809", "99999999999999999999", "1.5"} {
		if got, ok := parseInt([]byte(s)); ok {
			t.Errorf("parseInt(%q) = %d, want failure", s, got)
		}
	}
}

// loopReader serves data over and over, for benchmarks and alloc tests.
type loopReader struct {
	data []byte
	pos  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.pos:])
		n += c
		l.pos = (l.pos + c) % len(l.data)
	}
	return n, nil
}

func TestReadCommandLimits(t *testing.T) {
	args := func(n int) string {
		return "*" + strconv.Itoa(n) + "\r\n" + strings.Repeat("$1\r\nx\r\n", n)
	}
	bulk := func(n int) string {
		return "*2\r\n$4\r\nECHO\r\n$" + strconv.Itoa(n) + "\r\n" + strings.Repeat("x", n) + "\r\n"
	}
	tests := []struct {
		name    string
		maxBulk int64
		unauth  bool
		in      string
		err     string // "" means the command is read
	}{
		{"within the limit", 2048, false, bulk(2048), ""},
		{"over the limit", 2048, false, bulk(2049), "Protocol error: invalid bulk length"},
		{"0 keeps redis's limit", 0, false, bulk(100_000), ""},
		{"unauthenticated bulk", 0, true, bulk(16<<10 + 1), "Protocol error: unauthenticated bulk length"},
		{"unauthenticated bulk at the limit", 0, true, bulk(16 << 10), ""},
		{"unauthenticated args", 0, true, args(11), "Protocol error: unauthenticated multibulk length"},
		{"unauthenticated args at the limit", 0, true, args(10), ""},
		{"limit below redis's unauthenticated one", 1024, true, bulk(2000), "Protocol error: invalid bulk length"},
		{"authenticated again", 0, false, args(11), ""},
	}
	for _, tc := range tests {
		for how, r := range readers(tc.in) {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				r.Limit(tc.maxBulk, tc.unauth)
				_, err := r.ReadCommand()
				if tc.err == "" {
					if err != nil {
						t.Fatalf("error %v, want the command", err)
					}
					return
				}
				var pe *ProtocolError
				if !errors.As(err, &pe) || pe.Msg != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			})
		}
	}
}
