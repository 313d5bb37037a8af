package expiry

import (
	"strconv"
	"strings"
	"testing"
)

func TestRewrite(t *testing.T) {
	const now = 1_000_000
	s := func(d int64) string { return strconv.FormatInt(Store(d), 10) }
	tests := []struct {
		in, want string
	}{
		{"EXPIRE k 10", "PEXPIREAT k " + s(1010000)},
		{"expire k 10 NX", "PEXPIREAT k " + s(1010000) + " NX"},
		{"PEXPIRE k 250", "PEXPIREAT k " + s(1000250)},
		{"EXPIRE k -5", "PEXPIREAT k " + s(995000)},
		{"EXPIREAT k 2000", "PEXPIREAT k " + s(2000000)},
		{"PEXPIREAT k 2000", "PEXPIREAT k " + s(2000)},
		{"PEXPIREAT k 9223372036854770000", "PEXPIREAT k 9223372036854775807"},
		{"EXPIRE k abc", "EXPIRE k abc"},
		{"EXPIRE k 9223372036854775807", "EXPIRE k 9223372036854775807"},
		{"EXPIRE k", "EXPIRE k"},
		{"SETEX k 10 v", "SET k v PXAT " + s(1010000)},
		{"PSETEX k 10 v", "SET k v PXAT " + s(1000010)},
		{"SETEX k 0 v", "SETEX k 0 v"},
		{"SETEX k -1 v", "SETEX k -1 v"},
		{"SET k v", "SET k v"},
		{"SET k v EX 10", "SET k v PXAT " + s(1010000)},
		{"SET k v NX px 20 GET", "SET k v NX PXAT " + s(1000020) + " GET"},
		{"SET k v EXAT 5", "SET k v PXAT " + s(5000)},
		{"SET k v PXAT 5", "SET k v PXAT " + s(5)},
		{"SET k v PXAT 0", "SET k v PXAT 0"},
		{"SET k EX", "SET k EX"},
		{"SET k v EX notanumber", "SET k v EX notanumber"},
		{"SET k v KEEPTTL", "SET k v KEEPTTL"},
		{"GETEX k EX 1", "GETEX k PXAT " + s(1001000)},
		{"GETEX k PERSIST", "GETEX k PERSIST"},
		{"RESTORE k 100 payload", "RESTORE k " + s(1000100) + " payload ABSTTL"},
		{"RESTORE k 0 payload", "RESTORE k 0 payload"},
		{"RESTORE k 5000 payload ABSTTL", "RESTORE k " + s(5000) + " payload ABSTTL"},
		{"GET k", "GET k"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var args [][]byte
			for _, f := range strings.Fields(tt.in) {
				args = append(args, []byte(f))
			}
			orig := strings.Join(strings.Fields(tt.in), " ")
			got := Rewrite(strings.ToLower(string(args[0])), args, now)
			var parts []string
			for _, a := range got {
				parts = append(parts, string(a))
			}
			if s := strings.Join(parts, " "); s != tt.want {
				t.Errorf("got %q, want %q", s, tt.want)
			}
			var back []string
			for _, a := range args {
				back = append(back, string(a))
			}
			if strings.Join(back, " ") != orig {
				t.Errorf("Rewrite changed its argument: %q", back)
			}
		})
	}
}

func TestStoreDeadline(t *testing.T) {
	for _, d := range []int64{0, 1, 1_700_000_000_000, -5000} {
		if got := Deadline(Store(d)); got != d {
			t.Errorf("Deadline(Store(%d)) = %d", d, got)
		}
		if Expired(Store(d), d) || !Expired(Store(d), d+1) {
			t.Errorf("deadline %d: alive at it, expired after it, as redis's now > when", d)
		}
	}
	if Deadline(-1) != -1 || Deadline(-2) != -2 || Expired(-1, 1<<40) {
		t.Error("no deadline and no key must stay as they are")
	}
}

func TestSetsDeadline(t *testing.T) {
	for in, want := range map[string]bool{
		"SET k v": false, "SET k v KEEPTTL": false, "SET k EX": false, "SET k v ex 10": true, "SET k v NX PXAT 5": true,
		"GETEX k": false, "GETEX k PERSIST": false, "GETEX k EXAT 5": true,
		"RESTORE k 0 payload": false, "RESTORE k 10 payload": true,
		"EXPIRE k 10": true, "SETEX k 10 v": true,
	} {
		var args [][]byte
		for _, f := range strings.Fields(in) {
			args = append(args, []byte(f))
		}
		if got := SetsDeadline(strings.ToLower(string(args[0])), args); got != want {
			t.Errorf("SetsDeadline(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestBlindWrite(t *testing.T) {
	for in, want := range map[string]bool{
		"SET k v": true, "set k v PX 100": true, "SET k v NX": false, "SET k v GET": false, "SET k v KEEPTTL": false,
		"SETEX k 1 v": true, "MSET a 1 b 2": true, "INCR k": false, "DEL k": false, "APPEND k v": false,
	} {
		var args [][]byte
		for _, f := range strings.Fields(in) {
			args = append(args, []byte(f))
		}
		if got := BlindWrite(args); got != want {
			t.Errorf("BlindWrite(%s) = %v, want %v", in, got, want)
		}
	}
}
