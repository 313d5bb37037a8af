package observe

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
)

const (
	dashboardFile = "../deploy/grafana/raftproxy.json"
	alertsFile    = "../deploy/prometheus/alerts.yml"
)

// metricRef finds the metric names a PromQL expression uses: raftproxy's
// and etcd's series are all named with these prefixes.
var metricRef = regexp.MustCompile(`\b(?:raftproxy|etcd|go|process)_[a-zA-Z0-9_]+\b`)

// checkNames reports each metric name in expr that /metrics does not
// export; a histogram's _bucket, _sum and _count series count as its own.
func checkNames(t *testing.T, where, expr string, names map[string]bool) int {
	t.Helper()
	refs := metricRef.FindAllString(expr, -1)
	for _, ref := range refs {
		base := ref
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(ref, suffix); ok && names[b] {
				base = b
			}
		}
		if !names[base] {
			t.Errorf("%s: %s is not exported by /metrics (expr %q)", where, ref, expr)
		}
	}
	return len(refs)
}

type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Schema     int    `json:"schemaVersion"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos *struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboard checks the Grafana dashboard is a dashboard: panels with
// ids, positions and queries, variables defined before use, and only
// metric names /metrics exports.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || d.Schema == 0 || len(d.Panels) == 0 {
		t.Fatalf("%s: title %q uid %q schemaVersion %d, %d panels: not a dashboard", dashboardFile, d.Title, d.UID, d.Schema, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	names := exportedNames(t)
	ids := map[int]bool{}
	used := map[string]bool{}
	refs := 0
	for _, p := range d.Panels {
		where := dashboardFile + ": panel " + p.Title
		if p.ID == 0 || ids[p.ID] || p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("%s: id %d (duplicate: %v), title %q, gridPos %v", where, p.ID, ids[p.ID], p.Title, p.GridPos)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" || tg.Expr == "" {
				t.Errorf("%s: target %+v lacks refId or expr", where, tg)
			}
			refs += checkNames(t, where, tg.Expr, names)
			for _, m := range metricRef.FindAllString(tg.Expr, -1) {
				used[m] = true
			}
			for _, v := range regexp.MustCompile(`\$(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
					t.Errorf("%s: uses $%s, which the dashboard does not define", where, v[1])
				}
			}
		}
	}
	if refs == 0 {
		t.Fatalf("%s: no metric names found in any query", dashboardFile)
	}
	// What the issue asks the dashboard to show.
	for _, m := range []string{"raftproxy_has_leader", "raftproxy_is_leader", "raftproxy_leader_changes_seen_total",
		"raftproxy_proposals_committed_total", "raftproxy_proposals_failed_total", "raftproxy_proposal_duration_seconds_bucket",
		"raftproxy_read_index_duration_seconds_bucket", "raftproxy_wal_fsync_duration_seconds_bucket", "raftproxy_commit_index",
		"raftproxy_applied_index", "raftproxy_snapshot_make_duration_seconds_bucket", "raftproxy_snapshot_bytes",
		"raftproxy_peer_sent_bytes_total", "raftproxy_peer_round_trip_seconds_bucket", "raftproxy_client_connections",
		"raftproxy_client_commands_total", "raftproxy_redis_up"} {
		if !used[m] {
			t.Errorf("%s: no panel shows %s", dashboardFile, m)
		}
	}
}

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlerts checks the Prometheus rules file: every rule is an alert with
// an expression over exported metrics, a severity and a description; and,
// when promtool is installed, that Prometheus itself accepts the file and
// prometheus.yml, and that the alerts fire as alerts_test.yml expects.
func TestAlerts(t *testing.T) {
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	names := exportedNames(t)
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("%s: group %q has no name or no rules", alertsFile, g.Name)
		}
		for _, r := range g.Rules {
			where := alertsFile + ": alert " + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: rule without alert name or expr: %+v", alertsFile, r)
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", where, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs summary and description annotations", where)
			}
			// up is Prometheus's own: the one series a dead member leaves.
			if checkNames(t, where, r.Expr, names) == 0 && !strings.Contains(r.Expr, "up{") {
				t.Errorf("%s: expr %q uses no raftproxy metric", where, r.Expr)
			}
		}
	}
	// The conditions the issue asks alerts for.
	for _, a := range []string{"RaftproxyNoLeader", "RaftproxyHighNumberOfLeaderChanges", "RaftproxyHighFsyncDurations",
		"RaftproxyApplyLag", "RaftproxySnapshotFailures", "RaftproxyRedisDown", "RaftproxyHighNumberOfFailedProposals",
		"RaftproxyMembersDown", "RaftproxyInsufficientMembers", "RaftproxyMemberCommunicationSlow", "RaftproxyClientErrors",
		"RaftproxyClientLatency", "RaftproxyRedisHeldByScript", "RaftproxyApplyHalted", "RaftproxyPeerRefusals"} {
		if !alerts[a] {
			t.Errorf("%s: no alert %s", alertsFile, a)
		}
	}
	// Every alert has a case in alerts_test.yml that makes it fire.
	tests, err := os.ReadFile(filepath.Join(filepath.Dir(alertsFile), "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for a := range alerts {
		if !regexp.MustCompile(`alertname: ` + a + `\s*\n\s*exp_alerts:\s*\n\s*- exp_labels`).Match(tests) {
			t.Errorf("alerts_test.yml: no case in which %s fires", a)
		}
	}
	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed (Debian package prometheus): Prometheus's own check of the rules file skipped")
		}
		for _, args := range [][]string{
			{"check", "rules", alertsFile},
			{"check", "config", filepath.Join(filepath.Dir(alertsFile), "prometheus.yml")},
			// alerts_test.yml feeds series and checks which alerts fire.
			{"test", "rules", filepath.Join(filepath.Dir(alertsFile), "alerts_test.yml")},
		} {
			if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
}

