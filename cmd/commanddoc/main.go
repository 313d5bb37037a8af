// Command commanddoc writes docs/COMMANDS.md: every command of the local
// redis-server and what raftproxy does with it, from the proxy's own
// command table.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/proxy"
)

func main() {
	addr := flag.String("redis", "", "redis-server to read the command table from (default: start a temporary one)")
	out := flag.String("out", "", "file to write (default: standard output)")
	flag.Parse()
	if err := run(*addr, *out); err != nil {
		fmt.Fprintln(os.Stderr, "commanddoc:", err)
		os.Exit(1)
	}
}

func run(addr, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if addr == "" {
		a, stop, err := startRedis(ctx)
		if err != nil {
			return err
		}
		defer stop()
		addr = a
	}
	c, err := backend.Dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("connect to redis at %s: %w", addr, err)
	}
	defer c.Close()
	cmds, err := c.DoValue("COMMAND")
	if err != nil {
		return fmt.Errorf("COMMAND: %w", err)
	}
	docs, err := c.DoValue("COMMAND", "DOCS")
	if err != nil {
		return fmt.Errorf("COMMAND DOCS: %w", err)
	}
	info, err := c.DoValue("INFO", "server")
	if err != nil {
		return fmt.Errorf("INFO server: %w", err)
	}
	rows, err := proxy.DescribeCommands(cmds, docs)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := proxy.WriteCommandsMarkdown(&buf, rows, backend.InfoField(info.Str, "redis_version")); err != nil {
		return err
	}
	if out == "" {
		_, err = os.Stdout.Write(buf.Bytes())
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// startRedis runs a throwaway redis-server on a free loopback port.
func startRedis(ctx context.Context) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "commanddoc")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start redis-server (make deps installs it): %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for ctx.Err() == nil {
		if c, err := backend.Dial(ctx, addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("redis-server did not start on %s", addr)
}
