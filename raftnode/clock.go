package raftnode

import (
	"encoding/binary"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// The log's clock. Keys expire by it, not by any node's clock (see package
// expiry), so it has one source: the leader. The leader stamps every entry
// it appends with its own clock (proposals forwarded by followers are
// restamped as they arrive, restamp), and every read index it confirms
// (stampReadIndex). An entry's effective time is the largest stamp of the
// log up to it (logTime), so the log's time never goes back, even when a
// new leader's clock is behind the old one's; it travels in snapshots.
//
// A follower's clock, or its redis's, plays no part: a skewed follower
// applies, expires and reads exactly as the others do.

// nowMs is this node's wall clock in unix milliseconds, shifted by the
// test-only Config.ClockOffset.
func (n *Node) nowMs() int64 { return time.Now().Add(n.cfg.ClockOffset).UnixMilli() }

// leaderTime is the time a leader stamps with: its clock, but never before
// the log's time as far as it has applied.
func (n *Node) leaderTime() int64 { return max(n.nowMs(), n.applier.logTimeNow.Load()) }

// Now is the time this node would stamp with as the leader: its clock,
// never before the log's time as far as it has applied.
func (n *Node) Now() int64 { return n.leaderTime() }

// LogTime is the effective time of the last entry this node applied, in
// unix milliseconds.
func (n *Node) LogTime() int64 { return n.applier.logTimeNow.Load() }

// restamp sets the time of the entries of a proposal this leader is about
// to append (a follower's, forwarded) to its own clock. An entry that no
// longer matches its checksum was damaged on its way here: it is dropped
// (its proposer's client hears that the outcome is unknown), so that the
// log only holds entries as their proposers wrote them, and a node whose
// copy fails its checksum later knows the fault is its own (halt.go).
// restamp reports whether any entry is left.
func (n *Node) restamp(m *raftpb.Message) bool {
	now := n.leaderTime()
	kept := m.Entries[:0]
	for _, e := range m.Entries {
		if e.GetType() != raftpb.EntryNormal {
			kept = append(kept, e)
			continue
		}
		if err := entry.Verify(e.GetData()); err != nil {
			n.log.Error("dropped a proposal damaged on its way from a follower", "from", IDString(m.GetFrom()), "err", err)
			continue
		}
		// The message was just decoded from the wire: its entries are
		// this node's own to change.
		if data, ok := entry.Restamp(e.GetData(), now); ok {
			e.Data = data
		}
		kept = append(kept, e)
	}
	m.Entries = kept
	return len(kept) > 0
}

// A read index request's context is readCtxLen bytes: the requester's round
// id, then room for the time the leader confirmed it at (zero until the
// leader fills it in). A leader of a version that does not stamp echoes the
// zero, and the reader falls back to its own reading of the log's time.
const readCtxLen = 16

func readCtx(rid uint64) []byte {
	b := make([]byte, readCtxLen)
	binary.BigEndian.PutUint64(b, rid)
	return b
}

// readCtxTime returns the round id and the leader's time of a read index
// context, ok false for a context of another form.
func readCtxTime(ctx []byte) (rid uint64, ms int64, ok bool) {
	if len(ctx) != readCtxLen {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(ctx), int64(binary.BigEndian.Uint64(ctx[8:])), true
}

func stampedCtx(ctx []byte, ms int64) []byte {
	b := append([]byte(nil), ctx...)
	binary.BigEndian.PutUint64(b[8:], uint64(ms))
	return b
}

// stampReadIndex fills in the time of the read index answers this leader
// sends: the moment it confirmed them is inside each read's span.
func (n *Node) stampReadIndex(msgs []*raftpb.Message) {
	var now int64
	for _, m := range msgs {
		if m.GetType() != raftpb.MsgReadIndexResp || len(m.Entries) != 1 {
			continue
		}
		if _, ms, ok := readCtxTime(m.Entries[0].GetData()); !ok || ms != 0 {
			continue
		}
		if now == 0 {
			now = n.leaderTime()
		}
		// The entry is raft's own (the request it remembers): it is
		// replaced, not changed.
		e := m.Entries[0]
		m.Entries = []*raftpb.Entry{{Term: e.Term, Index: e.Index, Type: e.Type, Data: stampedCtx(e.GetData(), now)}}
	}
}

// ClockOffset is this node's clock minus the leader's stamp of the last
// entry it applied live: skew plus replication delay.
func (n *Node) ClockOffset() time.Duration {
	return time.Duration(n.applier.clockOffset.Load()) * time.Millisecond
}
