package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the program run inside a node's namespace:
// with helperEnv set, TestMain acts as a tiny TCP echo server or client
// instead of running tests. That keeps the tests free of python, nc and
// setns from this (multi-threaded) process.
const (
	helperEnv  = "NETNS_TEST_HELPER" // "echo" or "dial"
	addrEnv    = "NETNS_TEST_ADDR"
	echoPort   = "7000"
	dialTimout = time.Second
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "echo":
		echoServer(os.Getenv(addrEnv))
	case "dial":
		fmt.Println(dial(os.Getenv(addrEnv)))
	default:
		fmt.Fprintln(os.Stderr, "unknown", helperEnv)
		os.Exit(2)
	}
}

// echoServer listens on addr, reports "listening <pid>" on stdout, and
// echoes every connection until killed.
func echoServer(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("listening", os.Getpid())
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// dial connects to an echo server at addr and returns "ok" if a message
// comes back, "timeout" if the connection could not be made in time,
// "refused" if it was refused, or "error: ...".
func dial(addr string) string {
	c, err := net.DialTimeout("tcp", addr, dialTimout)
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return "timeout"
		case errors.Is(err, syscall.ECONNREFUSED):
			return "refused"
		}
		return "error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "error: " + err.Error()
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		return fmt.Sprintf("error: echo %q: %v", line, err)
	}
	return "ok"
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// startEcho runs an echo server in node i, listening on the node's address.
func startEcho(ctx context.Context, t *testing.T, topo *Topology, i int) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cmd := topo.Command(ctx, i, self(t))
	cmd.Env = append(os.Environ(), helperEnv+"=echo", addrEnv+"="+net.JoinHostPort(topo.NodeIP(i), echoPort))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("echo server in node %d: %v", i, err)
	}
	// ip netns exec execs the program: the PID we hold is the server's.
	if want := fmt.Sprintf("listening %d\n", cmd.Process.Pid); line != want {
		t.Fatalf("echo server in node %d said %q, want %q", i, line, want)
	}
}

// dialFrom connects from inside node from to the echo server at addr.
func dialFrom(ctx context.Context, t *testing.T, topo *Topology, from int, addr string) string {
	t.Helper()
	cmd := topo.Command(ctx, from, self(t))
	cmd.Env = append(os.Environ(), helperEnv+"=dial", addrEnv+"="+addr,
		// Under -race the binary otherwise sleeps a second before exiting.
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dial %d → %s: %v: %s", from, addr, err, out)
	}
	return strings.TrimSpace(string(out))
}

func expectDial(ctx context.Context, t *testing.T, topo *Topology, from, to int, want string) {
	t.Helper()
	start := time.Now()
	addr := net.JoinHostPort(topo.NodeIP(to), echoPort)
	var got string
	if from == 0 {
		got = dial(addr)
	} else {
		got = dialFrom(ctx, t, topo, from, addr)
	}
	if got != want {
		t.Fatalf("dial %d → %d (0 = host) after %v: got %s, want %s (cuts %v)", from, to, time.Since(start).Round(time.Millisecond), got, want, topo.Cuts())
	}
	if want == "timeout" && time.Since(start) < dialTimout {
		t.Fatalf("dial %d → %d timed out after only %v", from, to, time.Since(start))
	}
}

