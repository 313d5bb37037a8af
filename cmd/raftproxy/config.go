package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Every flag can also come from the environment and from a config file.
// The code below works over whatever flags the FlagSet holds, so a flag
// added to parseFlags gets both without further code.

const (
	envPrefix  = "RAFTPROXY_"
	configFlag = "config"
)

const configHelp = `
Every flag can also be set by the environment variable RAFTPROXY_<FLAG>
(upper case, '-' as '_': --peer-listen is RAFTPROXY_PEER_LISTEN) or in the
config file given by --config FILE (or RAFTPROXY_CONFIG), one "name = value"
(or "name: value") per line, names as the flags', '#' starts a comment line,
a value may be double-quoted. Precedence: command-line flag, then
environment, then config file, then the default. An unknown name in the
file is an error; an unknown RAFTPROXY_* variable is a warning.
`

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// sources records where each flag's value came from, for error messages;
// a flag not in it has its default.
type sources map[string]string

func (s sources) of(name string) string {
	if src, ok := s[name]; ok {
		return src
	}
	return "default of --" + name
}

// loadConfig parses args on fs, then sets each flag the command line did
// not set from the environment or, failing that, the config file. environ
// is os.Environ()'s form; readFile reads the config file. Warnings (unknown
// RAFTPROXY_* variables) are returned, not printed, so tests can see them.
func loadConfig(fs *flag.FlagSet, args, environ []string, readFile func(string) ([]byte, error)) (sources, []string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	src := sources{}
	fs.Visit(func(f *flag.Flag) { src[f.Name] = "flag --" + f.Name })

	env := map[string]string{}
	var warnings []string
	known := map[string]string{} // env var → flag name
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = f.Name })
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, envPrefix) {
			continue
		}
		if _, ok := known[k]; !ok {
			warnings = append(warnings, fmt.Sprintf("ignoring environment variable %s: raftproxy has no flag --%s", k,
				strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, envPrefix), "_", "-"))))
			continue
		}
		env[k] = v
	}

	// The file comes first and the environment overwrites it, each only
	// where the command line said nothing: that is the precedence.
	file, fileSrc := "", ""
	if f := fs.Lookup(configFlag); f != nil {
		file, fileSrc = f.Value.String(), src.of(configFlag)
		if _, set := src[configFlag]; !set {
			if v, ok := env[envName(configFlag)]; ok {
				file, fileSrc = v, "environment variable "+envName(configFlag)
			}
		}
	}
	if file != "" {
		data, err := readFile(file)
		if err != nil {
			return nil, warnings, fmt.Errorf("%s: read config file: %w", fileSrc, err)
		}
		if err := applyFile(fs, file, data, src); err != nil {
			return nil, warnings, err
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		k := envName(f.Name)
		v, ok := env[k]
		if !ok || f.Name == configFlag || err != nil || strings.HasPrefix(src[f.Name], "flag ") {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment variable %s: invalid value %q: %w", k, v, e)
			return
		}
		src[f.Name] = "environment variable " + k
	})
	return src, warnings, err
}

// applyFile sets, from a config file's lines, the flags the command line
// did not set. It is strict: a line it cannot read, an unknown or repeated
// name, or a value the flag refuses is an error naming file:line.
func applyFile(fs *flag.FlagSet, name string, data []byte, src sources) error {
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		where := fmt.Sprintf("%s:%d", name, line)
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		i := strings.IndexAny(text, "=:")
		if i < 0 {
			return fmt.Errorf("%s: want \"name = value\", got %q", where, text)
		}
		key, val := strings.TrimSpace(text[:i]), strings.TrimSpace(text[i+1:])
		if strings.HasPrefix(val, `"`) {
			uq, err := strconv.Unquote(val)
			if err != nil {
				return fmt.Errorf("%s: bad quoted value %s: %w", where, val, err)
			}
			val = uq
		}
		f := fs.Lookup(key)
		if f == nil || key == configFlag {
			return fmt.Errorf("%s: unknown setting %q (names are the flags', without --; see --help)", where, key)
		}
		if prev, dup := seen[key]; dup {
			return fmt.Errorf("%s: %q is already set on line %d", where, key, prev)
		}
		seen[key] = line
		if strings.HasPrefix(src[key], "flag ") {
			continue // the command line wins; its value is the one used
		}
		if err := fs.Set(key, val); err != nil {
			return fmt.Errorf("%s: invalid value %q for %s: %w", where, val, key, err)
		}
		src[key] = where
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read config file %s: %w", name, err)
	}
	return nil
}

// checkAddr validates a HOST:PORT flag (empty allowed when optional).
func checkAddr(src sources, name, v string, optional bool) error {
	if v == "" {
		if optional {
			return nil
		}
		return fmt.Errorf("missing required --%s (or %s, or %q in the config file)", name, envName(name), name)
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s: invalid address %q: want HOST:PORT: %w", src.of(name), v, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%s: invalid port %q in %q: want 1-65535", src.of(name), port, v)
	}
	return nil
}

// readSecret returns the secret given directly or in a file (so it does not
// show in ps); giving both is an error. A file's trailing newline is not
// part of the secret.
func readSecret(src sources, name, direct, file string) (string, error) {
	if file == "" {
		return direct, nil
	}
	if direct != "" {
		return "", fmt.Errorf("%s and %s: give --%s or --%s-file, not both", src.of(name), src.of(name+"-file"), name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", src.of(name+"-file"), err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: file %s is empty", src.of(name+"-file"), file)
	}
	return s, nil
}

// byteSize is a flag of a number of bytes, with redis's units: 100, 64kb,
// 32mb, 1gb (k, m, g are powers of 1000; kb, mb, gb of 1024).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Get() any { return int64(*b) }

func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func parseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mul := int64(1)
	for _, u := range []struct {
		suffix string
		mul    int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1e9}, {"m", 1e6}, {"k", 1e3}, {"b", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mul = strings.TrimSuffix(t, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("want a number of bytes such as 1048576, 64kb or 32mb")
	}
	return n * mul, nil
}
