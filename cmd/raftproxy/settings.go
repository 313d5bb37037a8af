package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
)

// settings are what RAFT.CONFIG GET/SET reads and changes at run time.
func settings(dataDir string, followerProxy *atomic.Bool, host *raftnode.Host, lv *slog.LevelVar) *proxy.Settings {
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
		uintSetting("snapshot-entries", &tu.SnapshotEntries, 1),
		uintSetting("snapshot-mib", &tu.SnapshotBytes, 1<<20),
	})
}
