// Package entry encodes the data of one Raft log entry: a batch of client
// requests proposed together by one node.
//
// The encoding is a compact, versioned binary form. Decoding does not copy
// arguments: they alias the entry's data, which raft keeps alive for as long
// as the entry is in memory.
package entry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// version is the first byte of every encoded entry; bump it when the layout
// changes so old nodes refuse new entries instead of misreading them.
// Version 2 added transactions. Version 3 added watches (Op, Watch) and the
// reply protocol: a request's database number is encoded as db<<1 | resp3,
// so the protocol costs no extra byte (databases 0-63 still fit in one).
// Version 4 adds Killable: the database field is db<<3 | killable<<1 |
// resp3 (databases 0-15 in one byte). Version 5 ends with a CRC-32C
// (Castagnoli, big-endian) of every byte before it, computed where the
// entry is made, so a copy damaged anywhere on its way to a node's applier
// (the network, memory, a disk the WAL's own checksum trusted) is told
// from the proposer's. Version 6 adds OpRoute. Version 7 adds Asking: the
// database field is db<<4 | asking<<3 | killable<<1 | resp3. Version 8
// keeps version 7's layout and lets OpRoute place a shard on some of the
// nodes (slotmap.Shard.Placed), and a sync-move drop the stale copies of
// moves a shard was made with (slotmap.Change.DropCopies), which a build
// that decodes only 7 would apply differently. Older versions decode unchanged (versions 1 and 2 as
// RESP2 requests).
const version = 8

// checksummed is the first version that ends with a checksum.
const checksummed = 5

// Version is the newest entry format this build writes and decodes.
const Version = version

// MinFormat is the oldest format this build writes (Entry.Format): a
// cluster is kept at the newest format every member decodes, and members
// that do not say decode format 4.
const MinFormat = 4

// Op is what a request does.
type Op uint8

const (
	// OpCommand runs Args.
	OpCommand Op = iota
	// OpTx runs Tx's commands between MULTI and EXEC, provided the keys of
	// the watch Watch (if not 0) were not written since they were watched.
	OpTx
	// OpWatch adds the keys in Args (in DB) to the watch Watch.
	OpWatch
	// OpUnwatch forgets the watch Watch.
	OpUnwatch
	// OpNotice is not run by the state machine: every node hands Args to
	// its proxy when it applies the request (CLIENT PAUSE, for one), in log
	// order. Version 4 added it.
	OpNotice
	// OpRoute changes the cluster's routing data (which shard owns which
	// hash slots): Args holds one slotmap.Change, encoded as JSON, which
	// the apply layer applies in log order. Version 6 added it.
	OpRoute
)

// RouteFormat is the first format with OpRoute: a cluster is sharded only
// once every member decodes it.
const RouteFormat = 6

// MoveFormat is the first format with Asking, and with the move steps of
// OpRoute that live slot moves log: slots move only once every member
// decodes it.
const MoveFormat = 7

// PlacedFormat is the first format whose routing changes may place a shard
// on some of the nodes (RAFT.SHARD ADD <node-id>...): a node of an older
// build would take such a shard for one every node holds, and join it.
const PlacedFormat = 8

// Request is one client command with the database it runs in, a
// transaction, or a change to a watch (WATCH's bookkeeping, which every
// node's applier keeps from the log alone; see raftnode).
//
// RESP3 says the proposing client speaks RESP3 (HELLO 3), so the node that
// replies must run the request on a RESP3 connection. Every node switches
// its apply connection alike; the protocol changes replies, never data.
//
// Killable (1-3, 0 for none) marks a request that may run without bound on
// the state machine (a script): it can be killed until it is settled (see
// Control). The value tells the proposer's caller which command kills it;
// the log only needs it to be the same on every node.
//
// Asking says the client sent ASKING before it (Redis Cluster's answer to
// -ASK): a shard importing the request's slot serves it only then. Formats
// before MoveFormat do not carry it.
type Request struct {
	DB       int
	Op       Op
	Args     [][]byte
	Tx       [][][]byte
	Watch    uint64
	RESP3    bool
	Killable uint8
	Asking   bool
}

// MaxKillable is the largest Killable value the encoding holds.
const MaxKillable = 3

