package proxy

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/expiry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/version"
)

// infoSections splits INFO's arguments into those for the local redis and
// whether the Raft section is wanted. The Raft section follows redis's rule
// for module sections (RedisRaft's is one): it is in INFO everything and
// INFO raft, not in the default set nor in INFO all.
func infoSections(args [][]byte) (redisArgs []string, raft bool) {
	for _, a := range args {
		s := strings.ToLower(string(a))
		switch s {
		case "raft":
			raft = true
			continue
		case "everything":
			raft = true
		}
		redisArgs = append(redisArgs, s)
	}
	return redisArgs, raft
}

// infoCommand answers INFO: the local redis's sections with the fields that would
// describe that redis rather than raftproxy rewritten (see rewriteInfo),
// then the Raft section when asked for.
func (c *conn) infoCommand(args [][]byte) *op {
	redisArgs, raft := infoSections(args[1:])
	var text []byte
	if len(redisArgs) > 0 || !raft {
		rc, err := c.s.dialRedis(nil)
		if err != nil {
			return errReply(errorText(err, true))
		}
		defer rc.Close()
		rc.SetDeadline(time.Now().Add(c.s.timeout()))
		v, err := rc.DoValue(append([]string{"INFO"}, redisArgs...)...)
		if err != nil {
			if v.IsError() {
				return &op{kind: opReply, reply: resp.AppendError(nil, string(v.Str))}
			}
			return errReply(errorText(raftnode.ErrLoading, true))
		}
		text = c.s.stats.rewriteInfo(c.s.rewriteInfo(v.Str))
	}
	if raft {
		if len(text) > 0 {
			text = append(text, "\r\n"...)
		}
		text = append(text, c.s.raftInfoSection()...)
	}
	return &op{kind: opReply, reply: resp.AppendVerbatim(nil, string(text), c.client.resp3)}
}

// infoView is what rewriteInfo puts in place of redis's own fields.
type infoView struct {
	release string // raftproxy's version (version.Release)
	port    string // the proxy's client port
	clients int    // client connections to this proxy
	blocked int64  // of those, waiting in a blocking command
	leader  bool
	known   bool // a leader is known
	master  raftnode.Member
	members int
	// maxMemory is the maxmemory the log set (redis holds 0); -1: unknown.
	maxMemory int64
}

func (s *Server) infoView() infoView {
	s.mu.Lock()
	v := infoView{release: version.Release, clients: len(s.conns), maxMemory: -1}
	s.mu.Unlock()
	if s.cfg.Memory != nil {
		v.maxMemory, _ = s.cfg.Memory.MaxMemory()
	}
	if s.blocked != nil {
		v.blocked = s.blocked.count.Load()
	}
	if p := portOf(s.cfg.Self.Addr); p != 0 {
		v.port = strconv.Itoa(p)
	}
	if n := s.cfg.Cluster.Node(); n != nil {
		v.leader = n.IsLeader()
		v.master, v.known = n.Leader()
		v.members = len(n.Members())
	}
	return v
}

func (s *Server) rewriteInfo(text []byte) []byte {
	return rewriteInfo(text, s.infoView())
}

