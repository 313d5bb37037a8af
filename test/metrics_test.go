package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape is one parsed /metrics page: series (name plus labels, as
// printed) to value.
type scrape map[string]float64

func getHTTP(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: read body: %w", url, err)
	}
	return resp.StatusCode, string(b), nil
}

func scrapeNode(ctx context.Context, t *testing.T, n *Node) scrape {
	t.Helper()
	// A restarted node listens for metrics a moment after its clients.
	var code int
	var body string
	err := waitFor(ctx, 5*time.Second, 50*time.Millisecond, n.String()+" serving /metrics", func(ctx context.Context) error {
		var err error
		code, body, err = getHTTP(ctx, "http://"+n.MetricsAddr+"/metrics")
		return err
	})
	if err != nil || code != 200 {
		t.Fatalf("%s: scrape /metrics: %d %v\n%.500s", n, code, err, body)
	}
	s := scrape{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: /metrics line %q: %v", n, line, err)
		}
		s[line[:i]] = v
	}
	return s
}

// sum adds the series of name whose labels include every one of labels
// (each as printed, e.g. `class="write"`); found says whether any did.
func (s scrape) sum(name string, labels ...string) (total float64, found bool) {
	for k, v := range s {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			total, found = total+v, true
		}
	}
	return total, found
}

func (s scrape) get(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.sum(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no series %s%v", name, labels)
	}
	return v
}

// readyz returns /readyz?verbose's status and body.
func readyz(ctx context.Context, t *testing.T, n *Node) (int, string) {
	t.Helper()
	code, body, err := getHTTP(ctx, "http://"+n.MetricsAddr+"/readyz?verbose")
	if err != nil {
		t.Fatalf("%s: %v", n, err)
	}
	return code, body
}

