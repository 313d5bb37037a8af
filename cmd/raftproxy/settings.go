package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
)

// settings are what RAFT.CONFIG GET/SET reads and changes at run time.
func settings(dataDir string, followerProxy *atomic.Bool, movePause *atomic.Uint64, host *raftnode.Host, lv *slog.LevelVar) *proxy.Settings {
	uintSetting := func(name string, v *atomic.Uint64, scale uint64) proxy.Setting {
		return proxy.Setting{
			Name: name,
			Get:  func() string { return strconv.FormatUint(v.Load()/scale, 10) },
			Set: func(s string) error {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil || n == 0 {
					return fmt.Errorf("want a positive integer")
				}
				v.Store(n * scale)
				return nil
			},
		}
	}
	tu := host.Tunables()
	return proxy.NewSettings(proxy.SettingsFile(dataDir), []proxy.Setting{
		{
			Name: "follower-proxy",
			Get:  func() string { return map[bool]string{true: "yes", false: "no"}[followerProxy.Load()] },
			Set: func(s string) error {
				switch strings.ToLower(s) {
				case "yes", "true":
					followerProxy.Store(true)
				case "no", "false":
					followerProxy.Store(false)
				default:
					return fmt.Errorf("want yes or no")
				}
				return nil
			},
		},
		{
			Name: "log-level",
			Get:  func() string { return strings.ToLower(lv.Level().String()) },
			Set:  func(s string) error { return lv.UnmarshalText([]byte(s)) },
		},
		{
			Name: "request-timeout",
			Get:  func() string { return tu.Timeout().String() },
			Set: func(s string) error {
				d, err := time.ParseDuration(s)
				if err != nil || d < 100*time.Millisecond {
					return fmt.Errorf("want a duration of at least 100ms, such as 5s")
				}
				tu.RequestTimeout.Store(int64(d))
				return nil
			},
		},
		{
			Name: "move-pause",
			Get:  func() string { return strconv.FormatUint(movePause.Load(), 10) },
			Set: func(s string) error {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil || n > 10000 {
					return fmt.Errorf("want a percentage from 0 to 10000")
				}
				movePause.Store(n)
				return nil
			},
		},
		uintSetting("snapshot-entries", &tu.SnapshotEntries, 1),
		uintSetting("snapshot-mib", &tu.SnapshotBytes, 1<<20),
	})
}

// settingsMain is `raftproxy settings --data-dir DIR [--reset]`: it shows
// the values RAFT.CONFIG SET saved in a node's data dir, which win over
// the command line at start, and with --reset forgets them all. It works
// on a stopped node, in an image with no shell to delete the file.
func settingsMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("raftproxy settings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "the node's data directory (required)")
	reset := fs.Bool("reset", false, "forget every saved setting: the command line's values apply at the next start")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: raftproxy settings --data-dir DIR [--reset]")
		return 2
	}
	file := proxy.SettingsFile(*dataDir)
	saved, err := proxy.ReadSavedSettings(file)
	if err != nil {
		fmt.Fprintln(stderr, "raftproxy settings:", err)
		return 1
	}
	if len(saved) == 0 {
		fmt.Fprintf(stdout, "no saved settings in %s: the command line's values apply\n", *dataDir)
		return 0
	}
	names := slices.Sorted(maps.Keys(saved))
	for _, n := range names {
		fmt.Fprintf(stdout, "%s = %s\n", n, saved[n])
	}
	if !*reset {
		fmt.Fprintf(stdout, "(saved in %s; they override the command line at start; --reset forgets them)\n", file)
		return 0
	}
	if err := os.Remove(file); err != nil {
		fmt.Fprintln(stderr, "raftproxy settings:", err)
		return 1
	}
	fmt.Fprintf(stdout, "forgotten: the command line's values apply at the next start\n")
	return 0
}
