package proxy

import (
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// WAIT and WAITAOF answer from raft's replication state. Every write this
// proxy acknowledged is already in the fsynced log of a majority, so WAIT
// never makes a write more durable; it reports how many other members hold
// the connection's writes durably, by this rule:
//
// Once the connection's earlier commands are answered, the target is the
// commit index at that moment (at or past every write the connection was
// answered). On the leader, the count is the other members (voters and
// learners) whose log is durable up to the target by their acknowledgements
// (raft's match index, sent after their fsync); WAIT polls it until it
// reaches numreplicas or the timeout passes (0: no limit), as redis does. A
// follower cannot see other members' progress: it answers at once with what
// the commit guarantees, a majority of the voters minus itself.
//
// WAITAOF reports [1, that count]: the raft log is raftproxy's append-only
// file, and this node holds the connection's writes in its fsynced log.

// waitPoll is how often the leader looks at its followers' progress.
const waitPoll = 5 * time.Millisecond

func (c *conn) wait(name string, args [][]byte) *op {
	nums := args[1 : len(args)-1]
	want := int64(0)
	for _, a := range nums {
		v, err := strconv.ParseInt(string(a), 10, 64)
		if err != nil {
			return errReply(errNotInteger)
		}
		want = v // numreplicas is the last number before the timeout
	}
	ms, err := strconv.ParseInt(string(args[len(args)-1]), 10, 64)
	if err != nil {
		return errReply("ERR timeout is not an integer or out of range")
	}
	if ms < 0 {
		return errReply("ERR timeout is negative")
	}
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	// The connection's writes queued before WAIT must be answered first:
	// only then is their place in the log known to be at or below the
	// commit index. Each ends by itself within the request timeout.
	for c.pendingWrites.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	var deadline time.Time
	if ms > 0 {
		deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	st := n.Status()
	target := st.Commit
	count := replicasAt(st, target)
	for count < want && n.IsLeader() && (deadline.IsZero() || time.Now().Before(deadline)) && !c.s.isClosed() {
		select {
		case <-n.Done():
			return errReply(errorText(raftnode.ErrStopped, false))
		case <-time.After(waitPoll):
		}
		count = replicasAt(n.Status(), target)
	}
	if name == "waitaof" {
		b := resp.AppendArrayLen(nil, 2)
		b = resp.AppendInt(b, 1)
		return &op{kind: opReply, reply: resp.AppendInt(b, count)}
	}
	return &op{kind: opReply, reply: resp.AppendInt(nil, count)}
}

// replicasAt counts the other members known to hold the log up to index
// durably (see the rule above).
func replicasAt(st raftnode.Status, index uint64) int64 {
	if st.Role != "leader" {
		voters := 0
		for _, ns := range st.Nodes {
			if ns.Voting {
				voters++
			}
		}
		return int64(voters / 2) // majority (voters/2+1) minus this node
	}
	var n int64
	for _, ns := range st.Nodes {
		if ns.ID != st.ID && ns.Match >= index {
			n++
		}
	}
	return n
}

// addWaitAOF adds WAITAOF when the local redis predates it (7.2): its answer
// comes from raft, not from redis.
func addWaitAOF(t table) {
	if _, ok := t["waitaof"]; !ok {
		t["waitaof"] = &spec{name: "waitaof", arity: 4, class: classProxy}
	}
}
