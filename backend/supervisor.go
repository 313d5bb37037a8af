package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Supervisor runs a redis-server for this node (when no --redis is given)
// and restarts it when it exits. The redis keeps no data of its own: it
// listens only on a unix socket in the data directory, with persistence off,
// and is rebuilt from the raft log after every restart.
type Supervisor struct {
	Socket string
	// Password is the random requirepass of the redis: the socket's
	// permissions keep other users out, the password other processes of
	// the same user (nothing but raftproxy may write to this redis).
	Password string
	dir      string
	bin      string
	log      *slog.Logger

	mu        sync.Mutex
	cmd       *exec.Cmd
	onRestart func()
	hib       *Hibernation
	stop      chan struct{}
	done      chan struct{}
}

// StartSupervisor starts redis-server from PATH under dataDir/redis.
func StartSupervisor(dataDir string, log *slog.Logger) (*Supervisor, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("no --redis given and redis-server is not on PATH (install it, e.g. apt-get install redis-server): %w", err)
	}
	dir := filepath.Join(dataDir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("make a password for redis-server: %w", err)
	}
	s := &Supervisor{
		Password: hex.EncodeToString(pw),
		Socket:   filepath.Join(dir, "redis.sock"),
		dir:      dir,
		bin:      bin,
		log:      log.With("component", "redis-supervisor"),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := s.startOnce(); err != nil {
		return nil, err
	}
	go s.watch()
	return s, nil
}

func (s *Supervisor) startOnce() error {
	os.Remove(s.Socket)
	cmd := exec.Command(s.bin,
		"--port", "0",
		"--unixsocket", s.Socket,
		"--unixsocketperm", "700",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--hz", "1",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"-", // and the config on stdin: the password, kept out of ps
	)
	cmd.Stdin = strings.NewReader("requirepass " + s.Password + "\n")
	// Redis compares strings with strcoll (SORT ALPHA, and Lua's < in the
	// scripts that sort for determinism): every node must collate alike.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// The redis must not outlive raftproxy, even after kill -9.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.mu.Lock()
	s.cmd = cmd
	hib := s.hib
	s.mu.Unlock()
	hib.started() // outside mu: a Hibernation's lock is taken before it
	s.log.Info("started redis-server", "pid", cmd.Process.Pid, "socket", s.Socket)
	return nil
}

// SetOnRestart sets what is called each time a new redis-server has
// replaced one that exited: the node should rebuild it now
// (raftnode.Node.CheckStateMachine), not at its next health check, which
// an idle group makes rarely.
func (s *Supervisor) SetOnRestart(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onRestart = f
}

// Hibernate has the redis-server stopped after idle without use by this
// process (hibernate.go). Its connections must be dialled through the
// returned Hibernation; call it once, before any are.
func (s *Supervisor) Hibernate(idle time.Duration) *Hibernation {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hib = newHibernation(max(idle, minHibernateIdle), s.process, s.log)
	return s.hib
}

// process is the redis-server running now.
func (s *Supervisor) process() *os.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	return s.cmd.Process
}

func (s *Supervisor) watch() {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for {
		s.mu.Lock()
		cmd := s.cmd
		s.mu.Unlock()
		started := time.Now()
		err := cmd.Wait()
		select {
		case <-s.stop:
			return
		default:
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.log.Warn("redis-server exited; restarting it", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-s.stop:
			return
		}
		backoff = min(2*backoff, 5*time.Second)
		for {
			if err := s.startOnce(); err == nil {
				s.mu.Lock()
				f := s.onRestart
				s.mu.Unlock()
				if f != nil {
					f()
				}
				break
			} else {
				s.log.Error("restarting redis-server failed", "err", err)
			}
			select {
			case <-time.After(backoff):
			case <-s.stop:
				return
			}
		}
	}
}

// Stop stops redis-server and waits for it to exit.
func (s *Supervisor) Stop(ctx context.Context) {
	close(s.stop)
	s.mu.Lock()
	cmd, hib := s.cmd, s.hib
	s.mu.Unlock()
	// A stopped redis-server would not act on SIGTERM.
	hib.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-s.done
	}
}
