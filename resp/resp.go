// Package resp is the Redis protocol codec of the proxy: it parses client
// commands (RESP arrays and inline commands, with redis-server's exact error
// texts), relays server replies (RESP2 and RESP3) as raw bytes, decodes the
// few replies the proxy must understand, and encodes replies.
//
// Nothing here trusts a declared length: buffers grow with the bytes that
// actually arrive, so a peer announcing a huge bulk costs only what it sends.
package resp

import (
	"bytes"
	"io"
	"math"
	"slices"
)

const (
	MaxBulkLen      = 512 << 20 // Redis proto-max-bulk-len
	MaxMultibulkLen = 1<<31 - 1 // elements in one command array (INT_MAX, as redis)
	MaxInlineLen    = 64 << 10  // Redis PROTO_INLINE_MAX_SIZE
)

// growChunk bounds speculative allocation for a bulk: at most this much (or
// the size already received) beyond what has arrived.
const growChunk = 64 << 10

// ProtocolError is a client protocol violation. Error() returns the Redis text
// WITHOUT the "ERR " prefix. After a ProtocolError the stream is unusable.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return e.Msg }

func protoErr(msg string) *ProtocolError { return &ProtocolError{Msg: "Protocol error: " + msg} }

// Shared instances keep the error paths allocation-free; callers must not
// mutate them.
var (
	errMultibulkLen  = protoErr("invalid multibulk length")
	errBulkLen       = protoErr("invalid bulk length")
	errBigMbulkCount = protoErr("too big mbulk count string")
	errBigBulkCount  = protoErr("too big bulk count string")
	errBigInline     = protoErr("too big inline request")
	errUnbalanced    = protoErr("unbalanced quotes in request")
	errBulkCRLF      = protoErr("expected CRLF after bulk")
	errLineTooLong   = &ProtocolError{} // internal marker, mapped by callers
)

// Reader is a buffered RESP reader for one connection. It is not safe for
// concurrent use.
type Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int   // buf[r:w] is buffered and unconsumed
	err  error // read error held back until the buffered bytes are consumed
	// short: the last read returned less than it asked for, so the peer
	// had sent nothing more at that moment.
	short bool

	// Limits of a command (Limit): the longest bulk, and whether the
	// client has yet to authenticate.
	maxBulk int64
	unauth  bool

	offs    []int  // start,end pairs of the args being parsed (reused)
	scratch []byte // unescaped inline args (reused, bounded by MaxInlineLen)
	stack   []int  // ReadReply: values still missing per open aggregate
}

// NewReader returns a Reader reading from rd with a buffer of size bytes
// (4096 if size <= 0). The buffer grows only for lines longer than size.
func NewReader(rd io.Reader, size int) *Reader {
	if size <= 0 {
		size = 4096
	}
	size = max(size, 16)
	return &Reader{rd: rd, buf: make([]byte, size), maxBulk: MaxBulkLen}
}

// Unauthenticated limits, as redis-server 7.0 applies them to a client that
// has not authenticated yet: it cannot make the server buffer much.
const (
	UnauthMaxBulkLen      = 16 << 10
	UnauthMaxMultibulkLen = 10
)

var (
	errUnauthBulkLen      = protoErr("unauthenticated bulk length")
	errUnauthMultibulkLen = protoErr("unauthenticated multibulk length")
)

// Limit sets the longest bulk string (at most MaxBulkLen; 0 keeps
// MaxBulkLen) a command may carry. With unauth, the limits are redis's for
// a client that has not authenticated, with its error texts; Limit(n, false)
// lifts them again.
func (r *Reader) Limit(maxBulk int64, unauth bool) {
	if maxBulk <= 0 || maxBulk > MaxBulkLen {
		maxBulk = MaxBulkLen
	}
	r.maxBulk, r.unauth = maxBulk, unauth
}

// Buffered returns the number of bytes buffered and not yet consumed.
func (r *Reader) Buffered() int { return r.w - r.r }

