package main

import (
	"strings"
	"testing"
)

func TestParseFlagsTLS(t *testing.T) {
	base := []string{"--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:2", "--data-dir", "d"}
	for _, tc := range []struct {
		args []string
		err  string // "" when valid
	}{
		{nil, ""},
		{[]string{"--tls-cert", "c", "--tls-key", "k"}, ""},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca", "--tls-client-auth", "require"}, ""},
		{[]string{"--tls-cert", "c"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--tls-client-auth", "request"}, "needs --tls-cert, --tls-key and --tls-ca"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--tls-client-auth", "yes"}, "want none, request or require"},
		{[]string{"--tls-ca", "ca"}, "--tls-ca needs"},
		{[]string{"--peer-tls-cert", "c", "--peer-tls-key", "k", "--peer-tls-ca", "ca"}, ""},
		{[]string{"--peer-tls-cert", "c", "--peer-tls-key", "k"}, "needs all of"},
		{[]string{"--peer-secret", "0123456789abcdef"}, ""},
		{[]string{"--peer-secret", "short"}, "flag --peer-secret: the peer secret must be at least 16 bytes"},
		{[]string{"--peer-secret", "s", "--peer-secret-file", "f"}, "not both"},
		{[]string{"--peer-secret-file", "f", "--peer-tls-cert", "c", "--peer-tls-key", "k", "--peer-tls-ca", "ca"}, "alternatives"},
	} {
		_, err := parseFlags(append(append([]string{}, base...), tc.args...), nil)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
		}
	}
}
