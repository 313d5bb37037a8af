package resp

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// errString compares errors by text, treating nil as "".
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
		"*0\r\n*-1\r\nPING\r\n",
		"SET \"a\\x41\\n\" 'b\\'c'\r\n",
		"\r\n  \n\x00\nGET k\n",
		"*1\r\n$3\r\nabcde\r\n",
		"*-5\r\n",
		"*1\r\nX",
		"*1\r\n$-1\r\n",
		"SET \"abc",
		"*2\r\n$3\r\nGET\r\n$3\r\nab",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		whole := NewReader(bytes.NewReader(data), 4096)
		tiny := NewReader(iotest.OneByteReader(bytes.NewReader(data)), 16)
		for {
			args, err := whole.ReadCommand()
			args2, err2 := tiny.ReadCommand()
			// Fragmentation must not change the outcome.
			if errString(err) != errString(err2) || !equalArgs(args, args2) {
				t.Fatalf("whole: %q, %v; one byte reads: %q, %v", args, err, args2, err2)
			}
			if err != nil {
				if _, ok := err.(*ProtocolError); !ok && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(args) == 0 {
				t.Fatal("ReadCommand returned no args and no error")
			}
			enc := AppendCommand(nil, args...)
			back, err := NewReader(bytes.NewReader(enc), 16).ReadCommand()
			if err != nil || !equalArgs(args, back) {
				t.Fatalf("re-encoded %q parsed as %q, %v", args, back, err)
			}
		}
	})
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"+OK\r\n",
		"-ERR x\r\n:12\r\n",
		"$5\r\nhello\r\n$-1\r\n*-1\r\n",
		"*2\r\n*1\r\n:1\r\n%1\r\n+k\r\n_\r\n",
		"|1\r\n+ttl\r\n:3\r\n~2\r\n#t\r\n,1.5\r\n",
		">2\r\n(123\r\n=7\r\ntxt:abc\r\n!3\r\nERR\r\n",
		"*3\r\n:1\r\n",
		"$3\r\nabcd\r\n",
		"X\r\n",
		"*1\r\n*1\r\n*1\r\n*1\r\n+deep\r\n",
		"#x\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, err := NewReader(bytes.NewReader(data), 4096).ReadReply(nil)
		raw2, err2 := NewReader(iotest.OneByteReader(bytes.NewReader(data)), 16).ReadReply(nil)
		if errString(err) != errString(err2) || !bytes.Equal(raw, raw2) {
			t.Fatalf("whole: %q, %v; one byte reads: %q, %v", raw, err, raw2, err2)
		}
		v, rest, perr := Parse(data)
		if err != nil {
			if len(raw) != 0 {
				t.Fatalf("error %v but dst grew to %q", err, raw)
			}
			if perr == nil {
				t.Fatalf("Parse accepted %q that ReadReply rejected: %v", data, err)
			}
			if _, serr := Skip(data); serr == nil {
				t.Fatalf("Skip accepted %q that ReadReply rejected: %v", data, err)
			}
			return
		}
		if !bytes.HasPrefix(data, raw) {
			t.Fatalf("raw %q is not a prefix of the input", raw)
		}
		if n, serr := Skip(data); serr != nil || n != len(raw) {
			t.Fatalf("Skip of the input: %d, %v; ReadReply consumed %d", n, serr, len(raw))
		}
		if errors.Is(perr, errDepth) {
			return // Parse decodes only replies nested less deep
		}
		if perr != nil || len(rest) != len(data)-len(raw) {
			t.Fatalf("Parse of the input: rest %d bytes, %v; ReadReply consumed %d", len(rest), perr, len(raw))
		}
		v2, rest2, perr := Parse(raw)
		if perr != nil || len(rest2) != 0 || describe(v) != describe(v2) {
			t.Fatalf("Parse(raw %q) = %s, rest %q, %v", raw, describe(v2), rest2, perr)
		}
	})
}