func skipUnlessAvailable(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

func netnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

func TestPartition(t *testing.T) {
	skipUnlessAvailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	topo, err := New(ctx, "nstest", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	if topo.Nodes() != 3 {
		t.Fatalf("Nodes() = %d", topo.Nodes())
	}
	t.Logf("host %s, nodes %s %s %s", topo.HostIP(), topo.NodeIP(1), topo.NodeIP(2), topo.NodeIP(3))
	for i := 1; i <= 3; i++ {
		startEcho(ctx, t, topo, i)
	}

	for _, to := range []int{1, 2, 3} {
		expectDial(ctx, t, topo, 0, to, "ok")
	}
	expectDial(ctx, t, topo, 1, 2, "ok")
	expectDial(ctx, t, topo, 3, 1, "ok")
	// A node reaches the test process at HostIP.
	ln, err := net.Listen("tcp", net.JoinHostPort(topo.HostIP(), "0"))
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	if got := dialFrom(ctx, t, topo, 1, ln.Addr().String()); got != "ok" {
		t.Fatalf("node 1 → host: %s", got)
	}

	if err := topo.Partition([]int{1}, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	if got, want := topo.Cuts(), [][2]int{{1, 2}, {1, 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Cuts() = %v, want %v", got, want)
	}
	expectDial(ctx, t, topo, 1, 2, "timeout")
	expectDial(ctx, t, topo, 3, 1, "timeout")
	expectDial(ctx, t, topo, 2, 3, "ok")
	expectDial(ctx, t, topo, 0, 1, "ok")
	expectDial(ctx, t, topo, 0, 2, "ok")

	if err := topo.Heal(); err != nil {
		t.Fatal(err)
	}
	if got := topo.Cuts(); len(got) != 0 {
		t.Fatalf("Cuts() after Heal = %v", got)
	}
	expectDial(ctx, t, topo, 1, 2, "ok")

	if err := topo.Cut(3, 2); err != nil {
		t.Fatal(err)
	}
	if got, want := topo.Cuts(), [][2]int{{2, 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Cuts() = %v, want %v", got, want)
	}
	expectDial(ctx, t, topo, 2, 3, "timeout")
	expectDial(ctx, t, topo, 1, 3, "ok")
	// One group of all nodes heals.
	if err := topo.Partition([]int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	expectDial(ctx, t, topo, 2, 3, "ok")
	if err := topo.Partition([]int{1, 2}, []int{2}); err == nil {
		t.Fatal("Partition with node 2 in two groups succeeded")
	}

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if list := netnsList(t); strings.Contains(list, "nstest-") {
		t.Fatalf("namespaces left after Close:\n%s", list)
	}
	if out, err := exec.Command("ip", "route", "show", "root", topo.HostIP()+"/16").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("host route left after Close: %v: %s", err, out)
	}
	if err := topo.Heal(); err == nil {
		t.Fatal("Heal after Close succeeded")
	}
}

// A topology that was never closed (a killed test) does not break the next
// one of the same name.
func TestLeftovers(t *testing.T) {
	skipUnlessAvailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := New(ctx, "nsleft", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	topo, err := New(ctx, "nsleft", 2)
	if err != nil {
		t.Fatalf("New over leftovers: %v", err)
	}
	defer topo.Close()
	if list := netnsList(t); strings.Contains(list, "nsleft-n3") {
		t.Fatalf("leftover namespace nsleft-n3 not removed:\n%s", list)
	}
	// Nothing listens: a refusal proves the node is reachable.
	for i := 1; i <= 2; i++ {
		expectDial(ctx, t, topo, 0, i, "refused")
	}
}

func TestNewBadArgs(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"", "toolong", "Upper", "a-b", "1abc", "a b"} {
		if topo, err := New(ctx, name, 3); err == nil {
			topo.Close()
			t.Errorf("New(%q) succeeded", name)
		} else {
			t.Logf("New(%q): %v", name, err)
		}
	}
	for _, n := range []int{0, -1, MaxNodes + 1} {
		if topo, err := New(ctx, "ok", n); err == nil {
			topo.Close()
			t.Errorf("New with %d nodes succeeded", n)
		}
	}
}

func TestAvailable(t *testing.T) {
	err := Available()
	t.Logf("Available() = %v", err)
	if err == nil && os.Geteuid() != 0 {
		t.Fatal("Available() = nil without root")
	}
	if err != nil && os.Geteuid() != 0 && !strings.Contains(err.Error(), "root") {
		t.Fatalf("Available() without root should name root: %v", err)
	}
}

// Guard against an accidental change of the address scheme.
func TestAddresses(t *testing.T) {
	topo := &Topology{name: "x", octet: 150, nodes: 2}
	if got := topo.HostIP(); got != "10.150.0.2" {
		t.Fatal(got)
	}
	if got := topo.NodeIP(2); got != "10.150.2.2" {
		t.Fatal(got)
	}
	if got := topo.Namespace(1); got != "x-n1" {
		t.Fatal(got)
	}
	cmd := topo.Command(context.Background(), 1, "true", "a")
	if got := strings.Join(cmd.Args, " "); got != "ip netns exec x-n1 true a" {
		t.Fatal(got)
	}
}
