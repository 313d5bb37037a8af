package resp

import (
	"math"
	"testing"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{string(AppendCommand(nil, []byte("SET"), []byte("k"), []byte("a\r\nb"))), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"},
		{string(AppendCommand(nil)), "*0\r\n"},
		{string(AppendCommand(nil, nil, []byte{})), "*2\r\n$0\r\n\r\n$0\r\n\r\n"},
		{string(AppendCommandStrings(nil, "GET", "key")), "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"},
		{string(AppendSimple(nil, "OK")), "+OK\r\n"},
		{string(AppendError(nil, "ERR unknown command")), "-ERR unknown command\r\n"},
		{string(AppendError(nil, "MOVED 1 a:1\r\nx\ny")), "-MOVED 1 a:1  x y\r\n"},
		{string(AppendInt(nil, 0)), ":0\r\n"},
		{string(AppendInt(nil, -12)), ":-12\r\n"},
		{string(AppendInt(nil, math.MinInt64)), ":-9223372036854775808\r\n"},
		{string(AppendBulk(nil, []byte("hi"))), "$2\r\nhi\r\n"},
		{string(AppendBulk(nil, nil)), "$0\r\n\r\n"},
		{string(AppendBulkString(nil, "hello")), "$5\r\nhello\r\n"},
		{string(AppendNullBulk(nil)), "$-1\r\n"},
		{string(AppendArrayLen(nil, 3)), "*3\r\n"},
		{string(AppendArrayLen(nil, -1)), "*-1\r\n"},
		{string(AppendMapLen(nil, 2, true)), "%2\r\n"},
		{string(AppendMapLen(nil, 2, false)), "*4\r\n"},
		{string(AppendSimple([]byte("+A\r\n"), "B")), "+A\r\n+B\r\n"},
		{string(AppendNull(nil, true)), "_\r\n"},
		{string(AppendNull(nil, false)), "$-1\r\n"},
		{string(AppendNullArray(nil, true)), "_\r\n"},
		{string(AppendNullArray(nil, false)), "*-1\r\n"},
		{string(AppendVerbatim(nil, "id=1\n", true)), "=9\r\ntxt:id=1\n\r\n"},
		{string(AppendVerbatim(nil, "", true)), "=4\r\ntxt:\r\n"},
		{string(AppendVerbatim(nil, "id=1\n", false)), "$5\r\nid=1\n\r\n"},
		{string(AppendSetLen(nil, 1, true)), "~1\r\n"},
		{string(AppendSetLen(nil, 1, false)), "*1\r\n"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestAppendZeroAllocs(t *testing.T) {
	dst := make([]byte, 0, 4096)
	args := [][]byte{[]byte("SET"), []byte("key"), []byte("value")}
	allocs := testing.AllocsPerRun(1000, func() {
		b := AppendCommand(dst[:0], args...)
		b = AppendCommandStrings(b, "GET", "key")
		b = AppendSimple(b, "OK")
		b = AppendError(b, "ERR x\ny")
		b = AppendInt(b, 123456)
		b = AppendBulk(b, args[2])
		b = AppendBulkString(b, "v")
		b = AppendNullBulk(b)
		b = AppendArrayLen(b, 5)
		b = AppendNull(b, true)
		b = AppendNullArray(b, false)
		b = AppendVerbatim(b, "id=1", true)
		b = AppendSetLen(b, 1, true)
		_ = AppendMapLen(b, 5, false)
	})
	if allocs != 0 {
		t.Errorf("Append* allocs = %v, want 0", allocs)
	}
}
