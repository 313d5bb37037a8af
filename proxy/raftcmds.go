package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/version"
)

// raftCluster handles RAFT.CLUSTER INIT and RAFT.CLUSTER JOIN.
func (c *conn) raftCluster(args [][]byte) *op {
	if c.s.cfg.ShardIndex != 0 {
		return errReply("ERR RAFT.CLUSTER runs on a node's first client port: this port serves one shard of it")
	}
	switch strings.ToLower(string(args[1])) {
	case "init":
		// RAFT.CLUSTER INIT [SHARDS <n>]
		shards := 0
		if len(args) == 4 && strings.EqualFold(string(args[2]), "shards") {
			v, err := strconv.Atoi(string(args[3]))
			if err != nil || v < 1 || v > maxShards {
				return errReply(fmt.Sprintf("ERR invalid number of shards: want 1 to %d", maxShards))
			}
			shards = v
		} else if len(args) != 2 {
			return errReply("ERR wrong number of arguments for 'raft.cluster|init' command")
		}
		if shards > 0 && (c.s.cfg.Sharding == nil || c.s.cfg.ShardIndex != 0) {
			return errReply("ERR this node cannot host shards: RAFT.CLUSTER INIT SHARDS runs on a node's first client port")
		}
		if shards > 0 && c.s.cfg.Seeded {
			return errReply("ERR a cluster made from --seed-rdb cannot be sharded: every seeded key would stay in the first shard")
		}
		n, err := c.s.cfg.Cluster.Init()
		if err != nil {
			return errReply(clusterErr(err))
		}
		if shards > 0 {
			if err := c.s.initShards(proposalContext(), c.s.cfg.JoinTimeout, n, shards); err != nil {
				// Not undone: the shards made so far, and the routing change
				// if its outcome is unknown, may stay.
				return errReply(fmt.Sprintf("ERR cluster %s was made but sharding it failed: %v; to start over, stop the node and empty its data directory",
					raftnode.IDString(n.ClusterID()), err))
			}
		}
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK "+raftnode.IDString(n.ClusterID()))}
	case "join":
		if len(args) < 3 {
			return errReply("ERR wrong number of arguments for 'raft.cluster|join' command")
		}
		// An optional trailing CLUSTER <id> names the cluster the node
		// expects to join; a member of any other cluster refuses it.
		var expect uint64
		rest := args[2:]
		if len(rest) >= 3 && strings.EqualFold(string(rest[len(rest)-2]), "cluster") {
			id, err := raftnode.ParseID(string(rest[len(rest)-1]))
			if err != nil {
				return errReply("ERR invalid cluster id: " + err.Error())
			}
			expect, rest = id, rest[:len(rest)-2]
		}
		addrs := make([]string, len(rest))
		for i, a := range rest {
			addrs[i] = string(a)
		}
		if err := c.s.join(addrs, expect); err != nil {
			return errReply(clusterErr(err))
		}
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	}
	return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.CLUSTER HELP.", args[1]))
}

func clusterErr(err error) string {
	if errors.Is(err, raftnode.ErrAlreadyMember) {
		return "ERR Already cluster member"
	}
	return "ERR " + err.Error()
}

// raftDebug handles RAFT.DEBUG COMPACT: make a snapshot of everything
// applied and compact the log, replying once the snapshot is stored.
func (c *conn) raftDebug(args [][]byte) *op {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	if !strings.EqualFold(string(args[1]), "compact") || len(args) != 2 {
		return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.DEBUG HELP.", args[1]))
	}
	ctx, cancel := context.WithTimeout(c.s.baseContext(), 10*time.Minute)
	defer cancel()
	if err := n.Compact(ctx); err != nil {
		return errReply("ERR snapshot failed: " + err.Error())
	}
	return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
}