// Drained reports whether every byte read has been consumed and the last
// read returned less than it asked for: the peer had sent nothing more then
// (it is not pipelining), though more may have arrived since.
func (r *Reader) Drained() bool { return r.r == r.w && r.short }

// read reads into p, retrying empty reads like bufio does. An error that
// comes with data is held back so the data is processed first.
func (r *Reader) read(p []byte) (int, error) {
	if r.err != nil {
		err := r.err
		r.err = nil
		return 0, err
	}
	for range 100 {
		n, err := r.rd.Read(p)
		if n < 0 || n > len(p) {
			return 0, io.ErrShortBuffer
		}
		if n > 0 {
			r.err = err
			r.short = n < len(p)
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrNoProgress
}

// fill compacts the buffer and reads more into it. The caller guarantees
// there is room (readLine grows the buffer first when it is full).
func (r *Reader) fill() error {
	if r.r > 0 {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	n, err := r.read(r.buf[r.w:])
	r.w += n
	return err
}

func (r *Reader) peekByte() (byte, error) {
	for r.r == r.w {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	return r.buf[r.r], nil
}

// readLine consumes the next line and returns it without its '\n' (a '\r'
// is left for the caller to check). The slice is valid until the next read.
// Lines longer than limit give errLineTooLong without waiting for the rest.
func (r *Reader) readLine(limit int) ([]byte, error) {
	scanned := 0
	for {
		if i := bytes.IndexByte(r.buf[r.r+scanned:r.w], '\n'); i >= 0 {
			end := r.r + scanned + i
			line := r.buf[r.r:end]
			r.r = end + 1
			return line, nil
		}
		scanned = r.w - r.r
		if scanned > limit {
			return nil, errLineTooLong
		}
		if scanned == len(r.buf) {
			// A line may legitimately need up to limit+1 bytes of buffer.
			nb := make([]byte, min(2*len(r.buf), limit+1))
			r.w = copy(nb, r.buf[r.r:r.w])
			r.r = 0
			r.buf = nb
		}
		if err := r.fill(); err != nil {
			return nil, err
		}
	}
}

// appendN moves the next n bytes of the stream to dst. dst grows with the
// data actually received, never by the declared n alone.
func (r *Reader) appendN(dst []byte, n int) ([]byte, error) {
	for n > 0 {
		if r.r == r.w {
			if n >= len(r.buf) {
				// Large payload: read straight into dst to skip one copy.
				dst = reserve(dst, n)
				k, err := r.read(dst[len(dst):min(cap(dst), len(dst)+n)])
				dst = dst[:len(dst)+k]
				n -= k
				if err != nil {
					return dst, err
				}
				continue
			}
			if err := r.fill(); err != nil {
				return dst, err
			}
		}
		k := min(n, r.w-r.r)
		if cap(dst)-len(dst) < k {
			dst = reserve(dst, n)
		}
		dst = append(dst, r.buf[r.r:r.r+k]...)
		r.r += k
		n -= k
	}
	return dst, nil
}

// reserve makes room for more of an n-byte payload, but never more than
// growChunk or what dst already holds: memory follows received bytes.
func reserve(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	return slices.Grow(b, min(n, max(len(b), growChunk)))
}

// unexpected maps io.EOF inside a command or reply to io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadCommand reads one client command, either a RESP array of bulk strings
// or an inline command. Empty inline lines and empty arrays are skipped.
// The returned args are owned by the caller: they share one freshly
// allocated backing array and stay valid across later calls.
func (r *Reader) ReadCommand() ([][]byte, error) {
	for {
		c, err := r.peekByte()
		if err != nil {
			return nil, err
		}
		var args [][]byte
		if c == '*' {
			var ok bool
			if args, ok = r.bufferedMultibulk(); ok {
				return args, nil
			}
			args, err = r.readMultibulk()
		} else {
			args, err = r.readInline()
		}
		if err != nil {
			return nil, unexpected(err)
		}
		if args != nil {
			return args, nil
		}
	}
}

// bufferedMultibulk is the fast path for a command that is entirely in the
// buffer: it sizes the single backing allocation exactly. Anything else
// (incomplete, malformed, empty) is left to readMultibulk, which owns the
// error reporting.
func (r *Reader) bufferedMultibulk() ([][]byte, bool) {
	b := r.buf[r.r:r.w]
	n, p, ok := scanHeader(b, 0, '*')
	// Each arg takes at least 6 bytes ("$0\r\n\r\n"), which also stops a
	// lying count from growing offs.
	if !ok || n < 1 || n > int64(len(b)-p)/6 || (r.unauth && n > UnauthMaxMultibulkLen) {
		return nil, false
	}
	offs := r.offs[:0]
	total := 0
	for range n {
		l, q, ok := scanHeader(b, p, '$')
		if !ok || l < 0 || l > r.maxBulk || (r.unauth && l > UnauthMaxBulkLen) {
			return nil, false
		}
		end := q + int(l)
		if end+2 > len(b) || b[end] != '\r' || b[end+1] != '\n' {
			return nil, false
		}
		offs = append(offs, q, end)
		total += int(l)
		p = end + 2
	}
	r.offs = offs
	r.r += p
	return makeArgs(b, offs, total), true
}

// scanHeader parses a "<prefix><int>\r\n" line at b[p:] without consuming.
func scanHeader(b []byte, p int, prefix byte) (int64, int, bool) {
	if p >= len(b) || b[p] != prefix {
		return 0, 0, false
	}
	i := bytes.IndexByte(b[p+1:], '\n')
	if i < 1 || b[p+i] != '\r' {
		return 0, 0, false
	}
	v, ok := parseInt(b[p+1 : p+i])
	return v, p + i + 2, ok
}

// makeArgs copies the args at src[offs[2i]:offs[2i+1]] into one owned
// allocation. Full slice expressions keep an append to one arg from
// overwriting the next.
func makeArgs(src []byte, offs []int, total int) [][]byte {
	data := make([]byte, total)
	args := make([][]byte, len(offs)/2)
	d := 0
	for i := range args {
		n := copy(data[d:], src[offs[2*i]:offs[2*i+1]])
		args[i] = data[d : d+n : d+n]
		d += n
	}
	return args
}

// readMultibulk reads a RESP array command from the stream, however it is
// fragmented. It returns nil args (and no error) for *0 and below.
func (r *Reader) readMultibulk() ([][]byte, error) {
	line, err := r.readLine(MaxInlineLen)
	if err == errLineTooLong {
		return nil, errBigMbulkCount
	} else if err != nil {
		return nil, err
	}
	// Redis takes any count up to INT_MAX, and skips an array of zero or
	// fewer elements without a reply. Nothing is allocated from the count.
	n, ok := headerInt(line)
	if !ok || n > MaxMultibulkLen {
		return nil, errMultibulkLen
	}
	if r.unauth && n > UnauthMaxMultibulkLen {
		return nil, errUnauthMultibulkLen
	}
	if n <= 0 {
		return nil, nil
	}
	offs := r.offs[:0]
	var data []byte
	for range n {
		c, err := r.peekByte()
		if err != nil {
			return nil, err
		}
		if c != '$' {
			return nil, protoErr("expected '$', got '" + string([]byte{c}) + "'")
		}
		line, err := r.readLine(MaxInlineLen)
		if err == errLineTooLong {
			return nil, errBigBulkCount
		} else if err != nil {
			return nil, err
		}
		l, ok := headerInt(line)
		if !ok || l < 0 || l > MaxBulkLen {
			return nil, errBulkLen
		}
		if l > r.maxBulk {
			return nil, errBulkLen
		}
		if r.unauth && l > UnauthMaxBulkLen {
			return nil, errUnauthBulkLen
		}
		start := len(data)
		if data, err = r.appendN(data, int(l)+2); err != nil {
			return nil, err
		}
		if data[len(data)-2] != '\r' || data[len(data)-1] != '\n' {
			return nil, errBulkCRLF
		}
		data = data[:len(data)-2]
		offs = append(offs, start, len(data))
	}
	if cap(offs) > 1<<12 {
		r.offs = nil // don't keep a huge MSET's bookkeeping forever
	} else {
		r.offs = offs
	}
	// data already is a private allocation: slice it instead of copying.
	args := make([][]byte, n)
	for i := range args {
		s, e := offs[2*i], offs[2*i+1]
		args[i] = data[s:e:e]
	}
	return args, nil
}

// headerInt parses "<type><int>\r" (a line as returned by readLine).
func headerInt(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-1] != '\r' {
		return 0, false
	}
	return parseInt(line[1 : len(line)-1])
}

// readInline reads an inline command. It returns nil args (and no error)
// for a line without arguments.
func (r *Reader) readInline() ([][]byte, error) {
	line, err := r.readLine(MaxInlineLen)
	if err == errLineTooLong {
		return nil, errBigInline
	} else if err != nil {
		return nil, err
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	// redis-server splits the line as a C string: a NUL byte ends it.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	buf, offs, ok := splitArgs(line, r.scratch[:0], r.offs[:0])
	r.scratch, r.offs = buf, offs
	if !ok {
		return nil, errUnbalanced
	}
	if len(offs) == 0 {
		return nil, nil
	}
	return makeArgs(buf, offs, len(buf)), nil
}

// splitArgs splits an inline command line exactly like Redis's
// sdssplitargs, appending unescaped arg bytes to buf and their start,end
// offsets to offs. ok is false for unbalanced quotes.
func splitArgs(line, buf []byte, offs []int) (_ []byte, _ []int, ok bool) {
	i := 0
	for {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i == len(line) {
			return buf, offs, true
		}
		start := len(buf)
		inq, insq := false, false
	token:
		for {
			switch {
			case inq:
				if i == len(line) {
					return buf, offs, false
				}
				c := line[i]
				switch {
				case c == '\\' && i+3 < len(line) && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]):
					buf = append(buf, unhex(line[i+2])<<4|unhex(line[i+3]))
					i += 4
				case c == '\\' && i+1 < len(line):
					buf = append(buf, unescape(line[i+1]))
					i += 2
				case c == '"':
					// The closing quote must be followed by a space or the end.
					if i+1 < len(line) && !isSpace(line[i+1]) {
						return buf, offs, false
					}
					i++
					break token
				default:
					buf = append(buf, c)
					i++
				}
			case insq:
				if i == len(line) {
					return buf, offs, false
				}
				c := line[i]
				switch {
				case c == '\\' && i+1 < len(line) && line[i+1] == '\'':
					buf = append(buf, '\'')
					i += 2
				case c == '\'':
					if i+1 < len(line) && !isSpace(line[i+1]) {
						return buf, offs, false
					}
					i++
					break token
				default:
					buf = append(buf, c)
					i++
				}
			default:
				// Copy the run of ordinary bytes at once: the common case.
				j := i
				for j < len(line) && !runEnds[line[j]] {
					j++
				}
				buf = append(buf, line[i:j]...)
				if j == len(line) {
					i = j
					break token
				}
				c := line[j]
				i = j + 1
				switch c {
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					break token
				}
			}
		}
		offs = append(offs, start, len(buf))
	}
}

// runEnds marks the bytes that end or quote an unquoted token (a table is
// measurably faster than comparisons in this loop).
var runEnds = [256]bool{' ': true, '\t': true, '\r': true, '\n': true, '"': true, '\'': true}

// isSpace is C's isspace, which sdssplitargs uses to skip blanks.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'f')
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return (c | 0x20) - 'a' + 10
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}

// parseInt parses a decimal integer as strictly as Redis's string2ll: an
// optional '-', no '+', no leading zeros, no "-0", no overflow.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 1 && b[0] >= '0' && b[0] <= '9' {
		return int64(b[0] - '0'), true
	}
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64 // 19 digits cannot overflow a uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int64(-v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}