func waitReadyz(ctx context.Context, t *testing.T, n *Node, code int, want string) {
	t.Helper()
	err := waitFor(ctx, 15*time.Second, 50*time.Millisecond, fmt.Sprintf("%s /readyz %d with %q", n, code, want), func(ctx context.Context) error {
		c, body, err := getHTTP(ctx, "http://"+n.MetricsAddr+"/readyz?verbose")
		if err != nil {
			return err
		}
		if c != code || !strings.Contains(body, want) {
			return fmt.Errorf("status %d body %q", c, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMetricsAndHealth runs one cluster through the states an operator
// watches: not formed, healthy, under load, snapshot, leader transfer,
// leader lost, local redis lost; it checks /readyz in each and that the
// /metrics series moved as the work done says they must.
func TestMetricsAndHealth(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := NewCluster(ctx, t, ClusterOptions{Metrics: true, ExtraArgs: []string{"--snapshot-catchup-entries", "5"}})

	t.Run("no cluster yet", func(t *testing.T) {
		if code, body, err := getHTTP(ctx, "http://"+c.Nodes[0].MetricsAddr+"/livez"); err != nil || code != 200 {
			t.Fatalf("/livez: %d %v %q", code, err, body)
		}
		if code, body := readyz(ctx, t, c.Nodes[0]); code != 503 || !strings.Contains(body, "[failed] cluster") {
			t.Fatalf("/readyz before INIT: %d %q, want 503 with [failed] cluster", code, body)
		}
	})
	if err := c.Form(ctx); err != nil {
		t.Fatal(err)
	}
	leader, followers := c.Leader(ctx)

	t.Run("healthy", func(t *testing.T) {
		for _, n := range c.Nodes {
			waitReadyz(ctx, t, n, 200, "[ok] applied")
			_, body := readyz(ctx, t, n)
			for _, check := range []string{"[ok] cluster", "[ok] leader", "[ok] redis", "[ok] applied", "ok"} {
				if !strings.Contains(body, check) {
					t.Errorf("%s /readyz?verbose lacks %q: %q", n, check, body)
				}
			}
		}
	})

	t.Run("info agrees with metrics", func(t *testing.T) {
		if err := c.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			checkInfoAgrees(ctx, t, n)
		}
	})

	t.Run("load", func(t *testing.T) {
		before := scrapeNode(ctx, t, leader)
		// Connections held open show in client_connections.
		var raws []*rawConn
		for range 5 {
			rc, err := dialRaw(leader.Addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if v, err := rc.Do("PING"); err != nil || v.Str != "PONG" {
				t.Fatalf("PING: %v %v", v, err)
			}
			raws = append(raws, rc)
		}
		const writes, reads = 200, 100
		rc := raws[0]
		for i := range writes {
			if v, err := rc.Do("SET", fmt.Sprintf("m%d", i), "v"); err != nil || v.Str != "OK" {
				t.Fatalf("SET: %v %v", v, err)
			}
		}
		for i := range reads {
			if v, err := rc.Do("GET", fmt.Sprintf("m%d", i)); err != nil || v.Str != "v" {
				t.Fatalf("GET: %v %v", v, err)
			}
		}
		// An applied write that redis answers with an error, and a command
		// the proxy refuses.
		if v, err := rc.Do("LPUSH", "m0", "x"); err != nil || !v.IsError() {
			t.Fatalf("LPUSH on a string: %v %v, want WRONGTYPE", v, err)
		}
		if v, err := rc.Do("SAVE"); err != nil || !v.IsError() {
			t.Fatalf("SAVE: %v %v, want it refused", v, err)
		}
		after := scrapeNode(ctx, t, leader)
		conns := after.get(t, "raftproxy_client_connections")
		if conns < 5 {
			t.Errorf("client_connections %v with 5 connections open", conns)
		}
		grew := func(name string, atLeast float64, labels ...string) {
			t.Helper()
			b, _ := before.sum(name, labels...)
			a := after.get(t, name, labels...)
			if a-b < atLeast {
				t.Errorf("%s%v grew by %v (%v to %v), want at least %v", name, labels, a-b, b, a, atLeast)
			}
		}
		grew("raftproxy_client_commands_total", writes, `class="write"`, `result="ok"`)
		grew("raftproxy_client_commands_total", 1, `class="write"`, `result="error"`)
		grew("raftproxy_client_commands_total", reads, `class="read"`, `result="ok"`)
		grew("raftproxy_client_commands_total", 1, `class="refused"`, `result="error"`)
		grew("raftproxy_client_commands_total", 5, `class="proxy"`, `result="ok"`) // the PINGs
		grew("raftproxy_client_command_duration_seconds_count", writes, `class="write"`)
		grew("raftproxy_client_command_duration_seconds_count", reads, `class="read"`)
		// Sequential writes each get their own entry; batching only merges
		// concurrent ones.
		grew("raftproxy_proposals_committed_total", writes)
		grew("raftproxy_proposals_applied_total", writes)
		grew("raftproxy_proposal_duration_seconds_count", writes)
		grew("raftproxy_wal_fsync_duration_seconds_count", writes)
		grew("raftproxy_redis_apply_duration_seconds_count", 1)
		grew("raftproxy_read_index_duration_seconds_count", 1)
		grew("raftproxy_commit_index", writes)
		grew("raftproxy_applied_index", writes)
		grew("raftproxy_peer_sent_bytes_total", 1)
		grew("raftproxy_peer_received_bytes_total", 1)
		if v := after.get(t, "raftproxy_proposals_pending_total"); v != 0 {
			t.Errorf("proposals_pending_total %v with every write answered", v)
		}
		if after.get(t, "raftproxy_proposals_failed_total") != before.get(t, "raftproxy_proposals_failed_total") {
			t.Errorf("proposals_failed_total moved on a healthy cluster")
		}
		for _, rc := range raws {
			rc.Close()
		}
		err := waitFor(ctx, 5*time.Second, 50*time.Millisecond, "client_connections to drop by 5", func(context.Context) error {
			if now := scrapeNode(ctx, t, leader).get(t, "raftproxy_client_connections"); now > conns-5 {
				return fmt.Errorf("client_connections %v, was %v with 5 more open", now, conns)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		// A follower that misses more than the catch-up tail gets a snapshot.
		f := followers[0]
		if err := f.KillProxy(); err != nil {
			t.Fatal(err)
		}
		// One entry each: more than the catch-up tail of 5.
		rc, err := dialRaw(leader.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		for i := range 20 {
			if v, err := rc.Do("SET", fmt.Sprintf("s%d", i), "v"); err != nil || v.Str != "OK" {
				t.Fatalf("SET: %v %v", v, err)
			}
		}
		before := scrapeNode(ctx, t, leader)
		if v, err := leader.Do(ctx, 10*time.Second, "RAFT.DEBUG", "COMPACT"); err != nil || v.Str != "OK" {
			t.Fatalf("RAFT.DEBUG COMPACT: %v %v", v, err)
		}
		after := scrapeNode(ctx, t, leader)
		if d := after.get(t, "raftproxy_snapshot_make_duration_seconds_count") - before.get(t, "raftproxy_snapshot_make_duration_seconds_count"); d < 1 {
			t.Errorf("snapshot_make_duration_seconds_count grew by %v after COMPACT", d)
		}
		if after.get(t, "raftproxy_snapshot_bytes") <= 0 {
			t.Errorf("snapshot_bytes %v after a snapshot", after.get(t, "raftproxy_snapshot_bytes"))
		}
		if err := f.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
		err = waitFor(ctx, 10*time.Second, 100*time.Millisecond, f.String()+" loading the leader's snapshot", func(context.Context) error {
			fs := scrapeNode(ctx, t, f)
			for _, name := range []string{"raftproxy_snapshot_receive_duration_seconds_count", "raftproxy_snapshot_load_duration_seconds_count"} {
				if v, _ := fs.sum(name); v < 1 {
					return fmt.Errorf("%s is %v", name, v)
				}
			}
			if v, _ := fs.sum("raftproxy_snapshot_transfer_bytes_total", `direction="received"`); v <= 0 {
				return fmt.Errorf("snapshot_transfer_bytes_total{received} is %v", v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ls := scrapeNode(ctx, t, leader)
		if v, _ := ls.sum("raftproxy_snapshot_send_duration_seconds_count"); v < 1 {
			t.Errorf("leader's snapshot_send_duration_seconds_count is %v after sending one", v)
		}
		if v, _ := ls.sum("raftproxy_snapshot_transfer_bytes_total", `direction="sent"`); v <= 0 {
			t.Errorf("leader's snapshot_transfer_bytes_total{sent} is %v", v)
		}
		if v, _ := ls.sum("raftproxy_snapshot_failures_total"); v != 0 {
			t.Errorf("snapshot_failures_total %v", v)
		}
	})

	t.Run("leader change", func(t *testing.T) {
		var before []scrape
		for _, n := range c.Nodes {
			before = append(before, scrapeNode(ctx, t, n))
		}
		to := followers[1]
		if v, err := leader.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER", to.ID); err != nil || v.IsError() {
			t.Fatalf("RAFT.TRANSFER_LEADER %s: %v %v", to.ID, v, err)
		}
		if l, _ := c.Leader(ctx); l != to {
			t.Fatalf("leader is %s after transfer to %s", l, to)
		}
		for i, n := range c.Nodes {
			after := scrapeNode(ctx, t, n)
			if d := after.get(t, "raftproxy_leader_changes_seen_total") - before[i].get(t, "raftproxy_leader_changes_seen_total"); d < 1 {
				t.Errorf("%s: leader_changes_seen_total grew by %v after a transfer", n, d)
			}
			if after.get(t, "raftproxy_term") <= before[i].get(t, "raftproxy_term") {
				t.Errorf("%s: term did not grow after a transfer", n)
			}
			if want := float64(b2i(n == to)); after.get(t, "raftproxy_is_leader") != want {
				t.Errorf("%s: is_leader %v, want %v", n, after.get(t, "raftproxy_is_leader"), want)
			}
		}
		leader, followers = to, nil
		for _, n := range c.Nodes {
			if n != to {
				followers = append(followers, n)
			}
		}
	})

	t.Run("leader lost", func(t *testing.T) {
		survivor := followers[0]
		for _, n := range []*Node{leader, followers[1]} {
			if err := n.KillProxy(); err != nil {
				t.Fatal(err)
			}
		}
		waitReadyz(ctx, t, survivor, 503, "[failed] leader")
		if v := scrapeNode(ctx, t, survivor).get(t, "raftproxy_has_leader"); v != 0 {
			t.Errorf("has_leader %v with a majority down", v)
		}
		if code, _, err := getHTTP(ctx, "http://"+survivor.MetricsAddr+"/livez"); err != nil || code != 200 {
			t.Errorf("/livez without a leader: %d %v", code, err)
		}
		for _, n := range []*Node{leader, followers[1]} {
			if err := n.StartProxy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range c.Nodes {
			waitReadyz(ctx, t, n, 200, "[ok] leader")
		}
	})

	t.Run("redis killed", func(t *testing.T) {
		n := c.Nodes[2]
		if err := n.KillRedis(); err != nil {
			t.Fatal(err)
		}
		waitReadyz(ctx, t, n, 503, "[failed] redis")
		if v := scrapeNode(ctx, t, n).get(t, "raftproxy_redis_up"); v != 0 {
			t.Errorf("redis_up %v with redis killed", v)
		}
		if err := n.StartRedis(ctx); err != nil {
			t.Fatal(err)
		}
		waitReadyz(ctx, t, n, 200, "[ok] redis")
		if v := scrapeNode(ctx, t, n).get(t, "raftproxy_redis_up"); v != 1 {
			t.Errorf("redis_up %v after redis came back", v)
		}
	})

	t.Run("peer round trip", func(t *testing.T) {
		// rafthttp probes each peer every few seconds; by now a node that
		// ran all along has done so.
		err := waitFor(ctx, 10*time.Second, 200*time.Millisecond, "a peer_round_trip_seconds observation", func(context.Context) error {
			for _, n := range c.Nodes {
				if v, _ := scrapeNode(ctx, t, n).sum("raftproxy_peer_round_trip_seconds_count"); v >= 1 {
					return nil
				}
			}
			return fmt.Errorf("no node has a raftproxy_peer_round_trip_seconds observation")
		})
		if err != nil {
			t.Error(err)
		}
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkInfoAgrees reads INFO raft, RAFT.INFO and /metrics of an idle node
// and checks they report the same raft state. The reads are not atomic, so
// it retries until INFO raft reads the same before and after the others.
func checkInfoAgrees(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	infoRaft := func() map[string]string {
		v, err := n.Do(ctx, 2*time.Second, "INFO", "raft")
		if err != nil || v.Kind != '$' {
			t.Fatalf("%s: INFO raft: %v %v", n, v, err)
		}
		f := map[string]string{}
		for _, line := range strings.Split(v.Str, "\r\n") {
			if k, val, ok := strings.Cut(line, ":"); ok {
				f[k] = val
			}
		}
		return f
	}
	keys := []string{"raft_current_term", "raft_commit_index", "raft_last_applied_index", "raft_role", "raft_leader_id"}
	same := func(a, b map[string]string) bool {
		for _, k := range keys {
			if a[k] != b[k] {
				return false
			}
		}
		return true
	}
	for try := 0; ; try++ {
		first := infoRaft()
		ri, err := n.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := scrapeNode(ctx, t, n)
		last := infoRaft()
		if !same(first, last) {
			if try < 10 {
				continue
			}
			t.Fatalf("%s: INFO raft keeps changing: %v then %v", n, first, last)
		}
		num := func(s string) float64 {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("%s: %q is not a number", n, s)
			}
			return v
		}
		tests := []struct {
			what        string
			info, rinfo string
			metric      string
			metricWant  float64
		}{
			{"term", last["raft_current_term"], ri.Get("current_term"), "raftproxy_term", num(last["raft_current_term"])},
			{"commit", last["raft_commit_index"], ri.Get("commit_index"), "raftproxy_commit_index", num(last["raft_commit_index"])},
			{"applied", last["raft_last_applied_index"], ri.Get("last_applied_index"), "raftproxy_applied_index", num(last["raft_last_applied_index"])},
			{"role", last["raft_role"], ri.Get("role"), "raftproxy_is_leader", float64(b2i(last["raft_role"] == "leader"))},
			{"learner", last["raft_role"], ri.Get("role"), "raftproxy_is_learner", float64(b2i(last["raft_role"] == "learner"))},
			{"leader", last["raft_leader_id"], ri.Get("leader_id"), "raftproxy_has_leader", float64(b2i(strings.Trim(last["raft_leader_id"], "0") != ""))},
		}
		for _, tt := range tests {
			if tt.info != tt.rinfo {
				t.Errorf("%s: %s: INFO raft says %q, RAFT.INFO %q", n, tt.what, tt.info, tt.rinfo)
			}
			if got := m.get(t, tt.metric); got != tt.metricWant {
				t.Errorf("%s: %s: %s is %v, INFO raft says %q", n, tt.what, tt.metric, got, tt.info)
			}
		}
		return
	}
}
