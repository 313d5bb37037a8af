package proxy

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/raftproxy/raftproxy/pubsub"
	"github.com/raftproxy/raftproxy/resp"
)

// Client-side caching (CLIENT TRACKING), kept by the proxy: it remembers
// the keys its tracking clients read, and every write applied on this node,
// whichever node's client proposed it, invalidates them (Server.written,
// following the apply layer's events).
// As in redis: a key is forgotten for a client once it was invalidated (the
// next read tracks it again); BCAST clients get every key under their
// prefixes; OPTIN and OPTOUT follow CLIENT CACHING; NOLOOP skips the
// client's own writes (known by the tag its proposals carry); FLUSHALL,
// FLUSHDB and a reload of redis invalidate everything (null). Invalidations
// go to the client itself in RESP3, or to its REDIRECT connection, as a
// push in RESP3 or, in RESP2, as a message of __redis__:invalidate when
// that connection subscribes to it.
//
// A client's invalidations are written after the reply being written: a
// read that ran before a write must reach the client before that write's
// invalidation. While one of its reads of a key is in flight, a client
// stays registered for the key after an invalidation, so a read that ran
// after the write still has its key tracked.

const trackingChannel = "__redis__:invalidate"

// trackState is a connection's tracking options (the reader's).
type trackState struct {
	on, bcast, optin, optout, noloop bool
	redirect                         uint64
	prefixes                         []string
	// caching is CLIENT CACHING's answer for the next command: 1 yes,
	// -1 no, 0 not given.
	caching int8
}

// trackClient is what the tracker needs of a tracking connection.
type trackClient struct {
	id       uint64
	bcast    bool
	noloop   bool
	redirect uint64
	prefixes []string
	inflight map[string]int // keys with reads in flight
	// sub is where invalidations go: the client's own queue, or that of
	// its REDIRECT connection (target); they are written after the reply
	// being written.
	sub    *pubsub.Subscriber
	target *conn
}

// tracker is the node's invalidation table.
type tracker struct {
	mu      sync.Mutex
	n       atomic.Int32 // tracking clients: Written does nothing while 0
	clients map[uint64]*trackClient
	keys    map[string]map[uint64]struct{}
}

func (t *tracker) register(tc *trackClient) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.clients == nil {
		t.clients, t.keys = map[uint64]*trackClient{}, map[string]map[uint64]struct{}{}
	}
	if _, ok := t.clients[tc.id]; !ok {
		t.n.Add(1)
	}
	t.clients[tc.id] = tc
}

func (t *tracker) unregister(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.clients[id]; ok {
		delete(t.clients, id)
		t.n.Add(-1)
	}
	for k, ids := range t.keys {
		delete(ids, id)
		if len(ids) == 0 {
			delete(t.keys, k)
		}
	}
}

// reading notes that client id reads keys (a read in flight); done ends it.
func (t *tracker) reading(id uint64, keys [][]byte) (done func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tc := t.clients[id]
	if tc == nil || tc.bcast {
		return func() {}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = string(k)
		ids := t.keys[names[i]]
		if ids == nil {
			ids = map[uint64]struct{}{}
			t.keys[names[i]] = ids
		}
		ids[id] = struct{}{}
		tc.inflight[names[i]]++
	}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, k := range names {
			if tc.inflight[k]--; tc.inflight[k] <= 0 {
				delete(tc.inflight, k)
			}
		}
	}
}

// invalidate sends the invalidations of a write of keys (all: every key)
// by a proposal tagged tag (0: another node's).
func (s *Server) invalidate(keys [][]byte, all bool, tag uint64) {
	t := &s.tracker
	if t.n.Load() == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if all {
		for _, tc := range t.clients {
			s.sendInvalidation(tc, nil, true)
		}
		clear(t.keys)
		return
	}
	per := map[uint64][][]byte{}
	for _, k := range keys {
		for id := range t.keys[string(k)] {
			per[id] = append(per[id], k)
		}
	}
	for id, ks := range per {
		tc := t.clients[id]
		if tc == nil {
			continue
		}
		for _, k := range ks {
			if tc.inflight[string(k)] == 0 {
				ids := t.keys[string(k)]
				delete(ids, id)
				if len(ids) == 0 {
					delete(t.keys, string(k))
				}
			}
		}
		if tc.noloop && tag == id {
			continue
		}
		s.sendInvalidation(tc, ks, false)
	}
	for _, tc := range t.clients {
		if !tc.bcast || (tc.noloop && tag == tc.id) {
			continue
		}
		var ks [][]byte
		for _, k := range keys {
			for _, p := range tc.prefixes {
				if bytes.HasPrefix(k, []byte(p)) {
					ks = append(ks, k)
					break
				}
			}
		}
		if len(ks) > 0 {
			s.sendInvalidation(tc, ks, false)
		}
	}
}

