package resp

import "strconv"

// The Append* helpers never allocate when dst has enough capacity, so a
// connection can encode all its replies into one reused buffer.

// AppendCommand appends args as a RESP array of bulk strings.
func AppendCommand(dst []byte, args ...[]byte) []byte {
	dst = AppendArrayLen(dst, len(args))
	for _, a := range args {
		dst = AppendBulk(dst, a)
	}
	return dst
}

// AppendCommandStrings is AppendCommand for string arguments.
func AppendCommandStrings(dst []byte, args ...string) []byte {
	dst = AppendArrayLen(dst, len(args))
	for _, a := range args {
		dst = AppendBulkString(dst, a)
	}
	return dst
}

// AppendSimple appends a simple string reply. s must not contain \r or \n.
func AppendSimple(dst []byte, s string) []byte {
	dst = append(dst, '+')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// AppendError appends an error reply. msg carries its own prefix ("ERR ...",
// "MOVED ..."); line breaks in it would corrupt the stream, so they become
// spaces.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, '-')
	start := len(dst)
	dst = append(dst, msg...)
	for i := start; i < len(dst); i++ {
		if dst[i] == '\r' || dst[i] == '\n' {
			dst[i] = ' '
		}
	}
	return append(dst, '\r', '\n')
}

// AppendInt appends an integer reply.
func AppendInt(dst []byte, n int64) []byte {
	return appendHeader(dst, ':', n)
}

// AppendBulk appends a bulk string (never null, even for a nil b).
func AppendBulk(dst []byte, b []byte) []byte {
	dst = appendHeader(dst, '$', int64(len(b)))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// AppendBulkString appends a bulk string.
func AppendBulkString(dst []byte, s string) []byte {
	dst = appendHeader(dst, '$', int64(len(s)))
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// AppendNullBulk appends the RESP2 null bulk string $-1.
func AppendNullBulk(dst []byte) []byte {
	return append(dst, "$-1\r\n"...)
}

// AppendNull appends a null: RESP3's _ or, for RESP2 clients, the null
// bulk string $-1 Redis sends in its place.
func AppendNull(dst []byte, resp3 bool) []byte {
	if resp3 {
		return append(dst, "_\r\n"...)
	}
	return AppendNullBulk(dst)
}

// AppendNullArray appends a null array (EXEC of an aborted transaction):
// RESP3's _ or RESP2's *-1.
func AppendNullArray(dst []byte, resp3 bool) []byte {
	if resp3 {
		return append(dst, "_\r\n"...)
	}
	return append(dst, "*-1\r\n"...)
}

// AppendVerbatim appends text Redis sends as a verbatim string in RESP3
// (CLIENT LIST, INFO: "=<len>\r\ntxt:<text>\r\n") and as a bulk string in
// RESP2.
func AppendVerbatim(dst []byte, text string, resp3 bool) []byte {
	if !resp3 {
		return AppendBulkString(dst, text)
	}
	dst = appendHeader(dst, '=', int64(len(text)+4))
	dst = append(dst, "txt:"...)
	dst = append(dst, text...)
	return append(dst, '\r', '\n')
}

// AppendSetLen appends a set header for n elements: a RESP3 set, or an
// array for RESP2 clients.
func AppendSetLen(dst []byte, n int, resp3 bool) []byte {
	if resp3 {
		return appendHeader(dst, '~', int64(n))
	}
	return appendHeader(dst, '*', int64(n))
}

// AppendArrayLen appends an array header for n elements.
func AppendArrayLen(dst []byte, n int) []byte {
	return appendHeader(dst, '*', int64(n))
}

// AppendMapLen appends a map header for n key/value pairs: a RESP3 map, or
// for RESP2 clients the flat array of 2n elements Redis sends instead.
func AppendMapLen(dst []byte, n int, resp3 bool) []byte {
	if resp3 {
		return appendHeader(dst, '%', int64(n))
	}
	return appendHeader(dst, '*', 2*int64(n))
}

func appendHeader(dst []byte, kind byte, n int64) []byte {
	dst = append(dst, kind)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, '\r', '\n')
}
