// Command raftbench is the load generator of `make bench`: a cheap RESP
// client (one goroutine and one connection per client, no client library)
// that measures throughput and latency of a redis-server or raftproxy, a
// bulk loader, and a plain TCP forwarder that shows what the cheapest
// possible Go proxy costs on the machine.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

const usage = `raftbench: load generator for raftproxy and redis-server (RESP).

Usage:
  raftbench load    [-addr HOST:PORT] [-clients N] [-duration D] [-pipeline P]
                    [-workload W] [-keys K] [-value BYTES] [-json]
  raftbench fill    [-addr HOST:PORT] [-keys K] [-value BYTES] [-pipeline P] [-clients N]
  raftbench forward -listen HOST:PORT -to HOST:PORT

load     runs W for D with N clients, each one connection sending P commands
         at a time; prints ops/s, latency percentiles and errors.
         Workloads: set, get, mixed (80% GET, 20% SET), mset and mget
         (10 keys each) on keys key:<random in [0,K)>; incr on counter:key:<..>
         (apart from SET's values); tx (MULTI, SET k v, INCR counter:k, EXEC
         counted as one op). Ops and latencies count successful ops only.
fill     SETs key:0..key:K-1 as fast as possible; exits 1 on any error reply.
forward  forwards every TCP connection on -listen to -to until SIGINT/SIGTERM.

Run "raftbench COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a command line mistake: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// run executes one subcommand and returns the process exit code: 0, 1 for
// a failure, 2 for bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "load":
		err = runLoad(rest, stdout, stderr)
	case "fill":
		err = runFill(rest, stdout, stderr)
	case "forward":
		err = runForward(rest, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "raftbench: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlagParse):
		return 2 // the flag package already printed the problem and usage
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "raftbench %s: %v (see raftbench %s -h)\n", args[0], err, args[0])
		return 2
	default:
		fmt.Fprintf(stderr, "raftbench %s: %v\n", args[0], err)
		return 1
	}
}

var errFlagParse = errors.New("bad flags")

// parseFlags parses args with fs and rejects positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlagParse
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("raftbench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: raftbench %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// dial connects to addr with TCP_NODELAY; the error names the address.
// dialAuth is dial followed, when password is set, by AUTH password.
func dialAuth(addr, password string) (*net.TCPConn, error) {
	c, err := dial(addr)
	if err != nil || password == "" {
		return c, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cmd := fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password)
	reply := make([]byte, 5)
	if _, err = c.Write([]byte(cmd)); err == nil {
		_, err = io.ReadFull(c, reply)
	}
	if err == nil && string(reply) != "+OK\r\n" {
		err = fmt.Errorf("AUTH refused (%q…)", reply)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("AUTH to %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func dial(addr string) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // drop "dial tcp ADDR:", said below
		}
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	tc := c.(*net.TCPConn)
	if err := tc.SetNoDelay(true); err != nil {
		tc.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return tc, nil
}
