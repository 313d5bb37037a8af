package backend

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procState is the state letter of pid in /proc (R, S, T for stopped...).
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// "pid (comm) S ...": the comm may hold spaces, the state follows ") ".
	i := bytes.LastIndex(b, []byte(") "))
	if i < 0 || i+2 >= len(b) {
		t.Fatalf("odd /proc stat: %q", b)
	}
	return b[i+2]
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHibernation: a supervised redis-server nothing uses is stopped; a
// command continues it and is answered; a command redis takes longer than
// the idle time to answer (BLPOP with a timeout) keeps it running; a
// listening connection (SUBSCRIBE) does not, and still hears what a later
// command makes redis send; Stop ends a stopped redis-server promptly.
func TestHibernation(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	s, err := StartSupervisor(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.Stop(ctx)
		}
	}()
	h := s.Hibernate(time.Second)
	pid := s.process().Pid
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *Conn
	waitUntil(t, 10*time.Second, "redis-server answers", func() bool {
		c, err = h.Dial(ctx, s.Socket, s.Password)
		return err == nil
	})
	defer c.Close()
	do := func(args ...string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		defer c.SetDeadline(time.Time{})
		bs := make([][]byte, len(args))
		for i, a := range args {
			bs[i] = []byte(a)
		}
		raw, err := c.Do(bs...)
		if err != nil {
			t.Fatalf("%s: %v (redis-server state %c)", args[0], err, procState(t, pid))
		}
		return strings.TrimSpace(string(raw))
	}
	if got := do("SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET: %s", got)
	}

	waitUntil(t, 5*time.Second, "the idle redis-server is stopped", h.Stopped)
	waitUntil(t, time.Second, "the kernel shows it stopped", func() bool { return procState(t, pid) == 'T' })
	if got := do("GET", "k"); got != "$1\r\nv" {
		t.Fatalf("GET after a stop: %q", got)
	}
	if h.Stopped() || procState(t, pid) == 'T' {
		t.Fatal("redis-server still stopped after answering")
	}

	// Redis works on BLPOP for 3 s, three times the idle time, with the
	// reply still to come: it must not be stopped under it.
	stops := h.Stops()
	start := time.Now()
	if got := do("BLPOP", "nothing", "3"); !strings.HasPrefix(got, "*-1") {
		t.Fatalf("BLPOP: %q", got)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("BLPOP 3 took %v", el)
	}
	if h.Stops() != stops {
		t.Fatalf("stopped %d times during a BLPOP it had to answer", h.Stops()-stops)
	}

	// A subscriber waiting for messages keeps nothing running.
	sub, err := h.DialListener(ctx, s.Socket, s.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.DoValue("SUBSCRIBE", "ch"); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		raw, err := sub.ReadReply(nil)
		got <- fmt.Sprintf("%q %v", raw, err)
	}()
	waitUntil(t, 5*time.Second, "stopped with a subscriber waiting", h.Stopped)
	if n := do("PUBLISH", "ch", "hello"); n != ":1" {
		t.Fatalf("PUBLISH: %s", n)
	}
	select {
	case m := <-got:
		if !strings.Contains(m, "hello") {
			t.Fatalf("the subscriber read %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber heard nothing")
	}

	// A stopped redis-server that dies is replaced by one that runs: the
	// health check that follows must ask it, not skip it as stopped.
	waitUntil(t, 5*time.Second, "stopped again", h.Stopped)
	restarted := make(chan struct{}, 1)
	s.SetOnRestart(func() {
		if h.Stopped() {
			t.Error("the replacing redis-server is taken for stopped")
		}
		restarted <- struct{}{}
	})
	if err := s.process().Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatal("no restart 10 s after the stopped redis-server was killed")
	}
	waitUntil(t, 10*time.Second, "the new redis-server answers", func() bool {
		c2, err := h.Dial(ctx, s.Socket, s.Password)
		if err != nil {
			return false
		}
		defer c2.Close()
		_, err = c2.DoValue("PING")
		return err == nil
	})
	pid = s.process().Pid

	waitUntil(t, 5*time.Second, "the new one stopped", h.Stopped)
	waitUntil(t, time.Second, "the kernel shows it stopped", func() bool { return procState(t, pid) == 'T' })
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	start = time.Now()
	s.Stop(stopCtx)
	stopped = true
	// A SIGTERM the stopped process never acted on would end in the
	// SIGKILL after the whole 10 s.
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("stopping a stopped redis-server took %v", el)
	}
}