// dbField is the encoding of a request's database, kind, protocol and
// ASKING in format v.
func (r *Request) dbField(v byte) uint64 {
	f := uint64(r.Killable&MaxKillable) << 1
	if r.RESP3 {
		f |= 1
	}
	if v < MoveFormat {
		return f | uint64(r.DB)<<3
	}
	if r.Asking {
		f |= 1 << 3
	}
	return f | uint64(r.DB)<<4
}

// isTx reports whether r is encoded as a transaction; a request built with
// Tx but no Op is one.
func (r *Request) isTx() bool { return r.Op == OpTx || (r.Op == OpCommand && len(r.Tx) > 0) }

// Entry is a batch of requests proposed by one node.
//
// Node and Seq identify the batch: Seq increases strictly with every batch a
// node proposes, which lets every node detect, deterministically, a batch that
// reached the log out of order (see raftnode's applier). TimeMs is the
// proposer's wall clock in milliseconds when the batch was made.
//
// Format is the format Marshal writes, MinFormat to Version (0 for
// Version), and the format Unmarshal read.
type Entry struct {
	Node   uint64
	Seq    uint64
	TimeMs int64
	Reqs   []Request
	Format byte
}

// format is the format e is written in.
func (e *Entry) format() byte {
	if e.Format == 0 {
		return version
	}
	return min(max(e.Format, MinFormat), version)
}

// ErrCorrupt reports data that is not a valid entry.
var ErrCorrupt = errors.New("corrupt log entry")

// NewerFormat reports whether data is an entry in a format newer than this
// build decodes (Unmarshal's ErrNewerFormat), without decoding it.
func NewerFormat(data []byte) bool {
	return len(data) > 0 && data[0] > version && !isControlMark(data[0])
}

// ErrNewerFormat: the entry was written in a format newer than this build
// decodes, by an upgraded member. Unlike a corrupt entry, which every node
// holds alike and skips alike, it must not be skipped: the nodes that can
// decode it apply it.
var ErrNewerFormat = errors.New("log entry in a newer format than this build decodes")

// ErrChecksum: the entry's bytes are not those its proposer wrote. Unlike
// a corrupt entry, which every node holds alike, this copy differs from
// others that are whole, so the node must neither skip nor apply it.
var ErrChecksum = errors.New("log entry does not match its checksum")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkSum verifies the checksum of data (an entry of version v) and
// returns data without it.
func checkSum(data []byte, v byte) ([]byte, error) {
	if v < checksummed {
		return data, nil
	}
	if len(data) < 1+crc32.Size {
		return nil, fmt.Errorf("%w: %d bytes, too short to hold one", ErrChecksum, len(data))
	}
	body := data[:len(data)-crc32.Size]
	want := binary.BigEndian.Uint32(data[len(body):])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return nil, fmt.Errorf("%w: crc32c %08x, the entry says %08x", ErrChecksum, got, want)
	}
	return body, nil
}

// Verify checks the checksum of data, an entry of version 5 or later: it
// returns an error wrapping ErrChecksum when data was damaged, and nil for
// any other data (entries of older versions carry no checksum, nor do
// control entries made for them).
func Verify(data []byte) error {
	switch {
	case len(data) == 0 || data[0] == controlMark || NewerFormat(data):
		return nil
	case data[0] == controlMarkSum:
		_, err := checkSum(data, checksummed)
		return err
	}
	_, err := checkSum(data, data[0])
	return err
}

// Size returns the length of the encoding of e: an entry stays in memory
// (raft's log) until a snapshot, so its buffer is allocated exactly.
func (e *Entry) Size() int {
	n := 1 + uvarintLen(e.Node) + uvarintLen(e.Seq) + varintLen(e.TimeMs) + uvarintLen(uint64(len(e.Reqs)))
	v := e.format()
	for i := range e.Reqs {
		r := &e.Reqs[i]
		n += uvarintLen(r.dbField(v))
		switch {
		case r.isTx():
			n += 2 + uvarintLen(r.Watch) + uvarintLen(uint64(len(r.Tx)))
			for _, c := range r.Tx {
				n += argsSize(c)
			}
		case r.Op == OpWatch:
			n += 2 + uvarintLen(r.Watch) + argsSize(r.Args)
		case r.Op == OpUnwatch:
			n += 2 + uvarintLen(r.Watch)
		case r.Op == OpNotice || r.Op == OpRoute:
			n += 2 + argsSize(r.Args)
		default:
			n += argsSize(r.Args)
		}
	}
	if e.format() >= checksummed {
		n += crc32.Size
	}
	return n
}

