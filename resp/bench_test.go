package resp

import (
	"bytes"
	"testing"
)

// pipelined builds a stream of n copies of cmd, like a pipelining client.
func pipelined(cmd []byte, n int) []byte {
	return bytes.Repeat(cmd, n)
}

func benchCommands(b *testing.B, cmd []byte) {
	r := NewReader(&loopReader{data: pipelined(cmd, 100)}, 16<<10)
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadCommand(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadCommandSET(b *testing.B) {
	value := bytes.Repeat([]byte("v"), 64)
	benchCommands(b, AppendCommand(nil, []byte("SET"), []byte("key:0001"), value))
}

func BenchmarkReadCommandInline(b *testing.B) {
	benchCommands(b, []byte("SET key:0001 "+string(bytes.Repeat([]byte("v"), 64))+"\r\n"))
}

func benchReplies(b *testing.B, reply []byte) {
	r := NewReader(&loopReader{data: pipelined(reply, 100)}, 16<<10)
	dst := make([]byte, 0, 4096)
	b.SetBytes(int64(len(reply)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = r.ReadReply(dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadReplyBulk(b *testing.B) {
	benchReplies(b, AppendBulk(nil, bytes.Repeat([]byte("v"), 64)))
}

func BenchmarkReadReplyArray(b *testing.B) {
	reply := AppendArrayLen(nil, 10)
	for range 10 {
		reply = AppendBulkString(reply, "value:0001")
	}
	benchReplies(b, reply)
}

func BenchmarkAppendCommand(b *testing.B) {
	args := [][]byte{[]byte("SET"), []byte("key:0001"), bytes.Repeat([]byte("v"), 64)}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendCommand(dst[:0], args...)
	}
}