// sendInvalidation delivers one invalidation (null: every key) to a
// tracking client or its redirect connection.
func (s *Server) sendInvalidation(tc *trackClient, keys [][]byte, null bool) {
	resp3 := tc.sub.RESP3.Load()
	var f []byte
	if resp3 {
		f = append(f, ">2\r\n"...)
		f = resp.AppendBulkString(f, "invalidate")
	} else {
		if tc.target == nil || !s.broker.Subscribed(trackingChannel, tc.sub) {
			return // a RESP2 client gets its invalidations only by REDIRECT
		}
		f = resp.AppendArrayLen(f, 3)
		f = resp.AppendBulkString(f, "message")
		f = resp.AppendBulkString(f, trackingChannel)
	}
	switch {
	case null && resp3:
		f = append(f, "_\r\n"...)
	case null:
		f = append(f, "$-1\r\n"...)
	default:
		f = resp.AppendArrayLen(f, len(keys))
		for _, k := range keys {
			f = resp.AppendBulk(f, k)
		}
	}
	tc.sub.PushLate(f)
}

// clientTracking handles CLIENT TRACKING ON|OFF [options].
func (c *conn) clientTracking(args [][]byte) *op {
	on := strings.EqualFold(string(args[2]), "on")
	if !on && !strings.EqualFold(string(args[2]), "off") {
		return errReply(errSyntax)
	}
	var next trackState
	next.on = on
	for i := 3; i < len(args); i++ {
		switch strings.ToLower(string(args[i])) {
		case "redirect":
			if i+1 >= len(args) {
				return errReply(errSyntax)
			}
			i++
			id, err := strconv.ParseUint(string(args[i]), 10, 64)
			if err != nil {
				return errReply("ERR Invalid client ID")
			}
			if id != c.id && c.s.byID(id) == nil {
				return errReply("ERR The client ID you want redirect to does not exist")
			}
			next.redirect = id
		case "bcast":
			next.bcast = true
		case "optin":
			next.optin = true
		case "optout":
			next.optout = true
		case "noloop":
			next.noloop = true
		case "prefix":
			if i+1 >= len(args) {
				return errReply(errSyntax)
			}
			i++
			next.prefixes = append(next.prefixes, string(args[i]))
		default:
			return errReply(errSyntax)
		}
	}
	if !on {
		c.trackingOff()
		return okReply()
	}
	cur := c.tr
	switch {
	case cur.on && cur.bcast != next.bcast:
		return errReply("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
	case next.optin && next.optout:
		return errReply("ERR You can't specify both OPTIN mode and OPTOUT mode")
	case (next.optin || next.optout) && next.bcast:
		return errReply("ERR OPTIN and OPTOUT are not compatible with BCAST")
	case cur.on && ((next.optin && cur.optout) || (next.optout && cur.optin)):
		return errReply("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")
	case len(next.prefixes) > 0 && !next.bcast:
		return errReply("ERR PREFIX option requires BCAST mode to be enabled")
	}
	if next.bcast && len(next.prefixes) == 0 {
		next.prefixes = []string{""}
	}
	// Redis's rule: no new prefix may be a prefix of an existing or of
	// another new one (or have one as its prefix).
	for i, p := range next.prefixes {
		if cur.on {
			for _, q := range cur.prefixes {
				if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
					return errReply(fmt.Sprintf("ERR Prefix '%s' overlaps with an existing prefix '%s'. Prefixes for a single client must not overlap.", p, q))
				}
			}
		}
		for _, q := range next.prefixes[i+1:] {
			if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
				return errReply(fmt.Sprintf("ERR Prefix '%s' overlaps with another provided prefix '%s'. Prefixes for a single client must not overlap.", p, q))
			}
		}
	}
	if cur.on {
		next.prefixes = append(slices.Clone(cur.prefixes), next.prefixes...)
	}
	tc := &trackClient{id: c.id, bcast: next.bcast, noloop: next.noloop, redirect: next.redirect,
		prefixes: next.prefixes, inflight: map[string]int{}}
	if next.redirect != 0 && next.redirect != c.id {
		tc.target = c.s.byID(next.redirect)
		if tc.target == nil {
			return errReply("ERR The client ID you want redirect to does not exist")
		}
		tc.sub = tc.target.subscriber()
	} else {
		tc.sub = c.subscriber()
	}
	next.caching = 0
	c.tr = next
	c.s.tracker.register(tc)
	c.info.setTracking(next.on, next.redirect, next.bcast)
	return okReply()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// trackingOff ends tracking (CLIENT TRACKING OFF, RESET, a closed
