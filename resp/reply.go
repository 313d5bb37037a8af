package resp

import (
	"bytes"
	"io"
	"strconv"
)

// maxDepth bounds aggregate nesting in Parse, which recurses and decodes
// only the replies the proxy reads itself. ReadReply and Skip, which relay
// and step over replies, take any depth: redis answers a script returning a
// table that holds itself with ~8000 levels, and that reply must reach the
// client byte for byte.
const maxDepth = 512

var (
	errCRLF      = protoErr("expected CRLF")
	errReplyLine = protoErr("reply line too long")
	errDepth     = protoErr("reply nesting too deep")
	errInteger   = protoErr("invalid integer")
	errBigNumber = protoErr("invalid big number")
	errDouble    = protoErr("invalid double")
	errBoolean   = protoErr("invalid boolean")
	errNull      = protoErr("invalid null")
)

func errKind(c byte) error {
	return protoErr("invalid reply type '" + string([]byte{c}) + "'")
}

func validKind(c byte) bool {
	switch c {
	case '+', '-', ':', '$', '*', '_', '#', ',', '(', '!', '=', '%', '~', '>', '|':
		return true
	}
	return false
}

// lineLimit is the longest accepted line body. Status, error and big number
// texts come from the server and may be long (e.g. Lua error messages), but
// a length header or number never legitimately is.
func lineLimit(kind byte) int {
	switch kind {
	case '+', '-', '(':
		return MaxBulkLen
	}
	return MaxInlineLen
}

// checkLine validates one reply line, from its type byte through "\r\n".
// For bulk types it returns the payload length, for aggregates the number
// of values that follow (a map's pairs count twice, an attribute also
// precedes the value it annotates); -1 is null. Sharing it between ReadReply
// and Parse keeps their notions of "valid" identical.
// maxReplyElems bounds aggregates in replies. It is far above the command
// limit because a server legitimately answers KEYS or SCAN on a big database
// with huge arrays; nothing is allocated from a declared count.
const maxReplyElems = 1<<31 - 1

func checkLine(line []byte) (int, error) {
	n := len(line)
	if n < 3 || line[n-2] != '\r' {
		return 0, errCRLF
	}
	kind, body := line[0], line[1:n-2]
	if len(body) > lineLimit(kind) {
		return 0, errReplyLine
	}
	switch kind {
	case '+', '-':
	case ':':
		if _, ok := parseInt(body); !ok {
			return 0, errInteger
		}
	case '(':
		digits := body
		if len(digits) > 0 && digits[0] == '-' {
			digits = digits[1:]
		}
		if len(digits) == 0 || !allDigits(digits) {
			return 0, errBigNumber
		}
	case ',':
		if !validDouble(body) {
			return 0, errDouble
		}
	case '#':
		if len(body) != 1 || (body[0] != 't' && body[0] != 'f') {
			return 0, errBoolean
		}
	case '_':
		if len(body) != 0 {
			return 0, errNull
		}
	case '$', '=', '!':
		l, ok := parseInt(body)
		if !ok || l < -1 || l > MaxBulkLen || (l == -1 && kind != '$') {
			return 0, errBulkLen
		}
		return int(l), nil
	case '*', '~', '%', '>', '|':
		l, ok := parseInt(body)
		if !ok || l < -1 || l > maxReplyElems || (l == -1 && kind != '*') {
			return 0, errMultibulkLen
		}
		switch kind {
		case '%':
			l *= 2
		case '|':
			l = 2*l + 1
		}
		return int(l), nil
	default:
		return 0, errKind(kind)
	}
	return 0, nil
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validDouble accepts what Redis emits for RESP3 doubles: inf, -inf, nan, or
// a decimal with optional fraction and exponent. A loose character check is
// enough to reject garbage without strconv's allocations.
func validDouble(b []byte) bool {
	switch string(b) {
	case "inf", "-inf", "nan":
		return true
	}
	digit := false
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E':
		default:
			return false
		}
	}
	return digit
}