// TestAlertTestsUseRealBuckets: alerts_test.yml feeds histogram buckets
// with the boundaries the exporter emits. A quantile computed from made-up
// boundaries (le="0.5" where the exporter has 0.512) tests nothing real.
func TestAlertTestsUseRealBuckets(t *testing.T) {
	h := Handler(raftnode.NewHost(raftnode.Config{DataDir: t.TempDir()}), false, proxy.NewMetrics(func() int { return 0 }).Collectors()...)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	bounds := map[string]map[string]bool{}
	bucket := regexp.MustCompile(`^(\w+)_bucket\{.*le="([^"]+)"`)
	add := func(name, le string) {
		if bounds[name] == nil {
			bounds[name] = map[string]bool{}
		}
		bounds[name][le] = true
	}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if m := bucket.FindStringSubmatch(line); m != nil {
			add(m[1], m[2])
		}
	}
	// rafthttp's round-trip histogram exists once peers do: its buckets
	// are etcd's (rafthttp/metrics.go: 0.1 ms doubling, 16 buckets).
	for _, b := range prometheus.ExponentialBuckets(0.0001, 2, 16) {
		add("raftproxy_peer_round_trip_seconds", strconv.FormatFloat(b, 'g', -1, 64))
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(alertsFile), "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	fed := regexp.MustCompile(`series: '(\w+)_bucket\{[^}]*le="([^"]+)"`)
	n := 0
	for _, m := range fed.FindAllStringSubmatch(string(b), -1) {
		n++
		if m[2] == "+Inf" {
			continue
		}
		if bounds[m[1]] == nil {
			t.Errorf("alerts_test.yml feeds %s_bucket, which /metrics does not export", m[1])
		} else if !bounds[m[1]][m[2]] {
			t.Errorf("alerts_test.yml feeds %s_bucket{le=%q}: not one of the exporter's boundaries", m[1], m[2])
		}
	}
	if n == 0 {
		t.Fatal("alerts_test.yml feeds no histogram buckets")
	}
}
