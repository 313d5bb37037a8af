package entry

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A control entry is not a client request but a decision about earlier
// killable requests (Request.Killable), taken through the log so that every
// node decides alike:
//
//   - Settle says that the node proposing it ran every killable request in
//     the entries up to Index to its end: from then on none of them can be
//     killed, and their effects may be shown to clients.
//   - Abort kills request Req of the entry at Index, unless a Settle
//     covering that entry came before it in the log. A killed request is as
//     if it never ran, on every node.
//
// Its first byte is controlMark, which no version of Entry uses, so nodes
// tell the two kinds apart by one byte (and older nodes refuse it as an
// unknown version rather than misreading it). From entry format 5 on, it is
// controlMarkSum and the entry ends with a CRC-32C like a batch's (builds
// before format 5 take it for a newer format and halt at it).
const (
	controlMark    = 0xC0
	controlMarkSum = 0xC1
)

func isControlMark(b byte) bool { return b == controlMark || b == controlMarkSum }

// ControlOp is what a control entry decides.
type ControlOp uint8

const (
	// ControlSettle settles every killable request in the entries at or
	// below Index that no earlier Abort killed.
	ControlSettle ControlOp = 1
	// ControlAbort kills request Req of the entry at Index.
	ControlAbort ControlOp = 2
)

// Control is a control entry. Node is the proposing node (for logs).
// Format is the entry format it is written in, as Entry.Format.
type Control struct {
	Op     ControlOp
	Index  uint64
	Req    uint64
	Node   uint64
	Format byte
}

// IsControl reports whether data is a control entry.
func IsControl(data []byte) bool { return len(data) > 0 && isControlMark(data[0]) }

// Marshal returns the encoding of c.
func (c Control) Marshal() []byte {
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+crc32.Size)
	sum := (&Entry{Format: c.Format}).format() >= checksummed
	mark := byte(controlMark)
	if sum {
		mark = controlMarkSum
	}
	b = append(b, mark, byte(c.Op))
	b = binary.AppendUvarint(b, c.Index)
	b = binary.AppendUvarint(b, c.Req)
	b = binary.AppendUvarint(b, c.Node)
	if sum {
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	}
	return b
}

// UnmarshalControl decodes a control entry.
func UnmarshalControl(data []byte) (Control, error) {
	var c Control
	if !IsControl(data) {
		return c, fmt.Errorf("%w: not a control entry", ErrCorrupt)
	}
	c.Format = 4
	if data[0] == controlMarkSum {
		body, err := checkSum(data, checksummed)
		if err != nil {
			return c, err
		}
		data, c.Format = body, checksummed
	}
	if len(data) < 2 {
		return c, fmt.Errorf("%w: not a control entry", ErrCorrupt)
	}
	c.Op = ControlOp(data[1])
	if c.Op != ControlSettle && c.Op != ControlAbort {
		return c, fmt.Errorf("%w: unknown control op %d", ErrCorrupt, c.Op)
	}
	d := decoder{b: data[2:]}
	c.Index = d.uvarint()
	c.Req = d.uvarint()
	c.Node = d.uvarint()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return c, d.err
}