func argsSize(args [][]byte) int {
	n := uvarintLen(uint64(len(args)))
	for _, a := range args {
		n += uvarintLen(uint64(len(a))) + len(a)
	}
	return n
}

func uvarintLen(x uint64) int { return max(1, (bits.Len64(x)+6)/7) }

// varintLen is the length of binary.AppendVarint's zig-zag encoding.
func varintLen(x int64) int { return uvarintLen(uint64(x<<1) ^ uint64(x>>63)) }

// Marshal appends the encoding of e to dst.
func (e *Entry) Marshal(dst []byte) []byte {
	start := len(dst)
	v := e.format()
	dst = append(dst, v)
	dst = binary.AppendUvarint(dst, e.Node)
	dst = binary.AppendUvarint(dst, e.Seq)
	dst = binary.AppendVarint(dst, e.TimeMs)
	dst = binary.AppendUvarint(dst, uint64(len(e.Reqs)))
	for i := range e.Reqs {
		r := &e.Reqs[i]
		dst = binary.AppendUvarint(dst, r.dbField(v))
		if !r.isTx() && r.Op != OpWatch && r.Op != OpUnwatch && r.Op != OpNotice && r.Op != OpRoute {
			dst = appendArgs(dst, r.Args)
			continue
		}
		// A command always has a name, so zero arguments cannot be a
		// command: it marks another kind of request, given next.
		dst = binary.AppendUvarint(dst, 0)
		switch {
		case r.isTx():
			dst = binary.AppendUvarint(dst, uint64(OpTx))
			dst = binary.AppendUvarint(dst, r.Watch)
			dst = binary.AppendUvarint(dst, uint64(len(r.Tx)))
			for _, c := range r.Tx {
				dst = appendArgs(dst, c)
			}
		case r.Op == OpWatch:
			dst = binary.AppendUvarint(dst, uint64(OpWatch))
			dst = binary.AppendUvarint(dst, r.Watch)
			dst = appendArgs(dst, r.Args)
		case r.Op == OpNotice || r.Op == OpRoute:
			dst = binary.AppendUvarint(dst, uint64(r.Op))
			dst = appendArgs(dst, r.Args)
		default:
			dst = binary.AppendUvarint(dst, uint64(OpUnwatch))
			dst = binary.AppendUvarint(dst, r.Watch)
		}
	}
	if e.format() >= checksummed {
		dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	}
	return dst
}

func appendArgs(dst []byte, args [][]byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(args)))
	for _, a := range args {
		dst = binary.AppendUvarint(dst, uint64(len(a)))
		dst = append(dst, a...)
	}
	return dst
}