// raftNode handles RAFT.NODE ADD <id> <addr> <peer-addr> [<cluster-id>]
// [FORMAT <n>] and RAFT.NODE REMOVE <id>. FORMAT is the newest log entry
// format the joining node decodes: a node that cannot read what this
// cluster writes is refused before it becomes a member.
func (c *conn) raftNode(args [][]byte) *op {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	sub := strings.ToLower(string(args[1]))
	format := 0 // not given: a joiner from before FORMAT (raftnode's unadvertisedFormat)
	if sub == "add" && len(args) >= 7 && strings.EqualFold(string(args[len(args)-2]), "format") {
		f, err := strconv.Atoi(string(args[len(args)-1]))
		if err != nil || f < 1 {
			return errReply("ERR invalid log entry format: " + string(args[len(args)-1]))
		}
		format, args = f, args[:len(args)-2]
	}
	if sub != "add" && sub != "remove" {
		return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.NODE HELP.", args[1]))
	}
	if (sub == "add" && len(args) != 5 && len(args) != 6) || (sub == "remove" && len(args) != 3) {
		return errReply(fmt.Sprintf("ERR wrong number of arguments for 'raft.node|%s' command", sub))
	}
	id, err := raftnode.ParseID(string(args[2]))
	if err != nil {
		return errReply("ERR " + err.Error())
	}
	if !c.s.followerProxy.Load() && !n.IsLeader() {
		l, ok := n.Leader()
		if !ok || l.Addr == "" {
			return errReply(errNoLeader)
		}
		return errReply("MOVED 0 " + l.Addr)
	}
	// A membership change handed to raft cannot be taken back: it is not
	// cut short by shutdown, only bounded by the request timeout.
	ctx, cancel := context.WithTimeout(proposalContext(), c.s.timeout())
	defer cancel()
	if sub == "remove" {
		if c.s.cfg.ShardIndex != 0 {
			return errReply("ERR RAFT.NODE REMOVE runs on a node's first client port: it removes the node from every shard")
		}
		// In a sharded cluster every node holds every shard: the node
		// leaves the shards' groups first, then the primary's.
		if err := c.s.removeFromShards(ctx, id); err != nil {
			return errReply(errorText(err, false))
		}
		if _, err := n.RemoveMember(ctx, id); err != nil {
			return errReply(errorText(err, false))
		}
		return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	}
	if len(args) == 6 {
		want, err := raftnode.ParseID(string(args[5]))
		if err != nil {
			return errReply("ERR invalid cluster id: " + err.Error())
		}
		if want != n.ClusterID() {
			return errReply(fmt.Sprintf("ERR %s: this node belongs to cluster %s, the joining node expects %s",
				errClusterMismatch, raftnode.IDString(n.ClusterID()), raftnode.IDString(want)))
		}
	}
	m := raftnode.Member{ID: id, Addr: string(args[3]), PeerAddr: string(args[4]), Format: format}
	if have := n.LogFormat(); m.Decodes() < have {
		return errReply(fmt.Sprintf("ERR %s: the joining node decodes log entries up to format %d, and this cluster writes format %d; upgrade it first",
			errTooOld, m.Decodes(), have))
	}
	members, err := n.AddLearner(ctx, m)
	if err != nil {
		return errReply(errorText(err, false))
	}
	// Reply: cluster id, then id, addr, peer addr of every member.
	b := resp.AppendArrayLen(nil, 1+3*len(members))
	b = resp.AppendBulkString(b, raftnode.IDString(n.ClusterID()))
	for _, mi := range members {
		b = resp.AppendBulkString(b, raftnode.IDString(mi.ID))
		b = resp.AppendBulkString(b, mi.Addr)
		b = resp.AppendBulkString(b, mi.PeerAddr)
	}
	return &op{kind: opReply, reply: b}
}

// raftTransferLeader handles RAFT.TRANSFER_LEADER [<id>]: it replies once
// the named node (or the most up-to-date follower) leads.
func (c *conn) raftTransferLeader(args [][]byte) *op {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	var target uint64
	if len(args) == 2 {
		id, err := raftnode.ParseID(string(args[1]))
		if err != nil {
			return errReply("ERR invalid target node id: " + err.Error())
		}
		target = id
	}
	if target == 0 && !n.IsLeader() {
		// Only the leader knows which follower is most up to date.
		l, ok := n.Leader()
		if !ok || l.Addr == "" {
			return errReply(errNoLeader)
		}
		return c.s.forward(l.Addr, "RAFT.TRANSFER_LEADER")
	}
	ctx, cancel := context.WithTimeout(c.s.baseContext(), c.s.timeout())
	defer cancel()
	if _, err := n.TransferLeadership(ctx, target, 0); err != nil {
		return errReply(errorText(err, false))
	}
	return &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
}

// forward runs a command on another node and relays its reply.
func (s *Server) forward(addr string, args ...string) *op {
	return s.forwardFor(addr, s.timeout(), args...)
}

// forwardFor is forward for a command that may take up to wait.
func (s *Server) forwardFor(addr string, wait time.Duration, args ...string) *op {
	ctx, cancel := context.WithTimeout(s.baseContext(), 2*time.Second)
	defer cancel()
	c, err := s.dialMember(ctx, addr)
	if err != nil {
		return errReply("ERR " + err.Error())
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait + 2*time.Second))
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	raw, err := c.Do(bs...)
	if err != nil {
		return errReply("ERR " + err.Error())
	}
	return &op{kind: opReply, reply: raw}
}

