package entry

import (
	"encoding/binary"
	"fmt"
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
// unknown version rather than misreading it).
const controlMark = 0xC0

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
type Control struct {
	Op    ControlOp
	Index uint64
	Req   uint64
	Node  uint64
}

// IsControl reports whether data is a control entry.
func IsControl(data []byte) bool { return len(data) > 0 && data[0] == controlMark }

// Marshal returns the encoding of c.
func (c Control) Marshal() []byte {
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64)
	b = append(b, controlMark, byte(c.Op))
	b = binary.AppendUvarint(b, c.Index)
	b = binary.AppendUvarint(b, c.Req)
	return binary.AppendUvarint(b, c.Node)
}

// UnmarshalControl decodes a control entry.
func UnmarshalControl(data []byte) (Control, error) {
	var c Control
	if !IsControl(data) || len(data) < 2 {
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