// appendLine moves the next line, "\r\n" included, to dst. It fails as soon
// as more than limit body bytes arrive without a newline.
func (r *Reader) appendLine(dst []byte, limit int) ([]byte, error) {
	start := len(dst)
	for {
		b := r.buf[r.r:r.w]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			r.r += i + 1
			return append(dst, b[:i+1]...), nil
		}
		dst = append(dst, b...)
		r.r = r.w
		if len(dst)-start > limit+2 {
			return dst, errReplyLine
		}
		if err := r.fill(); err != nil {
			return dst, err
		}
	}
}

// ReadReply reads one complete reply value of any RESP2/RESP3 type, an
// attribute together with the value it annotates, and appends its exact raw
// bytes to dst. On error dst is returned truncated to its original length.
// Nesting is tracked with an explicit stack, not recursion.
func (r *Reader) ReadReply(dst []byte) ([]byte, error) {
	start := len(dst)
	stack := r.stack[:0] // values still missing in each open aggregate
	fail := func(err error) ([]byte, error) {
		r.stack = stack
		return dst[:start], err
	}
	for {
		c, err := r.peekByte()
		if err != nil {
			if len(dst) == start {
				return dst, err // io.EOF between replies is a clean end
			}
			return fail(unexpected(err))
		}
		if !validKind(c) {
			return fail(errKind(c))
		}
		lineStart := len(dst)
		if dst, err = r.appendLine(dst, lineLimit(c)); err != nil {
			return fail(unexpected(err))
		}
		n, err := checkLine(dst[lineStart:])
		if err != nil {
			return fail(err)
		}
		switch c {
		case '$', '=', '!':
			if n >= 0 {
				if dst, err = r.appendN(dst, n+2); err != nil {
					return fail(unexpected(err))
				}
				if dst[len(dst)-2] != '\r' || dst[len(dst)-1] != '\n' {
					return fail(errBulkCRLF)
				}
			}
		case '*', '~', '%', '>', '|':
			if n > 0 {
				// Each level took at least 4 bytes of the reply: the stack
				// is bounded by what the reply's reader accepts.
				stack = append(stack, n)
				continue
			}
		}
		// A value is complete; it may complete its parents in turn.
		for {
			if len(stack) == 0 {
				r.stack = stack
				return dst, nil
			}
			top := len(stack) - 1
			if stack[top]--; stack[top] > 0 {
				break
			}
			stack = stack[:top]
		}
	}
}

// Kind is the RESP type byte of a Value.
type Kind byte

// Value is a decoded reply. Attributes are dropped: a Value is the value
// they annotate.
type Value struct {
	Kind Kind
	// Str is the text of a simple string, error, bulk string, blob error,
	// double or big number; for a verbatim string ('=') the text after its
	// "txt:"-style format prefix. nil for null.
	Str   []byte
	Int   int64   // ':' and '#' (1 for true, 0 for false)
	Elems []Value // '*', '~', '>' elements; '%' flattened key, value, key, value...
	Null  bool    // $-1, *-1, _
}

// IsError reports whether v is an error reply (simple or blob).
func (v Value) IsError() bool { return v.Kind == '-' || v.Kind == '!' }

// String returns Str as a string, or the number for ':' and '#'.
func (v Value) String() string {
	switch v.Kind {
	case ':':
		return strconv.FormatInt(v.Int, 10)
	case '#':
		return strconv.FormatBool(v.Int != 0)
	}
	return string(v.Str)
}

// ReadValue reads and decodes one reply. The Value owns its memory.
func (r *Reader) ReadValue() (Value, error) {
	raw, err := r.ReadReply(nil)
	if err != nil {
		return Value{}, err
	}
	v, _, err := Parse(raw)
	return v, err
}

// Parse decodes one value from the start of raw and returns the bytes after
// it. The Value's Str fields alias raw. Truncated input gives
// io.ErrUnexpectedEOF.
func Parse(raw []byte) (Value, []byte, error) {
	// Every value takes at least 3 bytes, so no valid input holds more than
	// len(raw)/3 elements: preallocating Elems within that budget is exact
	// for real replies and bounded for lying counts.
	p := parser{budget: len(raw) / 3}
	v, n, err := p.value(raw, 0)
	if err != nil {
		return Value{}, raw, err
	}
	return v, raw[n:], nil
}

type parser struct{ budget int }

