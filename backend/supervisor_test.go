package backend

import (
	"context"
	"log/slog"
	"os/exec"
	"testing"
	"time"
)

// startSupervised starts a supervised redis-server for the test, stopped
// when it ends.
func startSupervised(t *testing.T) *Supervisor {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	s, err := StartSupervisor(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s
}

// TestSupervisorRestartHook: a supervised redis-server that dies is
// started again, and the hook that has the node rebuild it runs then, not
// at the node's next (idle: rare) health check.
func TestSupervisorRestartHook(t *testing.T) {
	s := startSupervised(t)
	restarted := make(chan struct{}, 4)
	s.SetOnRestart(func() { restarted <- struct{}{} })
	s.mu.Lock()
	first := s.cmd.Process
	s.mu.Unlock()
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatal("no restart hook 10 s after the redis-server was killed")
	}
	s.mu.Lock()
	again := s.cmd.Process
	s.mu.Unlock()
	if again.Pid == first.Pid {
		t.Fatal("the hook ran, but the same redis-server is recorded")
	}
}
