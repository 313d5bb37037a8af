package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func runForward(args []string, stderr io.Writer) error {
	var listen, to string
	fs := newFlagSet("forward", "-listen HOST:PORT -to HOST:PORT", stderr)
	fs.StringVar(&listen, "listen", "", "address to accept connections on, `HOST:PORT` (required)")
	fs.StringVar(&to, "to", "", "address to forward each connection to, `HOST:PORT` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if listen == "" || to == "" {
		return usagef("-listen and -to are required")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	fmt.Fprintf(stderr, "raftbench forward: %s -> %s (until SIGINT/SIGTERM)\n", ln.Addr(), to)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off, keep serving.
			fmt.Fprintf(stderr, "raftbench forward: accept: %v\n", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go forwardConn(c.(*net.TCPConn), to, stderr)
	}
}

// forwardConn copies between the client c and a new connection to addr
// in both directions and closes both when either side ends.
func forwardConn(c *net.TCPConn, addr string, stderr io.Writer) {
	defer c.Close()
	if err := c.SetNoDelay(true); err != nil {
		return
	}
	t, err := dial(addr)
	if err != nil {
		fmt.Fprintf(stderr, "raftbench forward: %v\n", err)
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(t, c) // splice(2) between two TCPConns on Linux
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, t) // splice(2) between two TCPConns on Linux
		done <- struct{}{}
	}()
	<-done
	c.Close()
	t.Close()
	<-done
}