// join asks the cluster at addrs to add this node, following redirects and
// retrying while it has no leader, then starts the node and waits until it
// has replicated its own admission.
const (
	errClusterMismatch = "cluster id mismatch"
	errTooOld          = "log format too old"
)

func (s *Server) join(addrs []string, expect uint64) error {
	if n := s.cfg.Cluster.Node(); n != nil {
		if s.missingShards() {
			// A JOIN that joined this node's primary group but not every
			// shard's (it failed, or the node restarted) resumes with the
			// shards.
			return s.joinShards(s.baseContext(), s.cfg.JoinTimeout, addrs, n.ID())
		}
		return raftnode.ErrAlreadyMember
	}
	ctx, cancel := context.WithTimeout(s.baseContext(), s.cfg.JoinTimeout)
	defer cancel()
	// The id is kept for the life of the process: a join whose outcome was
	// unknown may have added it, and joining again with the same id then
	// finds it there instead of leaving a member nobody runs.
	s.joinID.CompareAndSwap(0, raftnode.RandomID())
	id := s.joinID.Load()
	if err := s.joinAs(ctx, addrs, expect, id); err != nil {
		return err
	}
	// In a sharded cluster a node holds every shard: it joins the others'
	// groups once it has the routing data that lists them.
	return s.joinShards(s.baseContext(), s.cfg.JoinTimeout, addrs, id)
}

// joinAs joins this server's group as member id, through the members at
// addrs, and waits until the node serves.
func (s *Server) joinAs(ctx context.Context, addrs []string, expect, id uint64) error {
	var lastErr error
	unknown := false
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr := addrs[attempt%len(addrs)]
		for hop := 0; hop < 3 && addr != ""; hop++ {
			cid, members, redirect, err := s.askToAdd(ctx, addr, id, expect)
			if err != nil && (strings.Contains(err.Error(), errClusterMismatch) || strings.Contains(err.Error(), errTooOld)) {
				return err // retrying cannot help
			}
			if err == nil {
				if _, err := s.cfg.Cluster.Join(cid, id, members); err != nil {
					return err
				}
				return s.waitAdmitted(ctx, id)
			}
			lastErr = err
			if !definite(err) {
				unknown = true
			}
			addr = redirect
		}
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if unknown {
		return fmt.Errorf("joining the cluster at %s did not finish (last error: %w); an earlier attempt may still add this node as %s: run RAFT.CLUSTER JOIN again to resume, or RAFT.NODE REMOVE %s on the cluster",
			strings.Join(addrs, ", "), lastErr, raftnode.IDString(id), raftnode.IDString(id))
	}
	return fmt.Errorf("failed to join the cluster at %s: %w", strings.Join(addrs, ", "), lastErr)
}

// definite reports whether a RAFT.NODE ADD error proves the add was not
// made: an error reply other than -TIMEOUT, or a connection that failed
// before the request was sent.
func definite(err error) bool {
	if strings.Contains(err.Error(), "TIMEOUT") {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op == "dial"
	}
	return !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, os.ErrDeadlineExceeded)
}

// askToAdd sends RAFT.NODE ADD to addr. On -MOVED it returns the address
// to follow.
func (s *Server) askToAdd(ctx context.Context, addr string, id, expect uint64) (cid uint64, members []raftnode.Member, redirect string, err error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.dialMember(dctx, addr)
	if err != nil {
		return 0, nil, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.timeout() + 2*time.Second))
	self := s.cfg.Self
	req := []string{"RAFT.NODE", "ADD", raftnode.IDString(id), self.Addr, self.PeerAddr}
	if expect != 0 {
		req = append(req, raftnode.IDString(expect))
	}
	v, err := c.DoValue(append(req, "FORMAT", strconv.Itoa(entry.Version))...)
	if err != nil && v.IsError() && strings.Contains(string(v.Str), "wrong number of arguments") {
		// A member from before FORMAT: it cannot check, and the join goes
		// on as before.
		v, err = c.DoValue(req...)
	}
	if err != nil {
		if v.IsError() {
			if target, ok := strings.CutPrefix(string(v.Str), "MOVED 0 "); ok {
				return 0, nil, target, err
			}
		}
		return 0, nil, "", err
	}
	if v.Kind != '*' || len(v.Elems) < 4 || (len(v.Elems)-1)%3 != 0 {
		return 0, nil, "", fmt.Errorf("unexpected RAFT.NODE ADD reply from %s", addr)
	}
	cid, err = raftnode.ParseID(string(v.Elems[0].Str))
	if err != nil {
		return 0, nil, "", err
	}
	for i := 1; i+2 < len(v.Elems); i += 3 {
		mid, err := raftnode.ParseID(string(v.Elems[i].Str))
		if err != nil {
			return 0, nil, "", err
		}
		members = append(members, raftnode.Member{ID: mid, Addr: string(v.Elems[i+1].Str), PeerAddr: string(v.Elems[i+2].Str)})
	}
	return cid, members, "", nil
}

