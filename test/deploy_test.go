package test

// The docker-compose deployment (deploy/) cannot run here: no container
// engine. These tests check its shape instead. TestDeployComposeShape
// parses deploy/docker-compose.yml and checks it against the Dockerfile, the
// init script, prometheus.yml and raftproxy's real flags.
// TestDeployTopology runs the same topology as processes, one network
// namespace per node (what the compose file gives each node), started from
// the values parsed from the compose file.

import (
	"bytes"
	"context"
	"fmt"
	"go/version"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/raftproxy/raftproxy/test/netns"
)

// redisImageUID is the uid of the redis user in the official redis images,
// which redis-server runs as; the raftproxy sidecar shares it to use the
// socket and RDB files on the shared volume.
const redisImageUID = "999"

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	// Extension fields (x-...) hold the anchors the services merge.
	Ext map[string]any `yaml:",inline"`
}

type composeService struct {
	Image       string                       `yaml:"image"`
	Build       *composeBuild                `yaml:"build"`
	User        string                       `yaml:"user"`
	Command     []string                     `yaml:"command"`
	Entrypoint  []string                     `yaml:"entrypoint"`
	Environment map[string]string            `yaml:"environment"`
	Volumes     []string                     `yaml:"volumes"`
	Ports       []string                     `yaml:"ports"`
	NetworkMode string                       `yaml:"network_mode"`
	DependsOn   map[string]composeDependency `yaml:"depends_on"`
	Healthcheck *composeHealthcheck          `yaml:"healthcheck"`
	Restart     string                       `yaml:"restart"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeDependency struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type prometheusConfig struct {
	Global        map[string]string `yaml:"global"`
	RuleFiles     []string          `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// deployNode is one node of the compose file: a pause container owning the
// network namespace and the node's host name, a redis and a raftproxy.
type deployNode struct {
	Name         string // the namespace owner's service name: the node's host name
	Proxy, Redis string // service names
	ProxySvc     composeService
	RedisSvc     composeService
	Listen       string // --listen port
	Peer         string // --peer-listen port
	Metrics      string // --metrics-listen port
}

type deployment struct {
	Root       string // repository root
	Compose    composeFile
	Nodes      []deployNode // by name
	Prometheus prometheusConfig
	Dockerfile string
}

func (d *deployment) path(rel ...string) string {
	return filepath.Join(append([]string{d.Root}, rel...)...)
}

func strictYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadDeployment(t *testing.T) *deployment {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{Root: root}
	b, err := os.ReadFile(d.path("deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := strictYAML(b, &d.Compose); err != nil {
		t.Fatalf("deploy/docker-compose.yml (strictly, no unknown keys): %v", err)
	}
	for k := range d.Compose.Ext {
		if !strings.HasPrefix(k, "x-") {
			t.Fatalf("deploy/docker-compose.yml: unknown top-level key %q", k)
		}
	}
	b, err = os.ReadFile(d.path("deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := strictYAML(b, &d.Prometheus); err != nil {
		t.Fatalf("deploy/prometheus/prometheus.yml: %v", err)
	}
	b, err = os.ReadFile(d.path("deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	d.Dockerfile = string(b)

	// Proxies are the services built from the Dockerfile; each node is the
	// service whose network namespace a proxy joins.
	for name, s := range d.Compose.Services {
		if s.Build == nil {
			continue
		}
		owner, ok := strings.CutPrefix(s.NetworkMode, "service:")
		if !ok {
			t.Fatalf("service %s: network_mode %q, want service:<node> (raftproxy loads snapshots into its redis over 127.0.0.1, so they share a namespace)", name, s.NetworkMode)
		}
		n := deployNode{Name: owner, Proxy: name, ProxySvc: s}
		for rname, r := range d.Compose.Services {
			if rname != name && r.NetworkMode == s.NetworkMode {
				if !strings.HasPrefix(r.Image, "redis:") {
					t.Fatalf("service %s shares node %s's namespace but runs %q, not a stock redis image", rname, owner, r.Image)
				}
				if n.Redis != "" {
					t.Fatalf("node %s has two redis services: %s and %s", owner, n.Redis, rname)
				}
				n.Redis, n.RedisSvc = rname, r
			}
		}
		if n.Redis == "" {
			t.Fatalf("proxy %s has no redis in its namespace (network_mode %s)", name, s.NetworkMode)
		}
		n.Listen = portOf(t, name, flagValue(s.Command, "--listen"))
		n.Peer = portOf(t, name, flagValue(s.Command, "--peer-listen"))
		n.Metrics = portOf(t, name, flagValue(s.Command, "--metrics-listen"))
		d.Nodes = append(d.Nodes, n)
	}
	sort.Slice(d.Nodes, func(i, j int) bool { return d.Nodes[i].Name < d.Nodes[j].Name })
	if len(d.Nodes) != 3 {
		t.Fatalf("deploy/docker-compose.yml has %d raftproxy services, want 3", len(d.Nodes))
	}
	return d
}

// flagValue returns the value of a flag in args ("--f v" or "--f=v"), or
// "" when absent.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func portOf(t *testing.T, service, hostport string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("service %s: address %q: %v", service, hostport, err)
	}
	return port
}

// mountOf returns the volume source mounted at the longest mount path
// containing p in a service's volumes, and that mount path.
func mountOf(volumes []string, p string) (source, target string) {
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		if (p == parts[1] || strings.HasPrefix(p, parts[1]+"/")) && len(parts[1]) > len(target) {
			source, target = parts[0], parts[1]
		}
	}
	return source, target
}

// raftproxyFlags returns the flags `raftproxy --help` lists.
func raftproxyFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(raftproxyBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("raftproxy --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags["--"+m[1]] = true
	}
	if !flags["--listen"] {
		t.Fatalf("could not find --listen in raftproxy --help:\n%s", out)
	}
	return flags
}

// dockerfileDirective returns the arguments of every line of the Dockerfile
// starting with instr, continuation lines joined.
func dockerfileDirective(dockerfile, instr string) []string {
	joined := strings.ReplaceAll(dockerfile, "\\\n", " ")
	var out []string
	for _, line := range strings.Split(joined, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), instr+" "); ok {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

func TestDeployComposeShape(t *testing.T) {
	d := loadDeployment(t)
	flags := raftproxyFlags(t)
	deployDir := d.path("deploy")

	t.Run("referenced files exist", func(t *testing.T) {
		for name, s := range d.Compose.Services {
			if s.Build != nil {
				ctxDir := filepath.Join(deployDir, s.Build.Context)
				if _, err := os.Stat(filepath.Join(ctxDir, "go.mod")); err != nil {
					t.Errorf("service %s: build context %s is not the module root: %v", name, s.Build.Context, err)
				}
				if _, err := os.Stat(filepath.Join(ctxDir, s.Build.Dockerfile)); err != nil {
					t.Errorf("service %s: dockerfile: %v", name, err)
				}
			}
			for _, v := range s.Volumes {
				src, _, _ := strings.Cut(v, ":")
				if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
					if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
						t.Errorf("service %s: bind mount %s: %v", name, v, err)
					}
				} else if _, ok := d.Compose.Volumes[src]; !ok {
					t.Errorf("service %s: volume %s is not declared under volumes:", name, src)
				}
			}
		}
		for _, f := range d.Prometheus.RuleFiles {
			// alerts.yml is written on the metrics branch; until it is
			// merged this check fails on the deploy branch alone.
			if _, err := os.Stat(d.path("deploy", "prometheus", f)); err != nil {
				t.Errorf("prometheus.yml rule_files: %v", err)
			}
		}
	})

	// The stack must come back by itself after a crash or a host reboot,
	// on the redis the command table is made for.
	t.Run("restarts and pinned redis", func(t *testing.T) {
		for name, s := range d.Compose.Services {
			switch {
			case name == "init" || name == "peer-secret": // one-shot
				if !strings.HasPrefix(s.Restart, "on-failure:") {
					t.Errorf("service %s: restart %q, want on-failure:N (bounded: a permanent error must stop it)", name, s.Restart)
				}
			case s.Restart != "unless-stopped" && s.Restart != "always":
				t.Errorf("service %s: restart %q, want unless-stopped", name, s.Restart)
			}
			if strings.HasPrefix(s.Image, "redis:") && s.Image != "redis:7.0.15" {
				t.Errorf("service %s: image %s, want redis:7.0.15 (the version the command table is made for)", name, s.Image)
			}
		}
	})

	t.Run("dockerfile", func(t *testing.T) {
		gomod, err := os.ReadFile(d.path("go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
		argLine := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(d.Dockerfile)
		if goLine == nil || argLine == nil {
			t.Fatalf("want a go directive in go.mod and ARG GO_VERSION=... in the Dockerfile")
		}
		// The golang images set GOTOOLCHAIN=local: an older one refuses the module.
		if version.Compare("go"+argLine[1], "go"+string(goLine[1])) < 0 {
			t.Errorf("Dockerfile builds with Go %s, older than go.mod's go %s", argLine[1], goLine[1])
		}
		if !slices.ContainsFunc(dockerfileDirective(d.Dockerfile, "FROM"), func(s string) bool { return strings.HasPrefix(s, "golang:${GO_VERSION} ") }) {
			t.Errorf("no FROM golang:${GO_VERSION} build stage")
		}
		builds := regexp.MustCompile(`CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o (\S+) \./cmd/raftproxy\b`).FindStringSubmatch(d.Dockerfile)
		if builds == nil {
			t.Fatalf("the Dockerfile does not build ./cmd/raftproxy statically (CGO_ENABLED=0 go build -trimpath -ldflags \"-s -w\" -o ... ./cmd/raftproxy)")
		}
		entry := dockerfileDirective(d.Dockerfile, "ENTRYPOINT")
		if len(entry) != 1 {
			t.Fatalf("want one ENTRYPOINT, got %q", entry)
		}
		var entryArgs []string
		if err := yaml.Unmarshal([]byte(entry[0]), &entryArgs); err != nil || len(entryArgs) != 1 {
			t.Fatalf("ENTRYPOINT %s: want the exec form with the binary alone: %v", entry[0], err)
		}
		if !slices.Contains(dockerfileDirective(d.Dockerfile, "COPY"), "--from=build "+builds[1]+" "+entryArgs[0]) {
			t.Errorf("the built %s is not copied to the ENTRYPOINT %s", builds[1], entryArgs[0])
		}
		users := dockerfileDirective(d.Dockerfile, "USER")
		if len(users) == 0 {
			t.Fatal("no USER: the image would run as root")
		}
		if u := users[len(users)-1]; u != redisImageUID+":"+redisImageUID {
			t.Errorf("final USER %s, want %s:%s (the redis image's uid, see the Dockerfile)", u, redisImageUID, redisImageUID)
		}
		exposed := strings.Fields(strings.Join(dockerfileDirective(d.Dockerfile, "EXPOSE"), " "))
		for _, n := range d.Nodes {
			for _, p := range []string{n.Listen, n.Peer, n.Metrics} {
				if !slices.Contains(exposed, p) {
					t.Errorf("%s listens on %s, which the Dockerfile does not EXPOSE (%v)", n.Proxy, p, exposed)
				}
			}
			if hc := n.ProxySvc.Healthcheck; hc == nil || len(hc.Test) < 2 || hc.Test[1] != entryArgs[0] {
				t.Errorf("%s: healthcheck %v does not run the image's binary %s", n.Proxy, hc, entryArgs[0])
			}
			if n.ProxySvc.User != redisImageUID+":"+redisImageUID {
				t.Errorf("%s runs as user %q, want %s:%s like its redis", n.Proxy, n.ProxySvc.User, redisImageUID, redisImageUID)
			}
		}
	})

	t.Run("nodes", func(t *testing.T) {
		published := map[string]string{}
		for _, n := range d.Nodes {
			args := n.ProxySvc.Command
			for _, a := range args {
				if name, _, _ := strings.Cut(a, "="); strings.HasPrefix(a, "-") && !flags[name] {
					t.Errorf("%s: %s is not a raftproxy flag", n.Proxy, name)
				}
			}
			for _, f := range []string{"--listen", "--peer-listen", "--metrics-listen", "--data-dir", "--redis", "--advertise-addr", "--advertise-peer-addr"} {
				if flagValue(args, f) == "" {
					t.Errorf("%s: no %s", n.Proxy, f)
				}
			}
			// Other containers reach the node by its service name.
			for f, port := range map[string]string{"--listen": n.Listen, "--peer-listen": n.Peer, "--metrics-listen": n.Metrics} {
				if v := flagValue(args, f); v != "0.0.0.0:"+port {
					t.Errorf("%s: %s %s, want 0.0.0.0:%s so that other containers reach it", n.Proxy, f, v, port)
				}
			}
			if v := flagValue(args, "--advertise-addr"); v != n.Name+":"+n.Listen {
				t.Errorf("%s: --advertise-addr %s, want %s:%s (the node's service name and --listen port)", n.Proxy, v, n.Name, n.Listen)
			}
			if v := flagValue(args, "--advertise-peer-addr"); v != n.Name+":"+n.Peer {
				t.Errorf("%s: --advertise-peer-addr %s, want %s:%s", n.Proxy, v, n.Name, n.Peer)
			}

			owner := d.Compose.Services[n.Name]
			if !strings.HasPrefix(owner.Image, "registry.k8s.io/pause:") {
				t.Errorf("node %s: the namespace owner runs %q, want the pause image (it must outlive redis and raftproxy restarts)", n.Name, owner.Image)
			}
			for _, p := range owner.Ports {
				// [IP:]HOST:CONTAINER
				host, ctr, _ := strings.Cut(p[strings.LastIndex(p[:strings.LastIndex(p, ":")], ":")+1:], ":")
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("node %s publishes %s on every host interface, want 127.0.0.1 (no authentication by default)", n.Name, p)
				}
				if ctr != n.Listen && ctr != n.Metrics {
					t.Errorf("node %s publishes %s, which is neither the client nor the metrics port", n.Name, p)
				}
				if prev, dup := published[host]; dup {
					t.Errorf("host port %s published by %s and %s", host, prev, n.Name)
				}
				published[host] = n.Name
			}
			if !slices.ContainsFunc(owner.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+n.Listen) }) {
				t.Errorf("node %s does not publish the client port %s: %v", n.Name, n.Listen, owner.Ports)
			}
			for _, s := range []composeService{n.RedisSvc, n.ProxySvc} {
				if len(s.Ports) > 0 {
					t.Errorf("node %s: ports must be published by the namespace owner, not by %v", n.Name, s.Ports)
				}
			}

			// redis: a unix socket only, on the volume the proxy shares, and
			// its dir (where BGSAVE writes) on that volume at the same path,
			// since raftproxy opens the RDB at the path redis reports.
			rc := n.RedisSvc.Command
			if len(rc) == 0 || rc[0] != "redis-server" {
				t.Fatalf("%s: command %v, want redis-server ...", n.Redis, rc)
			}
			sock := flagValue(args, "--redis")
			if v := flagValue(rc, "--unixsocket"); v != sock {
				t.Errorf("%s --unixsocket %s but %s --redis %s", n.Redis, v, n.Proxy, sock)
			}
			for f, want := range map[string]string{"--port": "0", "--unixsocketperm": "700", "--save": "", "--appendonly": "no"} {
				if !slices.Contains(rc, f) || flagValue(rc, f) != want {
					t.Errorf("%s: want %s %q in its command %v", n.Redis, f, want, rc)
				}
			}
			dir := flagValue(rc, "--dir")
			for what, p := range map[string]string{"socket": sock, "dir": dir} {
				rsrc, rtgt := mountOf(n.RedisSvc.Volumes, p)
				psrc, ptgt := mountOf(n.ProxySvc.Volumes, p)
				if rsrc == "" || rsrc != psrc || rtgt != ptgt {
					t.Errorf("node %s: redis %s %s is not on one volume mounted at the same path in %s (%s at %s) and %s (%s at %s)",
						n.Name, what, p, n.Redis, rsrc, rtgt, n.Proxy, psrc, ptgt)
				}
			}
			dataDir := flagValue(args, "--data-dir")
			if src, _ := mountOf(n.ProxySvc.Volumes, dataDir); src == "" {
				t.Errorf("%s: --data-dir %s is not on a volume: the WAL would die with the container", n.Proxy, dataDir)
			} else if shared, _ := mountOf(n.RedisSvc.Volumes, dir); src == shared {
				t.Errorf("%s: --data-dir %s is on %s, the volume redis writes too", n.Proxy, dataDir, src)
			}
			if dep, ok := n.ProxySvc.DependsOn[n.Redis]; !ok || dep.Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy: %v", n.Proxy, n.Redis, n.ProxySvc.DependsOn)
			}
			if hc := n.RedisSvc.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "redis-cli", "-s", sock, "PING"}) {
				t.Errorf("%s: healthcheck %v, want redis-cli -s %s PING", n.Redis, hc, sock)
			}

			hc := n.ProxySvc.Healthcheck
			if hc == nil || len(hc.Test) != 5 || hc.Test[0] != "CMD" || hc.Test[2] != "health" || hc.Test[3] != "--url" {
				t.Fatalf("%s: healthcheck %v, want CMD raftproxy health --url URL", n.Proxy, hc)
			}
			if want := "http://127.0.0.1:" + n.Metrics + "/readyz"; hc.Test[4] != want {
				t.Errorf("%s: healthcheck probes %s, want %s", n.Proxy, hc.Test[4], want)
			}
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		var want, got []string
		for _, n := range d.Nodes {
			want = append(want, n.Name+":"+n.Metrics)
		}
		for _, sc := range d.Prometheus.ScrapeConfigs {
			if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
				t.Errorf("job %s scrapes %s, raftproxy serves /metrics", sc.JobName, sc.MetricsPath)
			}
			for _, st := range sc.StaticConfigs {
				got = append(got, st.Targets...)
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("prometheus targets %v, want every node's --metrics-listen %v", got, want)
		}
		if !slices.Contains(d.Prometheus.RuleFiles, "alerts.yml") {
			t.Errorf("prometheus.yml does not load alerts.yml: rule_files %v", d.Prometheus.RuleFiles)
		}
		p, ok := d.Compose.Services["prometheus"]
		if !ok || !slices.Contains(p.Volumes, "./prometheus:/etc/prometheus:ro") {
			t.Errorf("no prometheus service with ./prometheus mounted at /etc/prometheus (where prometheus.yml is read): %+v", p)
		}
	})

	t.Run("init", func(t *testing.T) {
		s, ok := d.Compose.Services["init"]
		if !ok {
			t.Fatal("no init service")
		}
		if !slices.Equal(s.Entrypoint, []string{"sh", "/init-cluster.sh"}) || !slices.Contains(s.Volumes, "./init-cluster.sh:/init-cluster.sh:ro") {
			t.Errorf("init does not run deploy/init-cluster.sh: entrypoint %v, volumes %v", s.Entrypoint, s.Volumes)
		}
		var want []string
		for _, n := range d.Nodes {
			want = append(want, flagValue(n.ProxySvc.Command, "--advertise-addr"))
			// /readyz needs a cluster, which init forms: waiting for
			// healthy proxies would wait forever.
			if dep, ok := s.DependsOn[n.Proxy]; !ok || dep.Condition != "service_started" {
				t.Errorf("init: depends_on %s is %+v, want condition service_started", n.Proxy, dep)
			}
		}
		if got := strings.Fields(s.Environment["NODES"]); !slices.Equal(got, want) {
			t.Errorf("init NODES=%v, want the nodes' --advertise-addr in order %v", got, want)
		}
		// The script AUTHs with the password the proxies require.
		for _, n := range d.Nodes {
			if got, want := s.Environment["RAFTPROXY_REQUIREPASS"], n.ProxySvc.Environment["RAFTPROXY_REQUIREPASS"]; got != want || want == "" {
				t.Errorf("init RAFTPROXY_REQUIREPASS=%q, %s's %q: want one non-empty setting", got, n.Proxy, want)
			}
		}
	})
}