// rewriteInfo replaces the INFO fields that would mislead about raftproxy:
//
//   - raftproxy_version follows redis_version (which stays the local
//     redis's: clients decide features by it)
//   - redis_mode: "cluster", as raftproxy poses as a Redis Cluster
//   - tcp_port: the proxy's client port, not redis's
//   - connected_clients: the proxy's client connections (redis sees only
//     the proxy's own connections), and blocked_clients those of them
//     waiting in a blocking command (which never block in redis)
//   - role: master on the raft leader, slave elsewhere (as CLUSTER NODES),
//     with master_host, master_port and master_link_status on a follower
//   - connected_slaves: the other members, on the leader
//   - cluster_enabled: 1, because CLUSTER commands work (redis-py decides
//     cluster mode by it, as with RedisRaft, which forces it too)
//   - redis's replica fields (master_host, master_sync_*, slave_*...) are
//     dropped: redis is a replica of its own proxy while it loads a snapshot
//   - avg_ttl in the keyspace lines is made real (redis stores deadlines
//     shifted, package expiry)
//   - maxmemory and maxmemory_human are the log's (redis holds 0,
//     backend/memory.go)
//
// Everything else (memory, keyspace, stats, run_id...) is the local redis's.
func rewriteInfo(text []byte, v infoView) []byte {
	var out bytes.Buffer
	out.Grow(len(text) + 128)
	for line := range bytes.SplitSeq(text, []byte("\r\n")) {
		k, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			out.Write(line)
			out.WriteString("\r\n")
			continue
		}
		switch string(k) {
		case "redis_version":
			out.Write(line)
			out.WriteString("\r\n")
			if v.release != "" {
				out.WriteString("raftproxy_version:" + v.release + "\r\n")
			}
		case "redis_mode":
			out.WriteString("redis_mode:cluster\r\n")
		case "tcp_port":
			if v.port == "" {
				out.Write(line)
				out.WriteString("\r\n")
				continue
			}
			out.WriteString("tcp_port:" + v.port + "\r\n")
		case "connected_clients":
			fmt.Fprintf(&out, "connected_clients:%d\r\n", v.clients)
		case "blocked_clients":
			fmt.Fprintf(&out, "blocked_clients:%d\r\n", v.blocked)
		case "role":
			if v.leader || !v.known {
				out.WriteString("role:master\r\n")
				continue
			}
			status := "down"
			if v.master.Addr != "" {
				status = "up"
			}
			fmt.Fprintf(&out, "role:slave\r\nmaster_host:%s\r\nmaster_port:%d\r\nmaster_link_status:%s\r\n",
				splitAddr(v.master.Addr), portOf(v.master.Addr), status)
		case "connected_slaves":
			n := 0
			if v.leader && v.members > 0 {
				n = v.members - 1
			}
			fmt.Fprintf(&out, "connected_slaves:%d\r\n", n)
		case "cluster_enabled":
			out.WriteString("cluster_enabled:1\r\n")
		case "maxmemory", "maxmemory_human":
			if v.maxMemory < 0 {
				out.Write(line)
			} else if string(k) == "maxmemory" {
				fmt.Fprintf(&out, "maxmemory:%d", v.maxMemory)
			} else {
				out.WriteString("maxmemory_human:" + bytesHuman(v.maxMemory))
			}
			out.WriteString("\r\n")
		case "master_host", "master_port", "master_link_status", "master_last_io_seconds_ago",
			"master_sync_in_progress", "master_sync_total_bytes", "master_sync_read_bytes",
			"master_sync_left_bytes", "master_sync_perc", "master_sync_last_io_seconds_ago",
			"master_link_down_since_seconds", "slave_read_repl_offset", "slave_repl_offset",
			"slave_priority", "slave_read_only", "replica_announced":
			// redis's own replica fields: while a snapshot loads, redis is
			// a replica of the proxy (backend/repllink.go), which says nothing
			// about the raft cluster; role above says that.
		default:
			if bytes.HasPrefix(k, []byte("db")) && bytes.Contains(line, []byte("avg_ttl=")) {
				out.Write(realAvgTTL(line))
				out.WriteString("\r\n")
				continue
			}
			out.Write(line)
			out.WriteString("\r\n")
		}
	}
	// SplitSeq yields an empty last piece after the final "\r\n": drop the
	// "\r\n" added for it so the text ends as redis's does.
	b := out.Bytes()
	if bytes.HasSuffix(text, []byte("\r\n")) {
		b = b[:len(b)-2]
	}
	return b
}

// bytesHuman is redis's bytesToHuman: 1.50M, 512B...
func bytesHuman(n int64) string {
	d := float64(n)
	switch {
	case n < 1024:
		return fmt.Sprintf("%dB", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.2fK", d/1024)
	case n < 1024*1024*1024:
		return fmt.Sprintf("%.2fM", d/(1024*1024))
	case n < 1024*1024*1024*1024:
		return fmt.Sprintf("%.2fG", d/(1024*1024*1024))
	case n < 1024*1024*1024*1024*1024:
		return fmt.Sprintf("%.2fT", d/(1024*1024*1024*1024))
	}
	return fmt.Sprintf("%.2fP", d/(1024*1024*1024*1024*1024))
}

// realAvgTTL takes the shift out of a keyspace line's avg_ttl (redis
// averages its stored, shifted deadlines).
func realAvgTTL(line []byte) []byte {
	i := bytes.Index(line, []byte("avg_ttl="))
	rest := line[i+len("avg_ttl="):]
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		end = len(rest)
	}
	ttl, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	if err != nil || ttl < expiry.Shift/2 {
		return line
	}
	out := append([]byte(nil), line[:i+len("avg_ttl=")]...)
	out = strconv.AppendInt(out, ttl-expiry.Shift, 10)
	return append(out, rest[end:]...)
}