func (s *Server) waitAdmitted(ctx context.Context, id uint64) error {
	n := s.cfg.Cluster.Node()
	// until is the commit index when the node first saw itself a member:
	// JOIN answers once the node has applied it, a snapshot the leader
	// sent to catch it up included, so a read right after the OK is
	// answered rather than refused with LOADING.
	var until uint64
	for {
		if until == 0 {
			if l, ok := n.Leader(); ok && l.ID != 0 {
				for _, m := range n.Members() {
					if m.ID == id {
						until = max(n.Status().Commit, 1)
					}
				}
			}
		}
		if until != 0 && n.Status().Applied >= until && n.Serving() {
			return nil
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("added to the cluster but not yet caught up with its log: %w", ctx.Err())
		}
	}
}

// raftInfo renders RAFT.INFO.
func (s *Server) raftInfo() string {
	var b strings.Builder
	n := s.cfg.Cluster.Node()
	if n == nil {
		b.WriteString("# Raft\r\nstate:uninitialized\r\nnode_id:\r\ncluster_id:\r\nrole:none\r\n")
		return b.String()
	}
	st := n.Status()
	state := raftState(n)
	voting := 0
	for _, ns := range st.Nodes {
		if ns.Voting {
			voting++
		}
	}
	fmt.Fprintf(&b, "# Raft\r\nstate:%s\r\nnode_id:%s\r\ncluster_id:%s\r\nrole:%s\r\nleader_id:%s\r\n",
		state, raftnode.IDString(st.ID), raftnode.IDString(st.ClusterID), st.Role, raftnode.IDString(st.Leader))
	fmt.Fprintf(&b, "current_term:%d\r\ncommit_index:%d\r\nlast_applied_index:%d\r\nfirst_log_index:%d\r\nlast_log_index:%d\r\nsnapshot_last_index:%d\r\n",
		st.Term, st.Commit, st.Applied, st.FirstIndex, st.LastIndex, st.SnapshotIndex)
	quarantined := 0
	if st.Quarantined {
		quarantined = 1
	}
	fmt.Fprintf(&b, "quarantined:%d\r\n", quarantined)
	fmt.Fprintf(&b, "raftproxy_version:%s\r\nentry_format:%d\r\nlog_format:%d\r\n", version.Release, entry.Version, n.LogFormat())
	fmt.Fprintf(&b, "follower_proxy:%s\r\nnum_nodes:%d\r\nnum_voting_nodes:%d\r\n",
		yesNo(s.followerProxy.Load()), len(st.Nodes), voting)
	for i, ns := range st.Nodes {
		fmt.Fprintf(&b, "node%d:id=%s,addr=%s,peer_addr=%s,voting=%s,state=%s,format=%d", i,
			raftnode.IDString(ns.ID), ns.Addr, ns.PeerAddr, yesNo(ns.Voting), ns.State, ns.Decodes())
		if st.Role == "leader" {
			b.WriteString(",match_index=" + strconv.FormatUint(ns.Match, 10))
		}
		b.WriteString("\r\n")
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// dialMember connects to another member's client address, over TLS when
// the cluster's client port speaks it, giving the cluster's password
// (members share one --requirepass).
func (s *Server) dialMember(ctx context.Context, addr string) (*backend.Conn, error) {
	var cfg *tls.Config
	if s.cfg.MemberTLS != nil {
		cfg = s.cfg.MemberTLS(addr)
	}
	c, err := backend.DialTLS(ctx, addr, cfg)
	if err != nil || s.cfg.RequirePass == "" {
		return c, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// As the internal user (acl.go), which client ACL changes cannot lock
	// out; a member of an older version knows only the default user.
	for _, auth := range [][]string{{"AUTH", internalUser, s.cfg.RequirePass}, {"AUTH", s.cfg.RequirePass}} {
		v, err := c.DoValue(auth...)
		if err == nil && v.Kind == '+' {
			c.SetDeadline(time.Time{})
			return c, nil
		}
		if err != nil && !v.IsError() {
			break // the connection failed, not the password
		}
	}
	c.Close()
	return nil, fmt.Errorf("AUTH to %s: the member refused this cluster's password", addr)
}
