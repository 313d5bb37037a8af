package backend

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// TestFunctionPayload: a real redis's FUNCTION DUMP (LZF-compressed code)
// is wrapped and restored, dumped again and unwrapped back to the code the
// client loaded, and the result restores into redis.
func TestFunctionPayload(t *testing.T) {
	r := rdbStartRedis(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code := "#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return 'hello hello hello hello hello hello hello' end)\n" +
		"redis.register_function('other', function(keys, args) return 1 end)"
	do := func(args ...[]byte) []byte {
		t.Helper()
		raw, err := c.Do(args...)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	b := func(s string) []byte { return []byte(s) }
	do(b("FUNCTION"), b("LOAD"), b(code))
	do(b("FUNCTION"), b("LOAD"), b("#!lua name=lib2\nredis.register_function('f2', function() return 2 end)"))
	dump := do(b("FUNCTION"), b("DUMP"))
	payload := dump[bytes.Index(dump, b("\r\n"))+2 : len(dump)-2]
	if !bytes.Contains(payload, []byte{0xc3}) {
		t.Log("redis did not compress the code; LZF is not exercised")
	}
	wrapped, err := WrapFunctionPayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	do(b("FUNCTION"), b("FLUSH"))
	if raw := do(b("FUNCTION"), b("RESTORE"), wrapped); string(raw) != "+OK\r\n" {
		t.Fatalf("RESTORE of the wrapped payload: %q", raw)
	}
	if raw := do(b("FCALL"), b("myfunc"), b("0"), b("1000")); !bytes.Contains(raw, b("hello hello")) {
		t.Fatalf("FCALL after RESTORE: %q", raw)
	}
	list := do(b("FUNCTION"), b("LIST"), b("LIBRARYNAME"), b("mylib"), b("WITHCODE"))
	if !bytes.Contains(list, b(preludeStart)) {
		t.Fatalf("the restored library has no prelude: %q", list)
	}
	dump = do(b("FUNCTION"), b("DUMP"))
	again, err := UnwrapFunctionPayload(dump[bytes.Index(dump, b("\r\n"))+2 : len(dump)-2])
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(again, b(preludeStart)) || !bytes.Contains(again, b(code)) {
		t.Fatalf("unwrapped payload %q does not hold the client's code", again)
	}
	do(b("FUNCTION"), b("FLUSH"))
	if raw := do(b("FUNCTION"), b("RESTORE"), again); string(raw) != "+OK\r\n" {
		t.Fatalf("RESTORE of the unwrapped payload: %q", raw)
	}
	list = do(b("FUNCTION"), b("LIST"), b("LIBRARYNAME"), b("mylib"), b("WITHCODE"))
	if bytes.Contains(list, b(preludeStart)) || !bytes.Contains(list, b("hello hello")) {
		t.Fatalf("after restoring the unwrapped payload: %q", list)
	}
	// Corrupt payloads are refused, never panicked on.
	for i := range len(payload) {
		bad := append([]byte(nil), payload...)
		bad[i] ^= 0x5a
		if _, err := WrapFunctionPayload(bad); err != nil && !errors.Is(err, ErrBadPayload) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
		if _, err := WrapFunctionPayload(payload[:i]); err == nil && i < len(payload) {
			t.Fatalf("truncated to %d bytes: accepted", i)
		}
	}
}

func FuzzFunctionPayload(f *testing.F) {
	f.Add([]byte("\xf5\x05abcde\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Checksum 0 means unchecked, so the decoder itself is exercised.
		if len(data) >= 10 {
			clear(data[len(data)-8:])
		}
		out, err := UnwrapFunctionPayload(data)
		if err != nil {
			return
		}
		if _, err := WrapFunctionPayload(out); err != nil {
			t.Fatalf("a payload it wrote does not read back: %v", err)
		}
	})
}
