package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// FUNCTION DUMP's payload is the libraries' code in RDB form: for each
// library the opcode FUNCTION2 and its code as an RDB string (LZF-compressed
// when redis saves with rdbcompression), then redis's RDB version (2 bytes)
// and the CRC-64 of everything before (8 bytes). The libraries every node
// holds carry raftproxy's prelude (prelude.go), so FUNCTION DUMP strips it
// and FUNCTION RESTORE adds it: a dump taken here restores into a stock
// redis as the code its client loaded, and one taken from a stock redis
// restores here under the prelude, like FUNCTION LOAD.

const rdbOpcodeFunction2 = 245

// ErrBadPayload reports a FUNCTION RESTORE payload that is not one.
var ErrBadPayload = errors.New("payload version or checksum are wrong")

// WrapFunctionPayload returns payload with every library under the prelude.
func WrapFunctionPayload(payload []byte) ([]byte, error) {
	return mapFunctionPayload(payload, func(code []byte) []byte {
		if _, ok := Unwrap(code); ok {
			return code
		}
		return WrapLibrary(code)
	})
}

// UnwrapFunctionPayload returns payload with the prelude stripped from every
// library.
func UnwrapFunctionPayload(payload []byte) ([]byte, error) {
	return mapFunctionPayload(payload, func(code []byte) []byte {
		u, _ := Unwrap(code)
		return u
	})
}

func mapFunctionPayload(payload []byte, f func([]byte) []byte) ([]byte, error) {
	if len(payload) < 10 {
		return nil, ErrBadPayload
	}
	body, footer := payload[:len(payload)-10], payload[len(payload)-10:]
	if crc := binary.LittleEndian.Uint64(footer[2:]); crc != 0 && crc != rdbCRC(0, payload[:len(payload)-8]) {
		return nil, ErrBadPayload
	}
	out := make([]byte, 0, len(payload)+len(WrapLibrary([]byte("#!lua\n"))))
	for len(body) > 0 {
		if body[0] != rdbOpcodeFunction2 {
			return nil, fmt.Errorf("%w: opcode %d", ErrBadPayload, body[0])
		}
		code, rest, err := rdbString(body[1:])
		if err != nil {
			return nil, err
		}
		body = rest
		code = f(code)
		out = append(out, rdbOpcodeFunction2)
		out = appendRDBLen(out, uint64(len(code)))
		out = append(out, code...)
	}
	out = append(out, footer[:2]...)
	return binary.LittleEndian.AppendUint64(out, rdbCRC(0, out)), nil
}

// rdbString reads one RDB string (rdbGenericLoadStringObject).
func rdbString(b []byte) (s, rest []byte, err error) {
	n, enc, b, err := rdbLen(b)
	if err != nil {
		return nil, nil, err
	}
	if !enc {
		if uint64(len(b)) < n {
			return nil, nil, ErrBadPayload
		}
		return b[:n], b[n:], nil
	}
	switch n {
	case 0, 1, 2: // an integer of 1, 2 or 4 bytes
		size := 1 << n
		if len(b) < size {
			return nil, nil, ErrBadPayload
		}
		var v int64
		switch size {
		case 1:
			v = int64(int8(b[0]))
		case 2:
			v = int64(int16(binary.LittleEndian.Uint16(b)))
		default:
			v = int64(int32(binary.LittleEndian.Uint32(b)))
		}
		return fmt.Appendf(nil, "%d", v), b[size:], nil
	case 3: // LZF
		clen, _, b, err := rdbLen(b)
		if err != nil {
			return nil, nil, err
		}
		ulen, _, b, err := rdbLen(b)
		if err != nil || uint64(len(b)) < clen || ulen > 512<<20 {
			return nil, nil, ErrBadPayload
		}
		out, err := lzfDecompress(b[:clen], int(ulen))
		return out, b[clen:], err
	}
	return nil, nil, ErrBadPayload
}

// rdbLen reads an RDB length; enc says it is a special encoding (its type
// in n) instead.
func rdbLen(b []byte) (n uint64, enc bool, rest []byte, err error) {
	if len(b) == 0 {
		return 0, false, nil, ErrBadPayload
	}
	switch t := b[0] >> 6; {
	case t == 0:
		return uint64(b[0] & 0x3f), false, b[1:], nil
	case t == 1:
		if len(b) < 2 {
			return 0, false, nil, ErrBadPayload
		}
		return uint64(b[0]&0x3f)<<8 | uint64(b[1]), false, b[2:], nil
	case t == 3:
		return uint64(b[0] & 0x3f), true, b[1:], nil
	case b[0] == 0x80:
		if len(b) < 5 {
			return 0, false, nil, ErrBadPayload
		}
		return uint64(binary.BigEndian.Uint32(b[1:])), false, b[5:], nil
	case b[0] == 0x81:
		if len(b) < 9 {
			return 0, false, nil, ErrBadPayload
		}
		return binary.BigEndian.Uint64(b[1:]), false, b[9:], nil
	}
	return 0, false, nil, ErrBadPayload
}

// appendRDBLen appends an RDB length (rdbSaveLen).
func appendRDBLen(b []byte, n uint64) []byte {
	switch {
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return append(b, byte(n>>8)|0x40, byte(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0x80), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0x81), n)
}

// lzfDecompress is liblzf's lzf_decompress: literal runs and back
// references into the output.
func lzfDecompress(in []byte, size int) ([]byte, error) {
	out := make([]byte, 0, size)
	for i := 0; i < len(in); {
		ctrl := int(in[i])
		i++
		if ctrl < 1<<5 {
			n := ctrl + 1
			if i+n > len(in) || len(out)+n > size {
				return nil, ErrBadPayload
			}
			out = append(out, in[i:i+n]...)
			i += n
			continue
		}
		n := ctrl >> 5
		ref := len(out) - (ctrl&0x1f)<<8 - 1
		if n == 7 {
			if i >= len(in) {
				return nil, ErrBadPayload
			}
			n += int(in[i])
			i++
		}
		if i >= len(in) {
			return nil, ErrBadPayload
		}
		ref -= int(in[i])
		i++
		n += 2
		if ref < 0 || len(out)+n > size {
			return nil, ErrBadPayload
		}
		for k := 0; k < n; k++ {
			out = append(out, out[ref+k])
		}
	}
	if len(out) != size {
		return nil, ErrBadPayload
	}
	return out, nil
}