// connection).
func (c *conn) trackingOff() {
	if !c.tr.on {
		return
	}
	c.tr = trackState{}
	c.s.tracker.unregister(c.id)
	c.info.setTracking(false, 0, false)
}

// clientCaching handles CLIENT CACHING YES|NO.
func (c *conn) clientCaching(args [][]byte) *op {
	yes := strings.EqualFold(string(args[2]), "yes")
	if !yes && !strings.EqualFold(string(args[2]), "no") {
		return errReply(errSyntax)
	}
	switch {
	case !c.tr.on || (!c.tr.optin && !c.tr.optout):
		return errReply("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
	case yes && !c.tr.optin:
		return errReply("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
	case !yes && !c.tr.optout:
		return errReply("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
	}
	c.tr.caching = map[bool]int8{true: 1, false: -1}[yes]
	return okReply()
}

// trackingInfo is CLIENT TRACKINGINFO.
func (c *conn) trackingInfo() []byte {
	var flags []string
	switch {
	case !c.tr.on:
		flags = []string{"off"}
	default:
		flags = append(flags, "on")
		if c.tr.bcast {
			flags = append(flags, "bcast")
		}
		if c.tr.optin {
			flags = append(flags, "optin")
			if c.tr.caching > 0 {
				flags = append(flags, "caching-yes")
			}
		}
		if c.tr.optout {
			flags = append(flags, "optout")
			if c.tr.caching < 0 {
				flags = append(flags, "caching-no")
			}
		}
		if c.tr.noloop {
			flags = append(flags, "noloop")
		}
		if c.tr.redirect != 0 && c.s.byID(c.tr.redirect) == nil {
			flags = append(flags, "broken_redirect")
		}
	}
	b := resp.AppendMapLen(nil, 3, c.client.resp3)
	b = resp.AppendBulkString(b, "flags")
	b = resp.AppendSetLen(b, len(flags), c.client.resp3)
	for _, f := range flags {
		b = resp.AppendBulkString(b, f)
	}
	b = resp.AppendBulkString(b, "redirect")
	b = resp.AppendInt(b, c.getRedir())
	b = resp.AppendBulkString(b, "prefixes")
	b = resp.AppendArrayLen(b, len(c.tr.prefixes)*b2i(c.tr.bcast))
	if c.tr.bcast {
		for _, p := range c.tr.prefixes {
			b = resp.AppendBulkString(b, p)
		}
	}
	return b
}

// getRedir is CLIENT GETREDIR: -1 when not tracking, 0 without REDIRECT.
func (c *conn) getRedir() int64 {
	if !c.tr.on {
		return -1
	}
	return int64(c.tr.redirect)
}

// trackRead starts tracking a read's keys, as the client's mode and CLIENT
// CACHING say; the returned function (nil: nothing tracked) ends the read.
func (c *conn) trackRead(args [][]byte) func() {
	caching := c.tr.caching
	c.tr.caching = 0
	if !c.tr.on || c.tr.bcast || (c.tr.optin && caching <= 0) || (c.tr.optout && caching < 0) {
		return nil
	}
	keys := c.s.table.accessedKeys(args)
	if len(keys) == 0 {
		return nil
	}
	return c.s.tracker.reading(c.id, keys)
}
