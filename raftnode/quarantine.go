package raftnode

// Quarantine of a node whose WAL lost a tail (see docs/ARCHITECTURE.md).
//
// When the WAL had to be repaired, records this node had fsynced and
// acknowledged may be gone: a disk that lied, or a tail cut by a fault. Its
// log then lacks entries that the cluster counted it for. Raft assumes that
// never happens, and three things break:
//
//   - a leader's heartbeat carries commit = min(Match, committed) with the
//     Match from before the loss, beyond this node's last index: raft panics;
//   - that leader treats this node's rejections as stale (rejected <= Match)
//     and never repairs it while it stays leader;
//   - if this node votes or campaigns before it is repaired, a leader lacking
//     a committed entry can be elected (this node held the entry's only other
//     copy in some quorum), and the entry is lost.
//
// So a node that restarts with a repaired WAL is quarantined, with
// T0 = the highest term its log and hard state know. While quarantined it
// never campaigns (its vote requests are dropped), never votes (vote
// requests to it are dropped), never takes leadership by transfer, clamps
// the commit index of heartbeats to its last index, and asks the leader to
// step down when that leader's progress for it may be stale. The quarantine
// ends once its log holds an entry of a term above T0: such an entry comes
// from a leader elected after the restart (whose progress for this node was
// built from this node's own answers), and by log matching the log then
// holds every entry committed before that term began.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// stepDownPath is the peer endpoint a quarantined node calls on a leader
// whose progress for it may be stale.
const stepDownPath = "/raftproxy/stepdown"

// ErrQuarantined refuses to make a quarantined node the leader.
var ErrQuarantined = fmt.Errorf("this node is quarantined (its WAL lost a tail) until a newer leader has repaired its log")

type quarantine struct {
	on    atomic.Bool
	term  uint64    // T0; set before the node starts, read-only after
	since time.Time // set with term

	// logging state, so that repeated events are logged once
	clampLogged    atomic.Uint64 // term of the last clamp logged
	campaignLogged atomic.Uint64 // term of the last dropped campaign logged
}

// stepDowns is the leader's side: which members asked it to step down
// recently (they are quarantined, so no transfer goes to them), and whether
// a hand-over is under way.
type stepDowns struct {
	mu      sync.Mutex
	askedAt map[uint64]time.Time
	logged  time.Time
	busy    atomic.Bool
}

func (s *stepDowns) asked(id uint64, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.askedAt == nil {
		s.askedAt = map[uint64]time.Time{}
	}
	s.askedAt[id] = now
}

func (s *stepDowns) quarantined(id uint64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.askedAt[id]
	return ok && now.Sub(t) < 5*time.Second
}

// shouldLog rate-limits the leader's log of requests it cannot act on.
func (s *stepDowns) shouldLog(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.logged) < 10*time.Second {
		return false
	}
	s.logged = now
	return true
}

// Quarantined reports whether this node is quarantined.
func (n *Node) Quarantined() bool { return n.quar.on.Load() }

// QuarantineTerm is T0, the term the quarantine waits to see exceeded (0
// when the node was not quarantined at start).
func (n *Node) QuarantineTerm() uint64 { return n.quar.term }

// enterQuarantine is called once the raft storage holds the restored log.
func (n *Node) enterQuarantine() {
	last, _ := n.storage.LastIndex()
	lastTerm, _ := n.storage.Term(last)
	hs, _, _ := n.storage.InitialState()
	n.quar.term = max(hs.GetTerm(), lastTerm)
	n.quar.since = time.Now()
	n.quar.on.Store(true)
	n.log.Warn("entering quarantine: the WAL lost a tail of records this node may have acknowledged; "+
		"it will neither vote nor campaign until its log holds an entry of a term above T0",
		"t0", n.quar.term, "last_index", last, "last_term", lastTerm, "commit", hs.GetCommit(),
		"snapshot_index", n.snapIndex.Load())
}

// maybeLeaveQuarantine ends the quarantine when the log (entries and
// snapshot just persisted) holds an entry of a term above T0.
func (n *Node) maybeLeaveQuarantine() {
	last, _ := n.storage.LastIndex()
	term, err := n.storage.Term(last)
	if err != nil || term <= n.quar.term {
		return
	}
	// The entry is durable (entries are fsynced before this runs), so a
	// later restart need not be quarantined.
	if err := n.wal.ClearRepaired(); err != nil {
		n.log.Error("could not clear the WAL repair marker; the next restart will be quarantined again", "err", err)
	}
	n.quar.on.Store(false)
	if n.core != nil {
		n.core.setQuiesceAllowed(n.quiesceAllowed())
	}
	n.log.Warn("leaving quarantine: the log holds an entry of a term above T0 from a leader elected after the restart",
		"t0", n.quar.term, "last_index", last, "last_term", term, "leader", IDString(n.lead.Load()),
		"quarantined_for", time.Since(n.quar.since).Round(time.Millisecond))
}

// isVoteRequest reports whether m asks for a vote or a pre-vote.
func isVoteRequest(m *raftpb.Message) bool {
	t := m.GetType()
	return t == raftpb.MsgVote || t == raftpb.MsgPreVote
}

