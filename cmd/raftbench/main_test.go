package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// fakeRedis answers just enough of the protocol for the workloads: MGET and
// INCR of counter keys fail, so error counting is exercised too.
func fakeRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveFake(c) })
		}
	})
	return ln.Addr().String()
}

func serveFake(c net.Conn) {
	defer c.Close()
	rd := resp.NewReader(c, 0)
	var out []byte
	inMulti, failed := false, false
	for {
		args, err := rd.ReadCommand()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(string(args[0]))
		switch {
		case cmd == "MULTI":
			inMulti, failed = true, false
			out = resp.AppendSimple(out, "OK")
		case cmd == "EXEC":
			inMulti = false
			out = resp.AppendArrayLen(out, 2)
			out = resp.AppendSimple(out, "OK")
			if failed {
				out = resp.AppendError(out, "ERR counter broken")
			} else {
				out = resp.AppendInt(out, 1)
			}
		case inMulti:
			failed = failed || (cmd == "INCR" && bytes.HasSuffix(args[1], []byte("7")))
			out = resp.AppendSimple(out, "QUEUED")
		case cmd == "SET" || cmd == "MSET":
			out = resp.AppendSimple(out, "OK")
		case cmd == "GET":
			out = resp.AppendBulk(out, []byte("value"))
		case cmd == "INCR":
			out = resp.AppendInt(out, 1)
		default:
			out = resp.AppendError(out, "ERR unknown command '"+cmd+"'")
		}
		if rd.Buffered() == 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestLoadWorkloads(t *testing.T) {
	addr := fakeRedis(t)
	for _, tc := range []struct {
		workload string
		errors   bool
		sample   string
	}{
		{"set", false, ""},
		{"get", false, ""},
		{"incr", false, ""},
		{"mixed", false, ""},
		{"mset", false, ""},
		{"mget", true, "ERR unknown command 'MGET'"},
		{"tx", true, "ERR counter broken"},
	} {
		for _, pipeline := range []string{"1", "7"} {
			t.Run(tc.workload+"/P"+pipeline, func(t *testing.T) {
				code, out, errOut := runCmd("load", "-addr", addr, "-clients", "3", "-duration", "100ms",
					"-pipeline", pipeline, "-workload", tc.workload, "-keys", "20", "-json")
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				var res loadResult
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("%v: %q", err, out)
				}
				if res.Workload != tc.workload || res.Clients != 3 || res.Pipeline != int(pipeline[0]-'0') {
					t.Errorf("result echoes the wrong config: %+v", res)
				}
				if res.Seconds < 0.1 || res.Seconds > 5 {
					t.Errorf("seconds = %v", res.Seconds)
				}
				if gotErr := res.Errors > 0; gotErr != tc.errors {
					t.Errorf("errors = %d, want errors: %v", res.Errors, tc.errors)
				}
				if tc.workload != "mget" && res.Ops == 0 {
					t.Error("no successful ops")
				}
				if res.Ops > 0 && (res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.Max) {
					t.Errorf("latencies out of order: %+v", res)
				}
				if tc.sample != "" && (len(res.ErrorSamples) != 1 || res.ErrorSamples[0] != tc.sample) {
					t.Errorf("error samples = %q, want [%q]", res.ErrorSamples, tc.sample)
				}
			})
		}
	}
}

func TestLoadHumanLine(t *testing.T) {
	addr := fakeRedis(t)
	code, out, errOut := runCmd("load", "-addr", addr, "-clients", "2", "-duration", "50ms", "-workload", "mget")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "mget P1 c2: 0 ops/s  p50 0.000 ms") || !strings.Contains(out, "  error: ERR unknown command 'MGET'\n") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestFill(t *testing.T) {
	addr := fakeRedis(t)
	code, out, errOut := runCmd("fill", "-addr", addr, "-keys", "1000", "-clients", "3", "-pipeline", "64")
	if code != 0 || !strings.HasPrefix(out, "fill: 1000 keys of 100 bytes in ") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestForward(t *testing.T) {
	addr := fakeRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go forwardConn(c.(*net.TCPConn), addr, &bytes.Buffer{})
		}
	}()
	code, out, errOut := runCmd("load", "-addr", ln.Addr().String(), "-clients", "2", "-duration", "50ms", "-workload", "tx", "-pipeline", "3", "-keys", "5")
	if code != 0 || !strings.HasPrefix(out, "tx P3 c2: ") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestExitCodes(t *testing.T) {
	// A port that was just free: connecting is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	time.Sleep(10 * time.Millisecond)

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"load", "-workload", "nope"}, 2, `unknown workload "nope"`},
		{[]string{"load", "-clients", "0"}, 2, "-clients must be at least 1"},
		{[]string{"load", "-pipeline", "x"}, 2, "invalid value"},
		{[]string{"load", "stray"}, 2, `unexpected argument "stray"`},
		{[]string{"fill", "-keys", "0"}, 2, "-keys must be at least 1"},
		{[]string{"forward", "-listen", "127.0.0.1:0"}, 2, "-listen and -to are required"},
		{[]string{"load", "-h"}, 0, "Usage: raftbench load"},
		{[]string{"load", "-addr", closed, "-duration", "1s"}, 1, "connect to " + closed},
		{[]string{"fill", "-addr", closed}, 1, "connect to " + closed},
	} {
		code, _, errOut := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("raftbench %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.stderr)
		}
	}
}