// TestHibernationGateRace: many callers entering and leaving the gate at
// random, with an idle time short enough that the stopper runs between
// them all the time, never find the process stopped while inside.
func TestHibernationGateRace(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	h := newHibernation(time.Millisecond, func() *os.Process { return cmd.Process }, slog.New(slog.DiscardHandler))
	defer h.Close()
	// The stopper only runs on whole seconds (internal/beat); here it is
	// driven directly, as fast as it can go.
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			h.tryStop()
		}
	}()
	defer close(done)
	deadline := time.Now().Add(3 * time.Second)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := 0; time.Now().Before(deadline); i++ {
				h.enter()
				st := procState(t, cmd.Process.Pid)
				h.exit()
				if st == 'T' {
					errs <- fmt.Errorf("caller %d found the process stopped inside the gate (round %d)", g, i)
					return
				}
				time.Sleep(time.Duration(i%3) * time.Millisecond)
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if h.Stops() == 0 {
		t.Fatal("the process was never stopped: the test raced nothing")
	}
	t.Logf("%d stops", h.Stops())
}

// gatedMachine is a state machine for the supervised redis of s, through
// the gate of a Hibernation stopping it after a second idle.
func gatedMachine(s *Supervisor) (*StateMachine, *Hibernation) {
	h := s.Hibernate(time.Second)
	sm := NewStateMachine(s.Socket, slog.New(slog.DiscardHandler))
	sm.SetPassword(s.Password)
	sm.SetGate(h)
	return sm, h
}

// TestHibernationHeldByLoadLink: a snapshot loaded into a gated redis
// leaves redis a replica of the load's link until the state machine
// releases it, and what goes down that link (a legacy snapshot's
// conversion) is unseen by the gate: the gate stays held while the link
// lives, and redis may be stopped only once it is released.
func TestHibernationHeldByLoadLink(t *testing.T) {
	src := rdbStartRedis(t, false)
	sc := rdbConn(t, src.addr)
	rdbDo(t, sc, "SET", "k", "v")
	path := rdbSave(t, src, sc)
	s := startSupervised(t)
	sm, h := gatedMachine(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resetFrom(t, sm, path)
	// Three idle times, the stopper looking every whole second.
	time.Sleep(3500 * time.Millisecond)
	if h.Stopped() {
		t.Fatal("stopped while the load's link was still held")
	}
	if err := sm.RestoreMachineState(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "stopped once the link was released", h.Stopped)
	c, err := h.Dial(ctx, s.Socket, s.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.DoValue("GET", "k"); err != nil || string(v.Str) != "v" {
		t.Fatalf("GET k after the load: %q %v", v.Str, err)
	}
}

// TestHibernationHeldByFence: a watchdog fence's PONG comes after whatever
// redis runs before it, here a script whose caller stopped waiting; the
// PONG is read by the watchdog's ungated reader, so the fence holds the
// gate until it comes, else redis would be stopped under the script and
// the fence would wait for ever.
func TestHibernationHeldByFence(t *testing.T) {
	s := startSupervised(t)
	sm, h := gatedMachine(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sm.Reset(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := sm.ensureWatchdog(); err != nil {
		t.Fatal(err)
	}
	c, err := h.Dial(ctx, s.Socket, s.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 3.5 s of script (below redis's 5 s busy threshold), whose caller
	// gives up after 100 ms.
	const spin = `local s = redis.call('TIME')
repeat local n = redis.call('TIME') until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 3500000
return 1`
	c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Do([]byte("EVAL"), []byte(spin), []byte("0")); err == nil {
		t.Fatal("the script answered within 100 ms")
	}
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	start := time.Now()
	if err := sm.Settle(fctx); err != nil {
		t.Fatalf("fence after %v: %v (stops %d)", time.Since(start).Round(time.Millisecond), err, h.Stops())
	}
}
