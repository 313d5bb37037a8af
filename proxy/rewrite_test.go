package proxy

import (
	"strings"
	"testing"
)

func TestAbsoluteTimes(t *testing.T) {
	const now = 1_000_000
	tests := []struct {
		in, want string
	}{
		{"EXPIRE k 10", "PEXPIREAT k 1010000"},
		{"expire k 10 NX", "PEXPIREAT k 1010000 NX"},
		{"PEXPIRE k 250", "PEXPIREAT k 1000250"},
		{"EXPIRE k -5", "PEXPIREAT k 995000"},
		{"EXPIRE k abc", "EXPIRE k abc"},
		{"EXPIRE k 9223372036854775807", "EXPIRE k 9223372036854775807"},
		{"SETEX k 10 v", "SET k v PXAT 1010000"},
		{"PSETEX k 10 v", "SET k v PXAT 1000010"},
		{"SETEX k 0 v", "SETEX k 0 v"},
		{"SETEX k -1 v", "SETEX k -1 v"},
		{"SET k v", "SET k v"},
		{"SET k v EX 10", "SET k v PXAT 1010000"},
		{"SET k v NX px 20 GET", "SET k v NX PXAT 1000020 GET"},
		{"SET k EX", "SET k EX"},
		{"SET k v EX notanumber", "SET k v EX notanumber"},
		{"SET k v KEEPTTL", "SET k v KEEPTTL"},
		{"GETEX k EX 1", "GETEX k PXAT 1001000"},
		{"GETEX k PERSIST", "GETEX k PERSIST"},
		{"RESTORE k 100 payload", "RESTORE k 1000100 payload ABSTTL"},
		{"RESTORE k 0 payload", "RESTORE k 0 payload"},
		{"RESTORE k 5000 payload ABSTTL", "RESTORE k 5000 payload ABSTTL"},
		{"GET k", "GET k"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var args [][]byte
			for _, f := range strings.Fields(tt.in) {
				args = append(args, []byte(f))
			}
			got := absoluteTimes(strings.ToLower(string(args[0])), args, now)
			var parts []string
			for _, a := range got {
				parts = append(parts, string(a))
			}
			if s := strings.Join(parts, " "); s != tt.want {
				t.Errorf("got %q, want %q", s, tt.want)
			}
		})
	}
}
