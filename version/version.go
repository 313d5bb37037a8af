// Package version names this build of raftproxy: its release, the commit
// it was built from, the Go release that built it and the log entry format
// it writes.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/raftproxy/raftproxy/entry"
)

// Release is raftproxy's version; a build from a commit after it carries
// that commit too (Info.Commit).
const Release = "0.9.0-dev"

// commit is the revision the Makefile stamps with the linker (-X), for
// builds that record no VCS revision themselves (GOFLAGS=-buildvcs=false,
// a source tree without .git). It is set at link time only.
var commit string

// Info is what a build says about itself.
type Info struct {
	Release string
	// Commit is the VCS revision the binary was built from, "unknown" when
	// the build did not record one (built outside a git checkout); Modified
	// says the checkout had uncommitted changes.
	Commit   string
	Modified bool
	Go       string
	// EntryFormat is the log entry format this build writes; it decodes
	// every format up to it.
	EntryFormat int
}

// Get returns this build's Info.
func Get() Info {
	i := Info{Release: Release, Commit: "unknown", Go: runtime.Version(), EntryFormat: entry.Version}
	if commit != "" {
		i.Commit = commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	return i
}

// CommitShort is the commit's first 12 characters, with "+dirty" for a
// modified checkout.
func (i Info) CommitShort() string {
	c := i.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if i.Modified {
		c += "+dirty"
	}
	return c
}

// String is the one-line form (`raftproxy --version`, logs).
func (i Info) String() string {
	return fmt.Sprintf("raftproxy %s (commit %s, %s, log entry format %d)", i.Release, i.CommitShort(), i.Go, i.EntryFormat)
}
