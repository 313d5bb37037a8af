package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte("ok\n"))
		case "/notready":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("[failed] leader\n"))
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		}
	}))
	defer srv.Close()
	// A port nothing listens on: bound, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{"ready", []string{"--url", srv.URL + "/readyz"}, 0, ""},
		{"not ready", []string{"--url", srv.URL + "/notready"}, 1, "503 Service Unavailable: [failed] leader"},
		{"unreachable", []string{"--url", closed}, 1, "connection refused"},
		{"timeout", []string{"--url", srv.URL + "/slow", "--timeout", "100ms"}, 1, "deadline exceeded"},
		{"no url", nil, 2, "want --url"},
		{"extra argument", []string{"--url", srv.URL, "x"}, 2, "want --url"},
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"bad url", []string{"--url", "::"}, 1, "bad --url"},
		{"help", []string{"--help"}, 0, "Usage: raftproxy health"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := healthMain(tc.args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.stderrHas)
			}
			if tc.code == 0 && tc.name != "help" && strings.TrimSpace(stdout.String()) != "ok" {
				t.Errorf("stdout %q, want ok", stdout.String())
			}
		})
	}
}
