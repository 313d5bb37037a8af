package observe

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/version"
)

func TestEndpoints(t *testing.T) {
	h := Handler(raftnode.NewHost(raftnode.Config{DataDir: t.TempDir()}), false)
	tests := []struct {
		path string
		code int
		want []string
	}{
		// The Go and process series come from the default registry once:
		// registering them twice makes every scrape fail.
		{"/metrics", 200, []string{"raftproxy_has_leader 0", "go_goroutines ", "process_cpu_seconds_total ",
			`raftproxy_build_info{commit="`, `entry_format="` + strconv.Itoa(entry.Version) + `"`, `version="` + version.Release + `"} 1`}},
		{"/livez", 200, []string{"ok"}},
		{"/readyz", 503, []string{"[failed] cluster"}},
		{"/readyz?verbose", 503, []string{"[failed] cluster"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.code {
				t.Fatalf("GET %s: status %d, want %d; body:\n%s", tt.path, rec.Code, tt.code, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("GET %s: body lacks %q:\n%.2000s", tt.path, w, body)
				}
			}
		})
	}
}

// issueMetrics are the raftproxy_ series the operations issue asks for.
var issueMetrics = []string{
	"raftproxy_has_leader", "raftproxy_is_leader", "raftproxy_is_learner", "raftproxy_leader_changes_seen_total",
	"raftproxy_term", "raftproxy_commit_index", "raftproxy_applied_index",
	"raftproxy_proposals_committed_total", "raftproxy_proposals_applied_total", "raftproxy_proposals_pending_total", "raftproxy_proposals_failed_total",
	"raftproxy_proposal_duration_seconds", "raftproxy_read_index_duration_seconds", "raftproxy_wal_fsync_duration_seconds",
	"raftproxy_snapshot_make_duration_seconds", "raftproxy_snapshot_send_duration_seconds", "raftproxy_snapshot_receive_duration_seconds",
	"raftproxy_snapshot_load_duration_seconds", "raftproxy_snapshot_bytes", "raftproxy_snapshot_transfer_bytes_total",
	"raftproxy_peer_sent_bytes_total", "raftproxy_peer_received_bytes_total", "raftproxy_peer_round_trip_seconds",
	"raftproxy_client_connections", "raftproxy_client_commands_total", "raftproxy_client_command_duration_seconds",
	"raftproxy_redis_apply_duration_seconds", "raftproxy_redis_up", "raftproxy_clock_offset_seconds",
	"raftproxy_script_busy", "raftproxy_scripts_killed_total", "raftproxy_kill_rebuilds_total",
	"raftproxy_redis_rebuilds_total", "raftproxy_expired_keys_total", "raftproxy_disk_full", "raftproxy_disk_free_bytes",
	"raftproxy_build_info", "raftproxy_apply_halted", "raftproxy_voting_members", "raftproxy_voting_members_unreachable",
}

// exportedNames are the metric names /metrics can export: what a scrape of
// a fresh process shows, plus the rafthttp series renamed once peers exist.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	h := Handler(raftnode.NewHost(raftnode.Config{DataDir: t.TempDir()}), false, proxy.NewMetrics(func() int { return 0 }).Collectors()...)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: status %d: %s", rec.Code, rec.Body)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names[strings.Fields(name)[0]] = true
		}
	}
	for _, to := range etcdRenames() {
		names[to] = true
	}
	for _, n := range ShardSeriesNames() {
		names[n] = true
	}
	return names
}

func TestIssueMetricsExported(t *testing.T) {
	names := exportedNames(t)
	for _, m := range issueMetrics {
		if !names[m] {
			t.Errorf("/metrics does not export %s", m)
		}
	}
	// The etcd packages' own series stay exported.
	if !names["etcd_disk_wal_fsync_duration_seconds"] {
		t.Errorf("/metrics lacks etcd_disk_wal_fsync_duration_seconds")
	}
}

// TestEtcdRenamed feeds the renaming collector series shaped like
// rafthttp's and checks they come out under raftproxy_ names with their
// labels and values.
func TestEtcdRenamed(t *testing.T) {
	src := prometheus.NewRegistry()
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_network_peer_sent_bytes_total", Help: "sent"}, []string{"To"})
	rtt := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "etcd_network_peer_round_trip_time_seconds", Help: "rtt",
		Buckets: []float64{0.001, 0.01}}, []string{"To"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_network_active_peers_other", Help: "not renamed"})
	src.MustRegister(sent, rtt, other)
	sent.WithLabelValues("a1").Add(1234)
	rtt.WithLabelValues("a1").Observe(0.005)
	other.Inc()

	reg := prometheus.NewRegistry()
	reg.MustRegister(etcdRenamed{src})
	tests := []struct {
		name, want string
	}{
		{"raftproxy_peer_sent_bytes_total", `
# HELP raftproxy_peer_sent_bytes_total sent (rafthttp's etcd_network_peer_sent_bytes_total)
# TYPE raftproxy_peer_sent_bytes_total counter
raftproxy_peer_sent_bytes_total{To="a1"} 1234
`},
		{"raftproxy_peer_round_trip_seconds", `
# HELP raftproxy_peer_round_trip_seconds rtt (rafthttp's etcd_network_peer_round_trip_time_seconds)
# TYPE raftproxy_peer_round_trip_seconds histogram
raftproxy_peer_round_trip_seconds_bucket{To="a1",le="0.001"} 0
raftproxy_peer_round_trip_seconds_bucket{To="a1",le="0.01"} 1
raftproxy_peer_round_trip_seconds_bucket{To="a1",le="+Inf"} 1
raftproxy_peer_round_trip_seconds_sum{To="a1"} 0.005
raftproxy_peer_round_trip_seconds_count{To="a1"} 1
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tt.want), tt.name); err != nil {
				t.Error(err)
			}
		})
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "raftproxy_peer_round_trip_seconds,raftproxy_peer_sent_bytes_total" {
		t.Errorf("renamed families %v, want only the two renamed ones", got)
	}
}

// TestPprofOnlyWhenAsked: Go's profiles need no authentication, so they
// are served only with --pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		h := Handler(raftnode.NewHost(raftnode.Config{DataDir: t.TempDir()}), on)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
		if want := map[bool]int{false: 404, true: 200}[on]; rec.Code != want {
			t.Errorf("pprof %v: GET /debug/pprof/ status %d, want %d", on, rec.Code, want)
		}
	}
}