// raftInfoSection is the Raft section of INFO, with RedisRaft's field names
// (raft_ prefix) where RedisRaft has the field, and the values RAFT.INFO
// shows.
func (s *Server) raftInfoSection() string {
	var b strings.Builder
	b.WriteString("# Raft\r\n")
	n := s.cfg.Cluster.Node()
	if n == nil {
		b.WriteString("raft_dbid:\r\nraft_node_id:\r\nraft_state:uninitialized\r\nraft_role:-\r\n")
		return b.String()
	}
	st := n.Status()
	voting, selfVoting := 0, "no"
	for _, ns := range st.Nodes {
		if ns.Voting {
			voting++
			if ns.ID == st.ID {
				selfVoting = "yes"
			}
		}
	}
	logEntries := uint64(0)
	if st.LastIndex+1 > st.FirstIndex {
		logEntries = st.LastIndex + 1 - st.FirstIndex
	}
	fmt.Fprintf(&b, "raft_dbid:%s\r\nraft_node_id:%s\r\nraft_state:%s\r\nraft_role:%s\r\nraft_is_voting:%s\r\n",
		raftnode.IDString(st.ClusterID), raftnode.IDString(st.ID), raftState(n), st.Role, selfVoting)
	fmt.Fprintf(&b, "raft_leader_id:%s\r\nraft_current_term:%d\r\nraft_num_nodes:%d\r\nraft_num_voting_nodes:%d\r\n",
		raftnode.IDString(st.Leader), st.Term, len(st.Nodes), voting)
	for i, ns := range st.Nodes {
		fmt.Fprintf(&b, "raft_node%d:id=%s,state=%s,voting=%s,addr=%s,port=%d\r\n", i,
			raftnode.IDString(ns.ID), ns.State, yesNo(ns.Voting), splitAddr(ns.Addr), portOf(ns.Addr))
	}
	fmt.Fprintf(&b, "raft_log_entries:%d\r\nraft_current_index:%d\r\nraft_commit_index:%d\r\nraft_last_applied_index:%d\r\n",
		logEntries, st.LastIndex, st.Commit, st.Applied)
	fmt.Fprintf(&b, "raft_snapshot_last_idx:%d\r\n", st.SnapshotIndex)
	// raftproxy's own, with the same prefix.
	fmt.Fprintf(&b, "raft_first_log_index:%d\r\nraft_quarantined:%d\r\nraft_follower_proxy:%s\r\n",
		st.FirstIndex, boolInt(st.Quarantined), yesNo(s.followerProxy.Load()))
	return b.String()
}

// raftState is RAFT.INFO's state: up, loading or removed.
func raftState(n Group) string {
	switch {
	case n.Removed():
		return "removed"
	case !n.Serving():
		return "loading"
	}
	return "up"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// role answers ROLE as a redis primary or replica would, in raft's terms:
// the leader is the master and the voting members its replicas; a follower
// is a replica of the leader. Offsets are raft indexes (the leader's commit,
// each member's match; a follower's applied index), which grow as
// replication offsets do. redis's own ROLE would describe the apply stream
// while the applier holds it (backend/repllink.go), not the cluster.
func (c *conn) role() *op {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		b := resp.AppendArrayLen(nil, 3)
		b = resp.AppendBulkString(b, "master")
		b = resp.AppendInt(b, 0)
		return &op{kind: opReply, reply: resp.AppendArrayLen(b, 0)}
	}
	st := n.Status()
	if st.Leader == st.ID && st.ID != 0 {
		var peers []raftnode.NodeStatus
		for _, m := range st.Nodes {
			if m.ID != st.ID && m.State == "connected" {
				peers = append(peers, m)
			}
		}
		b := resp.AppendArrayLen(nil, 3)
		b = resp.AppendBulkString(b, "master")
		b = resp.AppendInt(b, int64(st.Commit))
		b = resp.AppendArrayLen(b, len(peers))
		for _, m := range peers {
			b = resp.AppendArrayLen(b, 3)
			b = resp.AppendBulkString(b, splitAddr(m.Addr))
			b = resp.AppendBulkString(b, strconv.Itoa(portOf(m.Addr)))
			b = resp.AppendBulkString(b, strconv.FormatUint(m.Match, 10))
		}
		return &op{kind: opReply, reply: b}
	}
	master, known := n.Leader()
	state := "connect"
	if known && master.Addr != "" {
		state = "connected"
	}
	b := resp.AppendArrayLen(nil, 5)
	b = resp.AppendBulkString(b, "slave")
	b = resp.AppendBulkString(b, splitAddr(master.Addr))
	b = resp.AppendInt(b, int64(portOf(master.Addr)))
	b = resp.AppendBulkString(b, state)
	b = resp.AppendInt(b, int64(st.Applied))
	return &op{kind: opReply, reply: b}
}
