package test

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// The faketime shim (faketime/faketime.c) shifts a redis-server's wall
// clock by what a file of the node says, so a test skews a running redis.
var shim struct {
	once sync.Once
	path string
	err  error
}

// faketimeShim builds the shim with gcc, once per test binary.
func faketimeShim() (string, error) {
	shim.once.Do(func() {
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			shim.err = fmt.Errorf("gcc is needed to build the faketime shim (Debian package gcc; scripts/install-test-deps.sh installs it): %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "raftproxy-faketime-")
		if err != nil {
			shim.err = err
			return
		}
		src, err := filepath.Abs("faketime/faketime.c")
		if err != nil {
			shim.err = err
			return
		}
		out := filepath.Join(dir, "faketime.so")
		if b, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", out, src).CombinedOutput(); err != nil {
			shim.err = fmt.Errorf("build the faketime shim: %v\n%s", err, b)
			return
		}
		shim.path = out
	})
	return shim.path, shim.err
}

// clockFile is the file the shim reads this node's redis offset from.
func (n *Node) clockFile() string { return filepath.Join(n.dir, "redis.clock") }

// skewEnv is the environment that runs this node's redis under the shim,
// with the offset its clock file holds (zero at first).
func (n *Node) skewEnv() ([]string, error) {
	so, err := faketimeShim()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(n.clockFile()); os.IsNotExist(err) {
		if err := n.SetRedisClock(0); err != nil {
			return nil, err
		}
	}
	return []string{"LD_PRELOAD=" + so, "FAKETIME_FILE=" + n.clockFile()}, nil
}

// SetRedisClock shifts the wall clock of this node's redis-server (running
// under ClusterOptions.SkewClocks) by d from now on.
func (n *Node) SetRedisClock(d time.Duration) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(d.Milliseconds()))
	f, err := os.OpenFile(n.clockFile(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	// In place: the shim maps the file, and reads it at every call.
	_, err = f.WriteAt(b[:], 0)
	return err
}