func (p *parser) value(b []byte, depth int) (Value, int, error) {
	if len(b) == 0 {
		return Value{}, 0, io.ErrUnexpectedEOF
	}
	kind := b[0]
	if !validKind(kind) {
		return Value{}, 0, errKind(kind)
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > lineLimit(kind)+2 {
			return Value{}, 0, errReplyLine
		}
		return Value{}, 0, io.ErrUnexpectedEOF
	}
	pos := i + 1
	n, err := checkLine(b[:pos])
	if err != nil {
		return Value{}, 0, err
	}
	body := b[1 : i-1]
	v := Value{Kind: Kind(kind)}
	switch kind {
	case '+', '-', ',', '(':
		v.Str = body
	case ':':
		v.Int, _ = parseInt(body)
	case '#':
		if body[0] == 't' {
			v.Int = 1
		}
	case '_':
		v.Null = true
	case '$', '=', '!':
		if n < 0 {
			v.Null = true
			break
		}
		end := pos + n
		if end+2 > len(b) {
			return Value{}, 0, io.ErrUnexpectedEOF
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			return Value{}, 0, errBulkCRLF
		}
		v.Str = b[pos:end:end]
		if kind == '=' && len(v.Str) >= 4 && v.Str[3] == ':' {
			v.Str = v.Str[4:]
		}
		pos = end + 2
	default: // aggregates
		if n < 0 {
			v.Null = true
			break
		}
		if n > 0 && depth >= maxDepth {
			return Value{}, 0, errDepth
		}
		k := min(n, p.budget)
		p.budget -= k
		elems := make([]Value, 0, k)
		for range n {
			e, m, err := p.value(b[pos:], depth+1)
			if err != nil {
				return Value{}, 0, err
			}
			elems = append(elems, e)
			pos += m
		}
		if kind == '|' {
			return elems[len(elems)-1], pos, nil
		}
		v.Elems = elems
	}
	return v, pos, nil
}

// MapArray returns a copy of the array reply raw with each element passed
// through f (i is its position; elem its raw bytes; f returns what replaces
// it). A reply that is not a well-formed array (an error, a null array) is
// returned as it is. It rewrites EXEC's reply for the commands raftproxy
// answers differently from redis.
func MapArray(raw []byte, f func(i int, elem []byte) []byte) []byte {
	if len(raw) == 0 || raw[0] != '*' {
		return raw
	}
	i := bytes.Index(raw, []byte("\r\n"))
	if i < 0 {
		return raw
	}
	out := append([]byte(nil), raw[:i+2]...)
	rest := raw[i+2:]
	for k := 0; len(rest) > 0; k++ {
		n, err := Skip(rest)
		if err != nil {
			return raw
		}
		out = append(out, f(k, rest[:n])...)
		rest = rest[n:]
	}
	return out
}

// Skip returns the length of the one complete reply value at the start of
// raw (an attribute with the value it annotates), at any nesting depth.
// Truncated input gives io.ErrUnexpectedEOF.
func Skip(raw []byte) (int, error) {
	var stack []int // values still missing in each open aggregate
	pos := 0
	for {
		if pos >= len(raw) {
			return 0, io.ErrUnexpectedEOF
		}
		c := raw[pos]
		if !validKind(c) {
			return 0, errKind(c)
		}
		i := bytes.IndexByte(raw[pos:], '\n')
		if i < 0 {
			return 0, io.ErrUnexpectedEOF
		}
		n, err := checkLine(raw[pos : pos+i+1])
		if err != nil {
			return 0, err
		}
		pos += i + 1
		switch c {
		case '$', '=', '!':
			if n >= 0 {
				if len(raw)-pos < n+2 {
					return 0, io.ErrUnexpectedEOF
				}
				if raw[pos+n] != '\r' || raw[pos+n+1] != '\n' {
					return 0, errBulkCRLF
				}
				pos += n + 2
			}
		case '*', '~', '%', '>', '|':
			if n > 0 {
				stack = append(stack, n)
				continue
			}
		}
		for {
			if len(stack) == 0 {
				return pos, nil
			}
			top := len(stack) - 1
			if stack[top]--; stack[top] > 0 {
				break
			}
			stack = stack[:top]
		}
	}
}