// quarantineOutgoing drops a quarantined node's own vote requests: it does
// not campaign. It returns the messages kept and how many were dropped.
func quarantineOutgoing(msgs []*raftpb.Message) ([]*raftpb.Message, int) {
	out := msgs[:0:0]
	dropped := 0
	for _, m := range msgs {
		if isVoteRequest(m) {
			dropped++
			continue
		}
		out = append(out, m)
	}
	if dropped == 0 {
		return msgs, 0
	}
	return out, dropped
}

// quarantineIncoming decides what a quarantined node does with an incoming
// message: drop it (vote requests: it does not vote; MsgTimeoutNow: it does
// not take leadership), or step it, with a heartbeat's commit clamped to the
// last index of this node's log. It reports whether m was dropped and
// whether its commit was clamped.
func quarantineIncoming(m *raftpb.Message, lastIndex uint64) (drop, clamped bool) {
	switch m.GetType() {
	case raftpb.MsgVote, raftpb.MsgPreVote, raftpb.MsgTimeoutNow:
		return true, false
	case raftpb.MsgHeartbeat:
		// The leader sends min(its Match for this node, committed); a Match
		// from before the loss points past the log and raft would panic.
		// Every index up to lastIndex is one this node acknowledged to that
		// leader, so committing up to it is what the leader meant.
		if m.GetCommit() > lastIndex {
			m.Commit = proto.Uint64(lastIndex)
			return false, true
		}
	}
	// MsgApp commits at most its own last new index; MsgSnap its own index.
	return false, false
}

// filterIncoming applies the quarantine to a message from a peer; it
// reports whether the message must be dropped.
func (n *Node) filterIncoming(m *raftpb.Message) bool {
	if !n.quar.on.Load() {
		return false
	}
	last, _ := n.storage.LastIndex()
	commit := m.GetCommit()
	drop, clamped := quarantineIncoming(m, last)
	if drop {
		n.log.Debug("quarantined: dropped message", "type", m.GetType().String(), "from", IDString(m.GetFrom()), "term", m.GetTerm())
	}
	if clamped && n.quar.clampLogged.Swap(m.GetTerm()) != m.GetTerm() {
		n.log.Warn("quarantined: the leader's commit index is beyond this node's log (its progress for this node predates the lost tail); clamped",
			"leader", IDString(m.GetFrom()), "leader_term", m.GetTerm(), "commit", commit, "last_index", last, "t0", n.quar.term)
	}
	return drop
}

// filterOutgoing applies the quarantine to the messages raft wants sent.
func (n *Node) filterOutgoing(msgs []*raftpb.Message) []*raftpb.Message {
	if !n.quar.on.Load() {
		return msgs
	}
	out, dropped := quarantineOutgoing(msgs)
	if dropped > 0 {
		term := n.term.Load()
		if n.quar.campaignLogged.Swap(term) != term {
			n.log.Warn("quarantined: not campaigning (dropped this node's vote requests)", "term", term, "t0", n.quar.term, "dropped", dropped)
		}
	}
	return out
}

// askToStepDown runs while the node is quarantined: about once a second it
// asks the leader it follows (or, knowing none, every other member) to step
// down. A leader does so only when its progress for this node may be stale;
// its successor starts with fresh progress and repairs this node's log.
func (n *Node) askToStepDown() {
	client := &http.Client{Timeout: time.Second}
	if !n.cfg.PeerTLS.Empty() {
		tr, err := transport.NewTransport(n.cfg.PeerTLS, time.Second)
		if err != nil {
			n.log.Error("quarantined: cannot ask peers to step down: peer TLS", "err", err)
			return
		}
		defer tr.CloseIdleConnections()
		client.Transport = tr
	}
	ctx := nodeCtx(n)
	// The first request goes out as soon as a leader's heartbeat can have
	// arrived, the others about once a second.
	t := time.NewTimer(3 * n.cfg.TickInterval)
	defer t.Stop()
	lastAnswer := map[uint64]string{}
	for {
		select {
		case <-t.C:
			t.Reset(time.Second)
		case <-n.stopc:
			return
		}
		if !n.quar.on.Load() {
			return
		}
		var targets []Member
		if lead := n.lead.Load(); lead != raft.None && lead != n.id {
			if m, ok := n.members.get(lead); ok {
				targets = append(targets, m)
			}
		} else {
			for _, m := range n.members.list() {
				if m.ID != n.id && m.Voting {
					targets = append(targets, m.Member)
				}
			}
		}
		last, _ := n.storage.LastIndex()
		for _, m := range targets {
			if m.PeerAddr == "" {
				continue
			}
			answer := n.postStepDown(ctx, client, m, last)
			if lastAnswer[m.ID] != answer {
				lastAnswer[m.ID] = answer
				n.log.Info("quarantined: asked peer to step down if its progress for this node is stale",
					"peer", IDString(m.ID), "t0", n.quar.term, "last_index", last, "answer", answer)
			}
		}
	}
}