// topologyMapper maps the compose file's container view to processes on
// this machine: service host names to namespace addresses, volume mount
// paths to per-node directories, the image's binary to the built one.
type topologyMapper struct {
	hosts  map[string]string // node name → IP
	mounts map[string]string // container path → host dir, for one node
	bin    [2]string         // image binary → test binary
}

func (m topologyMapper) arg(a string) string {
	if a == m.bin[0] {
		return m.bin[1]
	}
	var best string
	for p := range m.mounts {
		if (a == p || strings.HasPrefix(a, p+"/")) && len(p) > len(best) {
			best = p
		}
	}
	if best != "" {
		return m.mounts[best] + strings.TrimPrefix(a, best)
	}
	for h, ip := range m.hosts {
		if rest, ok := strings.CutPrefix(a, h+":"); ok {
			return ip + ":" + rest
		}
	}
	return a
}

func (m topologyMapper) args(as []string) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = m.arg(a)
	}
	return out
}

func TestDeployTopology(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("the compose topology runs one network namespace per node, which this machine does not give: %v", err)
	}
	// In the containers redis (after the image's entrypoint drops root) and
	// raftproxy run as uid 999 and own their volumes; so do the processes
	// and directories here, so that the socket mode, the RDB files'
	// permissions and the data dir's are what the compose file gets.
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("running redis and raftproxy as uid %s, as in the compose file, needs setpriv (util-linux): %v", redisImageUID, err)
	}
	d := loadDeployment(t)
	ctx := testContext(t, 60*time.Second)
	topo, err := netns.New(ctx, "rpdepl", len(d.Nodes))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.Close() })
	uid, _ := strconv.Atoi(redisImageUID)
	// The variables compose interpolates, as an operator would set them:
	// the nodes ask a password, which the init script must give.
	const pw = "deploy test password"
	vars := map[string]string{"RAFTPROXY_REQUIREPASS": pw}
	asUID := func(args ...string) []string {
		return append([]string{setpriv, "--reuid", redisImageUID, "--regid", redisImageUID, "--clear-groups", "--pdeathsig", "KILL"}, args...)
	}
	dir, err := os.MkdirTemp("", "raftproxy-itest-TestDeployTopology-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The harness's binary is in a directory only root may enter.
	bin := filepath.Join(dir, "raftproxy")
	if b, err := os.ReadFile(raftproxyBin); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}

	hosts := map[string]string{}
	for i, n := range d.Nodes {
		hosts[n.Name] = topo.NodeIP(i + 1)
	}
	entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindStringSubmatch(d.Dockerfile)
	if entry == nil {
		t.Fatal("no ENTRYPOINT in the Dockerfile")
	}
	var procs []*process
	t.Cleanup(func() {
		for _, p := range procs {
			if p.Exited() && !p.stopping.Load() {
				t.Errorf("%s exited unexpectedly: %v", p.name, p.waitErr)
			}
		}
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Terminate(5 * time.Second); err != nil {
				t.Log(err)
			}
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("---- %s (%s) ----\n%s", p.name, p.logPath, logTail(p.logPath, 40))
			}
			t.Logf("files kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	start := func(i int, name string, env []string, args ...string) *process {
		t.Helper()
		cmd := topo.Command(context.Background(), i+1, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), env...)
		p, err := startCmd(name, filepath.Join(dir, name+".log"), cmd)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		return p
	}
	// inNode runs a command to completion in node i's namespace, as docker
	// runs a healthcheck in the container.
	inNode := func(ctx context.Context, i int, args []string) ([]byte, error) {
		return topo.Command(ctx, i+1, args[0], args[1:]...).CombinedOutput()
	}

	mappers := make([]topologyMapper, len(d.Nodes))
	proxies := make([]*process, len(d.Nodes))
	for i, n := range d.Nodes {
		m := topologyMapper{hosts: hosts, mounts: map[string]string{}, bin: [2]string{entry[1], bin}}
		for _, v := range append(slices.Clone(n.RedisSvc.Volumes), n.ProxySvc.Volumes...) {
			parts := strings.Split(v, ":")
			m.mounts[parts[1]] = filepath.Join(dir, parts[0])
			if err := os.MkdirAll(m.mounts[parts[1]], 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(m.mounts[parts[1]], uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		mappers[i] = m
		// The secret peers authenticate with, made by the one-shot
		// service the proxies wait for (as root, as in its container).
		if gen, ok := d.Compose.Services["peer-secret"]; ok && i == 0 {
			args := m.args(gen.Entrypoint)
			args[1] = d.path("deploy", filepath.Base(args[1]))
			if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("peer-secret %v: %v\n%s", args, err, out)
			}
		}
		start(i, n.Redis, composeEnv(n.RedisSvc, vars), asUID(m.args(n.RedisSvc.Command)...)...)
		redisHealth := m.args(n.RedisSvc.Healthcheck.Test[1:])
		err := waitFor(ctx, 10*time.Second, 50*time.Millisecond, n.Redis+" healthcheck", func(ctx context.Context) error {
			out, err := inNode(ctx, i, redisHealth)
			if err != nil || strings.TrimSpace(string(out)) != "PONG" {
				return fmt.Errorf("%v: %v: %s", redisHealth, err, out)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		proxies[i] = start(i, n.Proxy, composeEnv(n.ProxySvc, vars), asUID(append([]string{bin}, m.args(n.ProxySvc.Command)...)...)...)
	}
	addr := func(i int) string { return mappers[i].arg(flagValue(d.Nodes[i].ProxySvc.Command, "--advertise-addr")) }
	for i := range d.Nodes {
		if err := waitFor(ctx, 10*time.Second, 50*time.Millisecond, d.Nodes[i].Proxy+" answering PING", func(context.Context) error {
			if v, err := dialDo(addr(i), pw, "PING"); err != nil || v.Str != "PONG" {
				return fmt.Errorf("PING: %s %v", v, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	health := func(ctx context.Context, i int) error {
		args := asUID(mappers[i].args(d.Nodes[i].ProxySvc.Healthcheck.Test[1:])...)
		if out, err := inNode(ctx, i, args); err != nil {
			return fmt.Errorf("%v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := health(ctx, 0); err == nil {
		t.Fatalf("%s healthy before the cluster was formed", d.Nodes[0].Proxy)
	}

	initSvc := d.Compose.Services["init"]
	var nodes []string
	for _, a := range strings.Fields(initSvc.Environment["NODES"]) {
		nodes = append(nodes, mappers[0].arg(a))
	}
	runInit := func(nodes []string) string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "sh", d.path("deploy", "init-cluster.sh"))
		cmd.Env = append(os.Environ(), composeEnv(initSvc, vars)...)
		cmd.Env = append(cmd.Env, "NODES="+strings.Join(nodes, " "), "WAIT_SECONDS=10")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("init-cluster.sh NODES=%q: %v\n%s", nodes, err, out)
		}
		return string(out)
	}
	// Three runs cover the script's three cases: no cluster yet (run on all
	// but the last node, as compose's run is on all), a cluster that one
	// node is not in (compose's NODES, as after a node lost its volume), and
	// everyone in it (compose's NODES again: nothing may change).
	last := len(nodes) - 1
	first := runInit(nodes[:last])
	m := regexp.MustCompile(`initialized cluster ([0-9a-f]+) on ` + regexp.QuoteMeta(nodes[0])).FindStringSubmatch(first)
	if m == nil || strings.Count(first, "joined cluster "+m[1]) != last-1 {
		t.Fatalf("init-cluster.sh on a fresh %q did not init %s and join the others:\n%s", nodes[:last], nodes[0], first)
	}
	if second := runInit(nodes); strings.TrimSpace(second) != "init-cluster: "+nodes[last]+" joined cluster "+m[1] {
		t.Fatalf("init-cluster.sh with %s not in the cluster did not just join it:\n%s", nodes[last], second)
	}
	if third := runInit(nodes); strings.TrimSpace(third) != "init-cluster: all nodes are in cluster "+m[1]+"; nothing to do" {
		t.Fatalf("init-cluster.sh on a formed cluster was not a no-op:\n%s", third)
	}
	for i, n := range d.Nodes {
		v, err := dialDo(addr(i), pw, "RAFT.INFO")
		if err != nil {
			t.Fatal(err)
		}
		info, err := parseRaftInfo(v.Str)
		if err != nil {
			t.Fatal(err)
		}
		if info.Get("cluster_id") != m[1] || info.Int("num_nodes") != int64(len(d.Nodes)) {
			t.Errorf("%s: cluster_id %s num_nodes %d, want %s and %d", n.Proxy, info.Get("cluster_id"), info.Int("num_nodes"), m[1], len(d.Nodes))
		}
	}

	t.Run("write on the first node, read on the last", func(t *testing.T) {
		if v, err := dialDo(addr(0), pw, "SET", "deploy", "v1"); err != nil || v.Str != "OK" {
			t.Fatalf("SET on %s: %v %v", addr(0), v, err)
		}
		if v, err := dialDo(addr(last), pw, "GET", "deploy"); err != nil || v.Str != "v1" {
			t.Fatalf("GET on %s: %v %v, want v1", addr(last), v, err)
		}
		// RAFTPROXY_REQUIREPASS reached the proxies.
		if v, err := dialDo(addr(last), "", "GET", "deploy"); err != nil || v.Kind != '-' || !strings.HasPrefix(v.Str, "NOAUTH") {
			t.Fatalf("GET on %s without the password: %v %v, want NOAUTH", addr(last), v, err)
		}
	})

	t.Run("healthchecks pass", func(t *testing.T) {
		for i := range d.Nodes {
			if err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, d.Nodes[i].Proxy+" healthcheck", func(ctx context.Context) error { return health(ctx, i) }); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("prometheus targets serve metrics", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second}
		for _, sc := range d.Prometheus.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					u := url.URL{Scheme: "http", Host: mappers[0].arg(target), Path: "/metrics"}
					resp, err := client.Get(u.String())
					if err != nil {
						t.Errorf("scraping %s (%s): %v", target, u.String(), err)
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("\nraftproxy_")) {
						t.Errorf("scraping %s (%s): %s, %d bytes without raftproxy_ series", target, u.String(), resp.Status, len(body))
					}
				}
			}
		}
	})

	// A snapshot is an RDB that redis writes in its dir and raftproxy reads
	// there (the shared volume); a restart loads it back into redis with
	// raftproxy posing as its master on 127.0.0.1 (the shared namespace).
	t.Run("snapshot through the shared volume and namespace", func(t *testing.T) {
		if v, err := dialDo(addr(last), pw, "RAFT.DEBUG", "COMPACT"); err != nil || v.Str != "OK" {
			t.Fatalf("RAFT.DEBUG COMPACT on %s: %v %v", addr(last), v, err)
		}
		if err := proxies[last].Terminate(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		// Redis keeps its data across the proxy restart; empty it so the
		// value can only come back from the snapshot (or the log after it).
		sock := mappers[last].arg(flagValue(d.Nodes[last].ProxySvc.Command, "--redis"))
		if out, err := exec.CommandContext(ctx, "redis-cli", "-s", sock, "FLUSHALL").CombinedOutput(); err != nil {
			t.Fatalf("FLUSHALL on %s: %v: %s", sock, err, out)
		}
		n := d.Nodes[last]
		proxies[last] = start(last, n.Proxy+"-restarted", composeEnv(n.ProxySvc, vars), asUID(append([]string{bin}, mappers[last].args(n.ProxySvc.Command)...)...)...)
		err := waitFor(ctx, 15*time.Second, 100*time.Millisecond, n.Proxy+" serving the snapshot after a restart", func(context.Context) error {
			v, err := dialDo(addr(last), pw, "GET", "deploy")
			if err != nil || v.Str != "v1" {
				return fmt.Errorf("GET deploy: %v %v", v, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		logb, _ := os.ReadFile(proxies[last].logPath)
		if !bytes.Contains(logb, []byte("loaded a snapshot into the local redis")) {
			t.Errorf("%s did not load its snapshot into redis at start; log:\n%s", n.Proxy, logTail(proxies[last].logPath, 30))
		}
	})
}

// dialDo sends one command on a fresh connection.
// composeEnv is the environment compose gives svc's process: its
// environment values with ${NAME} and ${NAME:-default} taken from vars.
func composeEnv(svc composeService, vars map[string]string) []string {
	re := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)
	var env []string
	for k, v := range svc.Environment {
		v = re.ReplaceAllStringFunc(v, func(ref string) string {
			m := re.FindStringSubmatch(ref)
			if x := vars[m[1]]; x != "" {
				return x
			}
			return m[2]
		})
		env = append(env, k+"="+v)
	}
	return env
}

func dialDo(addr, password string, args ...string) (respValue, error) {
	c, err := dialRaw(addr, 10*time.Second)
	if err != nil {
		return respValue{}, err
	}
	defer c.Close()
	if password != "" {
		if v, err := c.Do("AUTH", password); err != nil || v.Str != "OK" {
			return v, fmt.Errorf("%s: AUTH: %s %v", addr, v, err)
		}
	}
	v, err := c.Do(args...)
	if err != nil {
		return v, fmt.Errorf("%s %q: %w", addr, args, err)
	}
	return v, nil
}
