// Package layers checks that imports follow the data: client → proxy →
// raftnode → apply → backend → redis, with no package importing upward.
package layers

import (
	"go/build"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/raftproxy/raftproxy/"

// forbidden lists, for a package, the packages none of its dependencies
// (direct or not) may be.
var forbidden = map[string][]string{
	"raftnode": {"proxy", "apply", "backend", "pubsub", "observe"},
	"apply":    {"proxy", "raftnode", "backend", "observe"},
	"backend":  {"proxy", "raftnode", "apply", "pubsub", "observe"},
	"pubsub":   {"proxy", "raftnode", "apply", "backend"},
	"fsm":      {"proxy", "raftnode", "apply", "backend", "pubsub", "resp"},
	"entry":    {"proxy", "raftnode", "apply", "backend", "pubsub", "fsm"},
	"resp":     {"proxy", "raftnode", "apply", "backend", "pubsub", "fsm", "entry"},
	"observe":  {"proxy", "apply", "backend"},
}

func root(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// deps returns the module's packages that pkg imports, directly or not
// (tests excluded).
func deps(t *testing.T, dir, pkg string, seen map[string]bool) {
	p, err := build.Import(module+pkg, dir, 0)
	if err != nil {
		t.Fatalf("%s: %v", pkg, err)
	}
	for _, imp := range p.Imports {
		if !strings.HasPrefix(imp, module) {
			continue
		}
		name := strings.TrimPrefix(imp, module)
		if !seen[name] {
			seen[name] = true
			deps(t, dir, name, seen)
		}
	}
}

func TestImportsFollowTheData(t *testing.T) {
	dir := root(t)
	for pkg, bad := range forbidden {
		seen := map[string]bool{}
		deps(t, dir, pkg, seen)
		for d := range seen {
			if slices.Contains(bad, d) {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
}
