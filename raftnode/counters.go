package raftnode

import "sync/atomic"

// Counters count the work of one node since it started. They show how well
// requests are batched: requests per entry, entries per Ready (one WAL
// write and fsync each), commands per apply round trip, reads per ReadIndex
// round.
type Counters struct {
	Requests      atomic.Uint64 // client requests proposed by this node
	Batches       atomic.Uint64 // log entries (request batches) proposed by this node
	Readies       atomic.Uint64 // Ready structs handled
	PersistRounds atomic.Uint64 // WAL saves that wrote entries or state (each one fsync)
	Entries       atomic.Uint64 // entries persisted to the WAL
	Applied       atomic.Uint64 // commands applied to the state machine
	ApplyRounds   atomic.Uint64 // Apply calls (pipelined round trips to redis)
	Reads         atomic.Uint64 // linearizable reads started
	ReadRounds    atomic.Uint64 // ReadIndex rounds
	Killed        atomic.Uint64 // killable requests this node stopped (killed, or redis shut down)
	Rebuilt       atomic.Uint64 // rebuilds of redis without a killed request that had run here
	Resent        atomic.Uint64 // batches proposed again after a leader change (proposer.resend)
}

// Counters returns the node's counters.
func (n *Node) Counters() *Counters { return &n.counters }