// Unmarshal decodes data. The returned arguments alias data.
func Unmarshal(data []byte) (Entry, error) {
	d := decoder{b: data}
	var e Entry
	v := d.byte()
	if isControlMark(v) {
		return e, fmt.Errorf("%w: a control entry, not a batch", ErrCorrupt)
	}
	if NewerFormat(data) {
		return e, fmt.Errorf("%w: format %d, this build decodes 1-%d", ErrNewerFormat, v, version)
	}
	if v < 1 {
		return e, fmt.Errorf("%w: unknown version %d", ErrCorrupt, v)
	}
	body, err := checkSum(data, v)
	if err != nil {
		return e, err
	}
	d.b = body[1:]
	e.Format = v
	e.Node = d.uvarint()
	e.Seq = d.uvarint()
	e.TimeMs = d.varint()
	n := d.count()
	if d.err != nil {
		return e, d.err
	}
	e.Reqs = make([]Request, n)
	// Most requests are a command of a few arguments (SET key value).
	d.argsCap = int(min(n, 1024)) * 3
	for i := range e.Reqs {
		r := &e.Reqs[i]
		if db := d.uvarint(); v >= MoveFormat {
			r.DB, r.Asking, r.Killable, r.RESP3 = int(db>>4), db>>3&1 == 1, uint8(db>>1&MaxKillable), db&1 == 1
		} else if v >= 4 {
			r.DB, r.Killable, r.RESP3 = int(db>>3), uint8(db>>1&MaxKillable), db&1 == 1
		} else if v >= 3 {
			r.DB, r.RESP3 = int(db>>1), db&1 == 1
		} else {
			r.DB = int(db)
		}
		r.Args = d.argList()
		if len(r.Args) == 0 && d.err == nil && v < 2 {
			d.err = fmt.Errorf("%w: empty command", ErrCorrupt)
		}
		if len(r.Args) == 0 && d.err == nil {
			r.Op = OpTx
			if v >= 3 {
				r.Op = Op(d.uvarint())
				if r.Op == OpRoute && v < RouteFormat {
					d.err = fmt.Errorf("%w: a route request in format %d", ErrCorrupt, v)
				}
				if r.Op != OpNotice && r.Op != OpRoute {
					r.Watch = d.uvarint()
				}
			}
			switch r.Op {
			case OpTx:
				d.tx(r, v)
			case OpWatch:
				if r.Args = d.argList(); len(r.Args) == 0 && d.err == nil {
					d.err = fmt.Errorf("%w: watch without keys", ErrCorrupt)
				}
			case OpUnwatch:
			case OpNotice:
				if r.Args = d.argList(); len(r.Args) == 0 && d.err == nil {
					d.err = fmt.Errorf("%w: notice without arguments", ErrCorrupt)
				}
			case OpRoute:
				if r.Args = d.argList(); len(r.Args) != 1 && d.err == nil {
					d.err = fmt.Errorf("%w: a route request holds one change", ErrCorrupt)
				}
			default:
				if d.err == nil {
					d.err = fmt.Errorf("%w: unknown request kind %d", ErrCorrupt, r.Op)
				}
			}
		}
		if d.err != nil {
			return e, d.err
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return e, d.err
}

// tx reads a transaction's commands. Before version 3 a transaction has at
// least one command; since, one with a watch may have none (WATCH, MULTI,
// EXEC still tells whether the keys were written).
func (d *decoder) tx(r *Request, v byte) {
	nc := d.count()
	if nc == 0 && d.err == nil && (v < 3 || r.Watch == 0) {
		d.err = fmt.Errorf("%w: empty transaction", ErrCorrupt)
	}
	r.Tx = make([][][]byte, nc)
	for j := range r.Tx {
		if r.Tx[j] = d.argList(); len(r.Tx[j]) == 0 && d.err == nil {
			d.err = fmt.Errorf("%w: empty command in a transaction", ErrCorrupt)
		}
	}
}

type decoder struct {
	b   []byte
	err error
	// args is where argument lists are cut from: one allocation serves
	// many requests' lists (a list keeps the chunk it was cut from).
	args    [][]byte
	argsCap int // the size of the next chunk, at least
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("version")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and bounds it by the bytes left, so a corrupt
// count cannot make Unmarshal allocate more than the entry's own size.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) argList() [][]byte {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	if cap(d.args)-len(d.args) < n {
		d.args = make([][]byte, 0, max(n, d.argsCap))
	}
	start := len(d.args)
	d.args = d.args[:start+n]
	args := d.args[start : start+n : start+n]
	for i := range args {
		args[i] = d.bytes()
	}
	return args
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("argument")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// Restamp returns the encoding of an entry with its TimeMs replaced by ms,
// and true; data itself is not changed. It returns false for data that is
// not an Entry (a control entry, corrupt bytes), which keeps its time.
func Restamp(data []byte, ms int64) ([]byte, bool) {
	d := decoder{b: data}
	v := d.byte()
	if v < 1 || v > version {
		return nil, false
	}
	body, err := checkSum(data, v)
	if err != nil {
		// Restamping would give damaged bytes a valid checksum.
		return nil, false
	}
	d.b = body[1:]
	node := d.uvarint()
	seq := d.uvarint()
	d.varint()
	if d.err != nil {
		return nil, false
	}
	rest := d.b
	out := make([]byte, 0, len(rest)+1+uvarintLen(node)+uvarintLen(seq)+varintLen(ms)+crc32.Size)
	out = append(out, v)
	out = binary.AppendUvarint(out, node)
	out = binary.AppendUvarint(out, seq)
	out = binary.AppendVarint(out, ms)
	out = append(out, rest...)
	if v >= checksummed {
		out = binary.BigEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	}
	return out, true
}
