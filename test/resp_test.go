package test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// respValue is one RESP2 reply. The protocol tests need the exact bytes a
// server sent (error texts, reply order), which a client library hides.
type respValue struct {
	Kind byte // '+', '-', ':', '$', '*'
	Str  string
	Int  int64
	Arr  []respValue
	Null bool // $-1 or *-1
}

func (v respValue) IsError() bool { return v.Kind == '-' }

// String renders the reply the way it looked on the wire, for messages.
func (v respValue) String() string {
	switch v.Kind {
	case '+', '-':
		return string(v.Kind) + v.Str
	case ':':
		return ":" + strconv.FormatInt(v.Int, 10)
	case '$':
		if v.Null {
			return "$-1(nil)"
		}
		return strconv.Quote(v.Str)
	case '*':
		if v.Null {
			return "*-1(nil)"
		}
		parts := make([]string, len(v.Arr))
		for i, e := range v.Arr {
			parts[i] = e.String()
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	return fmt.Sprintf("<kind %q>", v.Kind)
}

// rawConn is a bare TCP RESP connection. Every read and write carries a
// deadline so that a server that never answers fails the test instead of
// hanging it.
type rawConn struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

func dialRaw(addr string, timeout time.Duration) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &rawConn{conn: c, r: bufio.NewReaderSize(c, 64<<10), timeout: timeout}, nil
}

func (c *rawConn) Close() error { return c.conn.Close() }

func encodeCommand(buf *bytes.Buffer, args ...string) {
	fmt.Fprintf(buf, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(buf, "$%d\r\n%s\r\n", len(a), a)
	}
}

// WriteRaw sends bytes exactly as given, malformed or not.
func (c *rawConn) WriteRaw(b []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	_, err := c.conn.Write(b)
	return err
}

func (c *rawConn) Send(args ...string) error {
	var buf bytes.Buffer
	encodeCommand(&buf, args...)
	return c.WriteRaw(buf.Bytes())
}

func (c *rawConn) Do(args ...string) (respValue, error) {
	if err := c.Send(args...); err != nil {
		return respValue{}, fmt.Errorf("send %q: %w", args, err)
	}
	v, err := c.Read()
	if err != nil {
		return respValue{}, fmt.Errorf("reply to %q: %w", args, err)
	}
	return v, nil
}

func (c *rawConn) Read() (respValue, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return respValue{}, err
	}
	return readValue(c.r)
}

// ExpectClosed reports nil if the server closes the connection (EOF or
// reset) within d without sending anything more.
func (c *rawConn) ExpectClosed(d time.Duration) error {
	if err := c.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	b, err := c.r.ReadByte()
	switch {
	case err == nil:
		rest, _ := c.r.Peek(c.r.Buffered())
		return fmt.Errorf("connection still open: got unexpected data %q", append([]byte{b}, rest...))
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	case isTimeout(err):
		return fmt.Errorf("connection still open %v later", d)
	default:
		return fmt.Errorf("waiting for close: %w", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("reply line %q not terminated by CRLF", line)
	}
	return line[:len(line)-2], nil
}

func readValue(r *bufio.Reader) (respValue, error) {
	line, err := readLine(r)
	if err != nil {
		return respValue{}, err
	}
	if line == "" {
		return respValue{}, errors.New("empty reply line")
	}
	v := respValue{Kind: line[0]}
	body := line[1:]
	switch v.Kind {
	case '+', '-':
		v.Str = body
	case ':':
		if v.Int, err = strconv.ParseInt(body, 10, 64); err != nil {
			return v, fmt.Errorf("bad integer reply %q: %w", line, err)
		}
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return v, fmt.Errorf("bad bulk length %q: %w", line, err)
		}
		if n < 0 {
			v.Null = true
			return v, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return v, fmt.Errorf("reading %d-byte bulk: %w", n, err)
		}
		if string(buf[n:]) != "\r\n" {
			return v, fmt.Errorf("bulk of %d bytes not followed by CRLF", n)
		}
		v.Str = string(buf[:n])
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return v, fmt.Errorf("bad array length %q: %w", line, err)
		}
		if n < 0 {
			v.Null = true
			return v, nil
		}
		v.Arr = make([]respValue, 0, n)
		for i := 0; i < n; i++ {
			e, err := readValue(r)
			if err != nil {
				return v, fmt.Errorf("array element %d of %d: %w", i, n, err)
			}
			v.Arr = append(v.Arr, e)
		}
	default:
		return v, fmt.Errorf("unexpected reply type in line %q", line)
	}
	return v, nil
}