func (n *Node) postStepDown(ctx context.Context, client *http.Client, m Member, last uint64) string {
	q := url.Values{}
	q.Set("cluster", IDString(n.clusterID))
	q.Set("from", IDString(n.id))
	q.Set("term", strconv.FormatUint(n.quar.term, 10))
	q.Set("last", strconv.FormatUint(last, 10))
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.peerURL(m.PeerAddr)+stepDownPath+"?"+q.Encode(), nil)
	if err != nil {
		return err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "unreachable"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// serveStepDown is the leader's side of the step-down request.
func (n *Node) serveStepDown(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	cluster, err1 := ParseID(q.Get("cluster"))
	from, err2 := ParseID(q.Get("from"))
	term, err3 := strconv.ParseUint(q.Get("term"), 10, 64)
	last, err4 := strconv.ParseUint(q.Get("last"), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		http.Error(w, "want cluster, from (hex ids), term and last (decimal)", http.StatusBadRequest)
		return
	}
	if cluster != n.clusterID {
		http.Error(w, "cluster id mismatch", http.StatusPreconditionFailed)
		return
	}
	code, msg := n.stepDownFor(from, term, last)
	http.Error(w, msg, code)
}

// stepDownFor handles member from's request: it is quarantined with T0 =
// term and its log ends at last. This leader's progress for it may be stale
// if this leader's term is not above T0 (it may have been elected before
// from lost its tail) or if it believes from holds more than it does; then
// leadership goes to the most up-to-date other voter that is connected and
// caught up, whose new term starts with fresh progress for every follower.
func (n *Node) stepDownFor(from, term, last uint64) (int, string) {
	if _, ok := n.members.get(from); !ok || from == n.id {
		return http.StatusForbidden, "not a member"
	}
	now := time.Now()
	n.stepDown.asked(from, now)
	// A quiesced leader ticks again and takes its peers back: the
	// successor it hands over to must be connected, and the quarantined
	// member's log is repaired by a ticking leader's appends.
	n.core.poke()
	st := n.core.status()
	if st.RaftState != raft.StateLeader {
		return http.StatusConflict, "not the leader"
	}
	pr, hasPr := st.Progress[from]
	if !staleProgress(st.GetTerm(), pr.Match, hasPr, term, last) {
		return http.StatusOK, fmt.Sprintf("progress is fresh (term %d, match %d): not stepping down", st.GetTerm(), pr.Match)
	}
	target := stepDownTarget(st, n.id, from, func(id uint64) bool {
		return !n.stepDown.quarantined(id, now) && !n.transport.ActiveSince(types.ID(id)).IsZero()
	})
	if target == 0 {
		if n.stepDown.shouldLog(now) {
			n.log.Warn("a quarantined member asks this leader to step down, but no other voter is connected and caught up; staying leader",
				"member", IDString(from), "its_t0", term, "its_last_index", last, "match", pr.Match, "term", st.GetTerm())
		}
		return http.StatusServiceUnavailable, "no other voter is connected and caught up"
	}
	if !n.stepDown.busy.CompareAndSwap(false, true) {
		return http.StatusAccepted, "already handing leadership over"
	}
	n.log.Warn("a quarantined member asks this leader to step down: its progress for that member may be stale; transferring leadership",
		"member", IDString(from), "its_t0", term, "its_last_index", last, "match", pr.Match, "term", st.GetTerm(), "to", IDString(target))
	go func() {
		defer n.stepDown.busy.Store(false)
		// TransferLeadership gives up after three election timeouts or
		// when the node stops.
		got, err := n.TransferLeadership(context.Background(), target, from)
		if err != nil && got == 0 {
			n.log.Warn("handing leadership over for a quarantined member failed", "to", IDString(target), "err", err)
			return
		}
		n.log.Info("handed leadership over for a quarantined member", "member", IDString(from), "leader", IDString(got))
	}()
	return http.StatusAccepted, "handing leadership to " + IDString(target)
}

// staleProgress reports whether a leader in leaderTerm, whose match for a
// quarantined member is match (hasProgress false: it tracks none), may hold
// stale progress for that member, quarantined with T0 = t0 and a log ending
// at last. A leader elected in a term not above T0 may have been elected
// before the member lost its tail and counted acknowledgements it no longer
// holds; a leader whose match is past the member's log certainly did.
func staleProgress(leaderTerm, match uint64, hasProgress bool, t0, last uint64) bool {
	return leaderTerm <= t0 || (hasProgress && match > last)
}

// stepDownTarget picks the voter (not self, not from, and ok) with the
// highest match among those the leader replicates to and has heard from
// lately, caught up to the commit index; 0 if there is none.
func stepDownTarget(st raft.Status, self, from uint64, ok func(id uint64) bool) uint64 {
	var best, match uint64
	for id := range st.Config.Voters.IDs() {
		if id == self || id == from {
			continue
		}
		pr, found := st.Progress[id]
		if !found || pr.IsLearner || !pr.RecentActive || pr.State != tracker.StateReplicate || pr.Match < st.GetCommit() {
			continue
		}
		if !ok(id) {
			continue
		}
		if best == 0 || pr.Match > match || (pr.Match == match && id < best) {
			best, match = id, pr.Match
		}
	}
	return best
}
