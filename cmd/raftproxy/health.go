package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthMain is `raftproxy health`: a container healthcheck. Minimal images
// (distroless) have no curl or wget, so the binary that serves /readyz also
// probes it. It returns the process exit code: 0 when the URL answers 200,
// 1 when it answers anything else or cannot be reached, 2 for bad flags.
func healthMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("raftproxy health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "health endpoint to probe, e.g. http://127.0.0.1:2381/readyz (required)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: raftproxy health --url URL [--timeout 2s]\n\nExits 0 when URL answers 200 OK, 1 otherwise (the reply body goes to stderr).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *url == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "raftproxy health: want --url URL and no other arguments (see --help)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := probe(ctx, *url); err != nil {
		fmt.Fprintln(stderr, "raftproxy health:", err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad --url %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
